"""`cat-jax` command line: encode, decode, reconstruct, convert, export (and the subcommands
other modules register: prepare, make-corpus, stream-encode/decode, eval).

Every user error (missing file, bad audio, bad codes, corrupt checkpoint) prints one line
naming the problem and exits with status 2.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import numpy as np

from cat_jax.codes_io import load_codes, save_codes
from cat_jax.errors import CATError, CheckpointError

# Modules that add their own subcommands through `register(subparsers)`.
REGISTRARS = ("cat_jax.data.prepare", "cat_jax.streaming", "cat_jax.eval.evaluate", "cat_jax.train.plot")

# Files longer than this are coded in exact streaming chunks (bounded memory, progress bar).
LONG_FILE_SECONDS = 30.0


def load_model(path: str, dtype=None):
  """A CAT from a reference-layout directory or an Orbax params checkpoint."""
  from cat_jax.checkpoint import is_orbax_params_dir, load_params
  from cat_jax.codec import CAT
  if path is None:
    raise CheckpointError("--model DIR is required")
  if is_orbax_params_dir(path):
    config, graphdef, params = load_params(path)
    return CAT(config, graphdef, params, dtype)
  return CAT.from_pretrained(path, dtype)


def _chunk(model, seconds: float) -> float | None:
  """Chunk duration for a long file (whole frames, within the context window), else None."""
  if seconds <= LONG_FILE_SECONDS:
    return None
  cfg = model.config
  frames = max(1, int(cfg.causal_transformer_context_duration * cfg.frame_rate))
  return frames / cfg.frame_rate


def cmd_encode(args) -> int:
  from cat_jax.audio import load_audio
  model = load_model(args.model)
  cfg = model.config
  audio = load_audio(args.input, cfg.sampling_rate, cfg.channels)
  t0 = time.perf_counter()
  enc = model.encode(audio[None], num_quantizers=args.num_quantizers,
                     chunk_duration=_chunk(model, audio.shape[-1] / cfg.sampling_rate))
  dt = time.perf_counter() - t0
  codes = enc.audio_codes[:, 0]
  save_codes(args.output, codes, cfg.sampling_rate, audio.shape[-1])
  secs = audio.shape[-1] / cfg.sampling_rate
  print(f"{args.input}: {secs:.2f} s -> {codes.shape[1]} frames x {codes.shape[0]} codebooks "
        f"({cfg.bits_per_second(codes.shape[0]):.0f} bit/s) in {dt:.2f} s -> {args.output}")
  return 0


def cmd_decode(args) -> int:
  from cat_jax.audio import write_audio
  model = load_model(args.model)
  cfg = model.config
  codes, length = load_codes(args.input, cfg.sampling_rate)
  t0 = time.perf_counter()
  dec = model.decode(codes[:, None], num_quantizers=args.num_quantizers,
                     chunk_duration=_chunk(model, codes.shape[1] / cfg.frame_rate))
  audio = dec.audio[0]
  if length is not None:
    audio = audio[:, :length]
  write_audio(args.output, audio, cfg.sampling_rate)
  print(f"{args.input}: {codes.shape[1]} frames -> {audio.shape[-1] / cfg.sampling_rate:.2f} s "
        f"in {time.perf_counter() - t0:.2f} s -> {args.output}")
  return 0


def cmd_reconstruct(args) -> int:
  from cat_jax.audio import load_audio, write_audio
  model = load_model(args.model)
  cfg = model.config
  audio = load_audio(args.input, cfg.sampling_rate, cfg.channels)
  secs = audio.shape[-1] / cfg.sampling_rate
  chunk = _chunk(model, secs)
  t0 = time.perf_counter()
  enc = model.encode(audio[None], num_quantizers=args.num_quantizers, chunk_duration=chunk)
  t1 = time.perf_counter()
  dec = model.decode(enc.audio_codes, chunk_duration=chunk)
  t2 = time.perf_counter()
  write_audio(args.output, dec.audio[0, :, : audio.shape[-1]], cfg.sampling_rate)
  n_q = enc.audio_codes.shape[0]
  print(f"{args.input}: {secs:.2f} s, {n_q} codebooks = {cfg.bits_per_second(n_q):.0f} bit/s; "
        f"encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s -> {args.output}")
  return 0


def cmd_convert(args) -> int:
  """Reference directory <-> Orbax params checkpoint (direction from what SRC is)."""
  from cat_jax.checkpoint import is_orbax_params_dir, save_params
  model = load_model(args.src)
  if is_orbax_params_dir(args.src):
    files = model.save_pretrained(args.dst, max_shard_size=args.max_shard_bytes)
    print(f"Orbax params {args.src} -> reference layout {args.dst} ({', '.join(files)})")
  else:
    save_params(args.dst, model.config, model.params)
    print(f"reference layout {args.src} -> Orbax params {args.dst} ({model.num_params:,} parameters)")
  return 0


def cmd_export(args) -> int:
  """Training run -> reference layout (config.json + safetensors + model card)."""
  from cat_jax.checkpoint import export_workdir
  files = export_workdir(args.checkpoint, args.out, args.step, args.ema, args.max_shard_bytes)
  print(f"{args.checkpoint} -> {args.out} ({', '.join(files)})")
  return 0


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="cat-jax", description=__doc__.split("\n")[0])
  sub = p.add_subparsers(dest="command", required=True)

  for name, help_, func in (("encode", "audio file -> codes .npz", cmd_encode),
                            ("decode", "codes .npz -> audio file", cmd_decode),
                            ("reconstruct", "audio file -> codes -> audio file", cmd_reconstruct)):
    s = sub.add_parser(name, help=help_)
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--model", required=True, help="reference directory or Orbax params checkpoint")
    s.add_argument("--num-quantizers", type=int, default=None, help="use only the first K codebooks")
    s.set_defaults(func=func)
  s = sub.add_parser("convert", help="reference directory <-> Orbax params checkpoint")
  s.add_argument("src")
  s.add_argument("dst")
  s.add_argument("--max-shard-bytes", type=int, default=None, help="shard safetensors past this size")
  s.set_defaults(func=cmd_convert)
  s = sub.add_parser("export", help="training run (WORKDIR) -> reference layout for PyTorch")
  s.add_argument("--checkpoint", required=True, help="the run's WORKDIR")
  s.add_argument("--out", required=True, help="output directory")
  s.add_argument("--step", type=int, default=None, help="a kept step (default: the newest)")
  s.add_argument("--ema", action="store_true", help="export the EMA weights")
  s.add_argument("--max-shard-bytes", type=int, default=5 * 2**30, help="shard safetensors past this size")
  s.set_defaults(func=cmd_export)
  for name in REGISTRARS:
    importlib.import_module(name).register(sub)
  return p


def use_compile_cache() -> str | None:
  """Keeps compiled encode/decode programs across runs in $XDG_CACHE_HOME/cat_jax/xla (a large model's
  unrolled CPU program takes seconds per length bucket to compile). JAX_COMPILATION_CACHE_DIR, if
  set, wins; CAT_JAX_COMPILE_CACHE=0 turns it off."""
  import jax
  if os.environ.get("CAT_JAX_COMPILE_CACHE") == "0" or jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  path = os.path.join(base, "cat_jax", "xla")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError:
    return None  # read-only home: compile every time
  jax.config.update("jax_compilation_cache_dir", path)
  return path


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)
  use_compile_cache()
  try:
    return args.func(args)
  except CATError as e:
    print(f"cat-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
