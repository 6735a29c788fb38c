"""`cat-jax stream-encode | stream-decode`: code a file K token frames at a time with the
streaming steps (the codes equal offline encoding's, the audio offline decoding's)."""
from __future__ import annotations

import numpy as np

from cat_jax import streaming
from cat_jax.audio import audio_output_path, load_audio, write_audio
from cat_jax.codes_io import codes_output_path, load_codes, model_fingerprint, save_codes
from cat_jax.loader import load_codec
from cat_jax.validation import check_codes, check_num_quantizers

MODEL_HELP = "reference directory, Orbax params checkpoint or training WORKDIR"


def register(sub) -> None:
  p = sub.add_parser("stream-encode", help="encode an audio file chunk by chunk (equals offline codes)")
  p.add_argument("input", metavar="IN.wav")
  p.add_argument("output", metavar="OUT.npz")
  p.add_argument("--model", required=True, metavar="DIR", help=MODEL_HELP)
  p.add_argument("--chunk-frames", type=int, default=1, metavar="K", help="token frames per step (default 1)")
  p.add_argument("--num-quantizers", type=int, default=None, metavar="N", help="codebooks to keep (default all)")
  p.set_defaults(func=run_encode)
  p = sub.add_parser("stream-decode", help="decode a codes .npz chunk by chunk into audio")
  p.add_argument("input", metavar="IN.npz")
  p.add_argument("output", metavar="OUT.wav")
  p.add_argument("--model", required=True, metavar="DIR", help=MODEL_HELP)
  p.add_argument("--chunk-frames", type=int, default=1, metavar="K", help="token frames per step (default 1)")
  p.add_argument("--force", action="store_true", help="decode codes made by another model (a warning, not an error)")
  p.set_defaults(func=run_decode)


def run_encode(args) -> int:
  """stream-encode: IN audio -> OUT.npz {codes (n_q, frames) int32, sample_rate, num_quantizers, length}."""
  k = streaming.check_chunk_frames(args.chunk_frames)
  out = codes_output_path(args.output)  # before any work; OUT without an extension gets .npz
  model = load_codec(args.model)
  cfg = model.config
  n_q = check_num_quantizers(args.num_quantizers, cfg.num_quantizers)
  audio = load_audio(args.input, cfg.sampling_rate, cfg.channels)  # (C, T)
  t = audio.shape[1]
  codes, _, _ = streaming.encode_frames(model, audio[None], np.array([t]), n_q, k)
  save_codes(out, codes[:, 0], cfg.sampling_rate, t, model_fingerprint(cfg))
  print(f"{out}: {codes.shape[-1]} frames x {n_q} codebooks ({t / cfg.sampling_rate:.2f} s)")
  return 0


def run_decode(args) -> int:
  """stream-decode: IN.npz -> OUT audio (trimmed to the encoded length)."""
  k = streaming.check_chunk_frames(args.chunk_frames)
  audio_output_path(args.output)  # before any work
  model = load_codec(args.model)
  cfg = model.config
  codes, length = load_codes(args.input, config=cfg, force=args.force)
  codes = check_codes(codes, cfg)[:, 0]
  length = codes.shape[1] * cfg.downsample_rate if length is None else length
  audio = streaming.decode_frames(model, codes[:, None], k)[0, :length]  # (T, C)
  write_audio(args.output, audio.T, cfg.sampling_rate)
  print(f"{args.output}: {audio.shape[0] / cfg.sampling_rate:.2f} s")
  return 0
