"""`cat-jax eval`: the paper's reconstruction metrics over codebook counts for a model, beside
classic codecs when asked; prints the table and writes results.csv, results.md and a plot."""
from __future__ import annotations

import sys

from cat_jax.audio import load_audio, map_channels
from cat_jax.data.corpus import validation_clips
from cat_jax.errors import CATError, CodesError
from cat_jax.eval import baselines as bl
from cat_jax.eval import evaluate as ev
from cat_jax.loader import load_codec


def register(sub) -> None:
  p = sub.add_parser("eval", help="reconstruction metrics over codebook counts (paper's table)",
                     description=ev.__doc__)
  p.add_argument("--model", help="model directory: config.json + model.safetensors")
  p.add_argument("--checkpoint", help="a training run's WORKDIR (its newest checkpoint)")
  p.add_argument("--data", required=True, help="an audio file, a folder of audio files, or a corpus split "
                 "manifest such as runs/corpus/val_voice.jsonl (--max-clips clips spread over it, default 26)")
  p.add_argument("--num-quantizers", help="comma-separated codebook counts (default 1,2,4,8,... up to the model's)")
  p.add_argument("--out", default="eval_out", help="output folder (default: eval_out)")
  p.add_argument("--max-clips", type=int, help="evaluate at most this many files")
  p.add_argument("--baselines", help="also score classic codecs, comma-separated: "
                 + ", ".join([*bl.GROUPS, *bl.BASELINES]) + " (needs codec2 / opus-tools)")
  p.set_defaults(func=run)


def parse_counts(text: str | None) -> tuple[int, ...] | None:
  """'1,2,4' -> (1, 2, 4); None stays None (the default sweep)."""
  if text is None:
    return None
  try:
    return tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise CodesError(f"--num-quantizers must be comma-separated integers, e.g. 1,2,4,8; got {text!r}") from None


def run(args) -> int:
  nqs = parse_counts(args.num_quantizers)
  names = bl.parse_baselines(args.baselines or "")
  for name in names:
    bl.check_available(name)
  if args.max_clips is not None and args.max_clips < 1:
    raise CATError(f"--max-clips must be at least 1, got {args.max_clips}")
  split = args.data.endswith(".jsonl")  # a corpus split manifest: the fixed evaluation set drawn from it
  files = [] if split else ev.find_audio(args.data, args.max_clips)
  if args.checkpoint is not None:
    model = load_codec(args.checkpoint, kind="run")
  elif args.model is not None:
    model = load_codec(args.model)
  else:
    raise CATError("eval needs --model DIR (config.json + safetensors) or --checkpoint WORKDIR")
  cfg = model.config
  if split:
    pairs = validation_clips(args.data, cfg.sampling_rate, args.max_clips or 26)
    files, clips = [name for name, _ in pairs], [map_channels(x, cfg.channels) for _, x in pairs]
  else:
    clips = (load_audio(f, cfg.sampling_rate, cfg.channels) for f in files)
  rows = ev.evaluate(model, clips, nqs, out_dir=args.out, verbose=True, baselines=names)
  print(ev.markdown_table(rows), end="")
  print(f"{len(files)} clip(s); wrote results.csv, results.md, bitrate_quality.png to {args.out}",
        file=sys.stderr)
  return 0
