"""`cat-jax convert | export`: move a model between its layouts (reference <-> Orbax params) and
export a training run to the reference layout with a model card."""
from __future__ import annotations

from cat_jax import hub
from cat_jax.checkpoint import save_params
from cat_jax.loader import layout, load_codec
from cat_jax.train.export import export_workdir


def register(sub) -> None:
  s = sub.add_parser("convert", help="reference directory <-> Orbax params checkpoint")
  s.add_argument("src")
  s.add_argument("dst")
  s.add_argument("--max-shard-bytes", type=int, default=None, help="shard safetensors past this size")
  s.set_defaults(func=run_convert)
  s = sub.add_parser("export", help="training run (WORKDIR) -> reference layout for PyTorch")
  s.add_argument("--checkpoint", required=True, help="the run's WORKDIR")
  s.add_argument("--out", required=True, help="output directory")
  s.add_argument("--step", type=int, default=None, help="a kept step (default: the newest)")
  s.add_argument("--ema", action="store_true", help="export the EMA weights")
  s.add_argument("--max-shard-bytes", type=int, default=5 * 2**30, help="shard safetensors past this size")
  s.add_argument("--push-to-hub", metavar="ORG/NAME", default=None,
                 help="then upload the export and its model card to this Hugging Face repository")
  s.add_argument("--private", action="store_true", help="with --push-to-hub: create the repository private")
  s.set_defaults(func=run_export)


def run_convert(args) -> int:
  """Orbax params -> reference layout; anything else (reference layout, a run) -> Orbax params."""
  kind = layout(args.src)
  model = load_codec(args.src, kind=kind)
  if kind == "orbax":
    files = model.save_pretrained(args.dst, max_shard_size=args.max_shard_bytes)
    print(f"Orbax params {args.src} -> reference layout {args.dst} ({', '.join(files)})")
  else:
    save_params(args.dst, model.config, model.params)
    source = "training run" if kind == "run" else "reference layout"
    print(f"{source} {args.src} -> Orbax params {args.dst} ({model.num_params:,} parameters)")
  return 0


def run_export(args) -> int:
  """Training run -> reference layout (config.json + safetensors + model card), then to the Hub."""
  if args.push_to_hub:
    hub.check_repo_id(args.push_to_hub)  # before the export's work
  files, step = export_workdir(args.checkpoint, args.out, args.step, args.ema, args.max_shard_bytes)
  print(f"{args.checkpoint} -> {args.out} ({', '.join(files)})")
  if args.push_to_hub:
    pushed, url = hub.push_export(args.out, args.checkpoint, args.push_to_hub, step, args.private)
    print(f"{args.out} -> https://huggingface.co/{args.push_to_hub} ({', '.join(pushed)}): {url}")
  return 0
