"""`cat-jax encode | decode | reconstruct`: audio file <-> codes .npz <-> audio file, offline;
files longer than LONG_FILE_SECONDS are coded in exact streaming chunks (bounded memory), with a
progress bar on a terminal."""
from __future__ import annotations

import sys
import time

from cat_jax.audio import audio_output_path, load_audio, write_audio
from cat_jax.codes_io import codes_output_path, load_codes, model_fingerprint, save_codes
from cat_jax.loader import load_codec

LONG_FILE_SECONDS = 30.0
MODEL_HELP = "reference directory, Orbax params checkpoint or training WORKDIR"


def register(sub) -> None:
  for name, help_, func in (("encode", "audio file -> codes .npz", run_encode),
                            ("decode", "codes .npz -> audio file", run_decode),
                            ("reconstruct", "audio file -> codes -> audio file", run_reconstruct)):
    s = sub.add_parser(name, help=help_)
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--model", required=True, help=MODEL_HELP)
    s.add_argument("--num-quantizers", type=int, default=None, help="use only the first K codebooks")
    if name == "decode":
      s.add_argument("--force", action="store_true", help="decode codes made by another model (a warning, not an error)")
    s.set_defaults(func=func)


def chunk_seconds(model, seconds: float) -> float | None:
  """Chunk duration for a long file (whole frames, within the context window), else None."""
  if seconds <= LONG_FILE_SECONDS:
    return None
  cfg = model.config
  frames = max(1, int(cfg.causal_transformer_context_duration * cfg.frame_rate))
  return frames / cfg.frame_rate


def progress_bar(what: str, chunk: float | None):
  """A tqdm wrapper for the chunks of a long file (None for a short one); shown only on a terminal."""
  if chunk is None:
    return None
  from tqdm import tqdm

  def bar(steps):
    return tqdm(steps, desc=what, unit="chunk", file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=not sys.stderr.isatty(), postfix=f"{chunk:g} s each")
  return bar


def run_encode(args) -> int:
  out = codes_output_path(args.output)  # before any work; OUT without an extension gets .npz
  model = load_codec(args.model)
  cfg = model.config
  audio = load_audio(args.input, cfg.sampling_rate, cfg.channels)
  t0 = time.perf_counter()
  chunk = chunk_seconds(model, audio.shape[-1] / cfg.sampling_rate)
  enc = model.encode(audio[None], num_quantizers=args.num_quantizers, chunk_duration=chunk,
                     progress=progress_bar("encode", chunk))
  dt = time.perf_counter() - t0
  codes = enc.audio_codes[:, 0]
  save_codes(out, codes, cfg.sampling_rate, audio.shape[-1], model_fingerprint(cfg))
  secs = audio.shape[-1] / cfg.sampling_rate
  print(f"{args.input}: {secs:.2f} s -> {codes.shape[1]} frames x {codes.shape[0]} codebooks "
        f"({cfg.bits_per_second(codes.shape[0]):.0f} bit/s) in {dt:.2f} s -> {out}")
  return 0


def run_decode(args) -> int:
  audio_output_path(args.output)  # before any work
  model = load_codec(args.model)
  cfg = model.config
  codes, length = load_codes(args.input, config=cfg, force=args.force)
  t0 = time.perf_counter()
  chunk = chunk_seconds(model, codes.shape[1] / cfg.frame_rate)
  dec = model.decode(codes[:, None], num_quantizers=args.num_quantizers, chunk_duration=chunk,
                     progress=progress_bar("decode", chunk))
  audio = dec.audio[0]
  if length is not None:
    audio = audio[:, :length]
  write_audio(args.output, audio, cfg.sampling_rate)
  print(f"{args.input}: {codes.shape[1]} frames -> {audio.shape[-1] / cfg.sampling_rate:.2f} s "
        f"in {time.perf_counter() - t0:.2f} s -> {args.output}")
  return 0


def run_reconstruct(args) -> int:
  audio_output_path(args.output)  # before any work
  model = load_codec(args.model)
  cfg = model.config
  audio = load_audio(args.input, cfg.sampling_rate, cfg.channels)
  secs = audio.shape[-1] / cfg.sampling_rate
  chunk = chunk_seconds(model, secs)
  t0 = time.perf_counter()
  enc = model.encode(audio[None], num_quantizers=args.num_quantizers, chunk_duration=chunk,
                     progress=progress_bar("encode", chunk))
  t1 = time.perf_counter()
  dec = model.decode(enc.audio_codes, chunk_duration=chunk, progress=progress_bar("decode", chunk))
  t2 = time.perf_counter()
  write_audio(args.output, dec.audio[0, :, : audio.shape[-1]], cfg.sampling_rate)
  n_q = enc.audio_codes.shape[0]
  print(f"{args.input}: {secs:.2f} s, {n_q} codebooks = {cfg.bits_per_second(n_q):.0f} bit/s; "
        f"encode {t1 - t0:.2f} s, decode {t2 - t1:.2f} s -> {args.output}")
  return 0
