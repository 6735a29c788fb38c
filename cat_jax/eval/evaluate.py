"""Codebook-count sweep: encode each clip once, decode every codebook prefix, average the
paper's metrics per count, and report them as the paper's table (CSV, Markdown, PNG plot)."""
from __future__ import annotations

import csv
import functools
import math
import os
import sys
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cat_jax.audio import load_audio, map_channels, resample
from cat_jax.codec import bucket
from cat_jax.errors import AudioError, CATError, CodesError
from cat_jax.eval.metrics import METRICS, compute_all

DEFAULT_QUANTIZERS = (1, 2, 4, 8, 16, 32)
# (row key, header): the paper's columns first, then ours.
COLUMNS = (("bitrate", "bit/s"), ("codebooks", "codebooks"), ("stoi", "STOI"), ("pesq_nb", "PESQ-NB"),
           ("pesq_wb", "PESQ-WB"), ("mel_loss", "mel loss"), ("stft_dist", "STFT dist"),
           ("si_sdr", "SI-SDR"), ("sdr", "SDR"), ("sc", "SC"))
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aif", ".aiff", ".au")


def default_quantizers(n_max: int) -> tuple[int, ...]:
  """Powers of two from DEFAULT_QUANTIZERS up to n_max, plus n_max itself."""
  return tuple(sorted({n for n in DEFAULT_QUANTIZERS if n <= n_max} | {n_max}))


def _check_quantizers(nqs, n_max: int) -> tuple[int, ...]:
  nqs = tuple(nqs)
  if not nqs:
    raise CodesError("num_quantizers_list is empty")
  for n in nqs:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= n_max:
      raise CodesError(f"codebook counts must be integers in 1..{n_max} (the model's codebooks), got {n!r}")
  return tuple(sorted({int(n) for n in nqs}))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _latents(graphdef, params, codes):
  """codes (n, B, F) -> quantizer output (B, F, D); a small program, compiled per n."""
  return nnx.merge(graphdef, params).quantizer.decode(codes)


@functools.partial(jax.jit, static_argnames=("graphdef", "dtype"))
def _decode_latents(graphdef, params, z, frame_lengths, dtype=None):
  """(B, F, D) -> audio (B, F * downsample_rate, C); compiled once per length, whatever n is."""
  return nnx.merge(graphdef, params).decode_latents(z, frame_lengths, dtype)[0]


def reconstruct(model, audio: np.ndarray, num_quantizers_list: Sequence[int]) -> dict[int, np.ndarray]:
  """audio (C, T) at the model's rate -> {n: decoded (C, T)} from one encode with all codebooks.

  Residual codes are sequential, so the first n codes of that encode are exactly an n-codebook
  encode. Each prefix decodes as model.decode(codes[:n]) does (frames padded to codec.bucket), but
  the decoder stack is compiled once rather than once per n.
  """
  nqs = tuple(num_quantizers_list)
  t = audio.shape[-1]
  codes = model.encode(audio[None]).audio_codes  # (N, 1, F), N = all codebooks: one compile per length
  f = codes.shape[-1]
  padded = np.zeros((*codes.shape[:2], bucket(f)), np.int32)
  padded[..., :f] = codes
  flen = np.array([f], np.int32)
  out = {}
  for n in nqs:
    z = _latents(model.graphdef, model.params, padded[:n])
    y = _decode_latents(model.graphdef, model.params, z, flen, model.dtype)  # (1, T', C)
    out[n] = np.asarray(y)[0, :t].T
  return out


def evaluate(model, clips: Iterable[np.ndarray], num_quantizers_list: Sequence[int] | None = None,
             sr: int | None = None, out_dir: str | os.PathLike | None = None,
             verbose: bool = False) -> list[dict]:
  """Averages compute_all over clips for each codebook count; one row per count, ascending.

  model: a cat_jax.CAT. clips: arrays (T,) or (C, T) at `sr` (default: the model's rate), each
  resampled and channel-mapped to the model, encoded once, decoded per count (see reconstruct);
  metrics compare mono mixdowns of input and reconstruction, trimmed to the input's length. Rows hold COLUMNS' keys plus 'clips' (means ignore NaN, e.g. PESQ on silence).
  With out_dir, writes results.csv, results.md and bitrate_quality.png there.
  """
  cfg = model.config
  nqs = _check_quantizers(default_quantizers(cfg.num_quantizers) if num_quantizers_list is None
                          else num_quantizers_list, cfg.num_quantizers)
  sr = cfg.sampling_rate if sr is None else int(sr)
  scores: dict[int, list[dict]] = {n: [] for n in nqs}
  for i, clip in enumerate(clips):
    x = np.asarray(clip, np.float32)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2:
      raise AudioError(f"clip {i} must be (T,) or (C, T), got shape {x.shape}")
    x = map_channels(resample(x, sr, cfg.sampling_rate), cfg.channels, f"clip {i}")
    for n, y in reconstruct(model, x, nqs).items():
      scores[n].append(compute_all(x.mean(0), y.mean(0), cfg.sampling_rate))
    if verbose:
      print(f"clip {i + 1}: {x.shape[-1] / cfg.sampling_rate:.2f} s", file=sys.stderr)
  if not scores[nqs[0]]:
    raise AudioError("no clips to evaluate")
  rows = []
  for n in nqs:
    row = {"bitrate": cfg.bits_per_second(n), "codebooks": n, "clips": len(scores[n])}
    for k in METRICS:
      vals = np.array([s[k] for s in scores[n]], np.float64)
      row[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    rows.append(row)
  if out_dir is not None:
    write_reports(rows, out_dir)
  return rows


# ---- reports ---------------------------------------------------------------------

def _fmt(key: str, v) -> str:
  if key == "codebooks":
    return str(int(v))
  if key == "bitrate":
    return f"{v:g}"
  return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def markdown_table(rows: Sequence[dict]) -> str:
  """The paper's table layout: header, separator, one line per row."""
  lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(_fmt(k, r[k]) for k, _ in COLUMNS) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
  """Same columns as the Markdown table (row keys as headers), full precision."""
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([k for k, _ in COLUMNS])
    w.writerows([[r[k] for k, _ in COLUMNS] for r in rows])


def plot(rows: Sequence[dict], path: str | os.PathLike) -> None:
  """Bitrate (log x axis) against each quality metric, one panel per metric."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = (("STOI", ("stoi",)), ("PESQ", ("pesq_nb", "pesq_wb")), ("mel loss", ("mel_loss",)),
            ("STFT dist", ("stft_dist",)), ("SI-SDR / SDR (dB)", ("si_sdr", "sdr")), ("SC", ("sc",)))
  bits = [r["bitrate"] for r in rows]
  fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
  for ax, (title, keys) in zip(axes.flat, panels):
    for k in keys:
      ax.plot(bits, [r[k] for r in rows], marker="o", label=dict(COLUMNS)[k])
    ax.set_xscale("log")
    ax.set_xticks(bits, [f"{b:g}" for b in bits])
    ax.minorticks_off()
    ax.set_title(title)
    ax.set_xlabel("bit/s")
    ax.grid(True, alpha=0.3)
    if len(keys) > 1:
      ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def write_reports(rows: Sequence[dict], out_dir: str | os.PathLike) -> dict[str, str]:
  """Writes results.csv, results.md, bitrate_quality.png; returns {kind: path}."""
  out_dir = os.fspath(out_dir)
  os.makedirs(out_dir, exist_ok=True)
  paths = {k: os.path.join(out_dir, f) for k, f in
           (("csv", "results.csv"), ("md", "results.md"), ("png", "bitrate_quality.png"))}
  write_csv(rows, paths["csv"])
  with open(paths["md"], "w") as f:
    f.write(markdown_table(rows))
  plot(rows, paths["png"])
  return paths


# ---- command line ------------------------------------------------------------------

def find_audio(path: str | os.PathLike, max_clips: int | None = None) -> list[str]:
  """A single file, or the audio files under a folder (recursive, sorted), at most max_clips."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f"--data path not found: {path}")
  if os.path.isfile(path):
    files = [path]
  else:
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                   if f.lower().endswith(AUDIO_EXTENSIONS))
    if not files:
      raise AudioError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {path}")
  return files[:max_clips] if max_clips else files


def load_model(model_dir: str | None, checkpoint: str | None = None):
  """The model to evaluate: a reference/Orbax model directory, or a training run's WORKDIR."""
  if checkpoint is not None:
    from cat_jax.checkpoint import restore_codec
    return restore_codec(checkpoint)[0]
  if model_dir is None:
    raise CATError("eval needs --model DIR (config.json + safetensors) or --checkpoint WORKDIR")
  from cat_jax.cli import load_model as load
  return load(model_dir)


def _parse_counts(text: str | None) -> tuple[int, ...] | None:
  if text is None:
    return None
  try:
    return tuple(int(t) for t in text.split(",") if t.strip())
  except ValueError:
    raise CodesError(f"--num-quantizers must be comma-separated integers, e.g. 1,2,4,8; got {text!r}") from None


def run(args) -> int:
  """The `eval` subcommand: prints the table, writes the reports; 0 on success, 2 on a user error."""
  try:
    nqs = _parse_counts(args.num_quantizers)
    if args.max_clips is not None and args.max_clips < 1:
      raise CATError(f"--max-clips must be at least 1, got {args.max_clips}")
    files = find_audio(args.data, args.max_clips)
    model = load_model(args.model, getattr(args, "checkpoint", None))
    cfg = model.config
    clips = (load_audio(f, cfg.sampling_rate, cfg.channels) for f in files)
    rows = evaluate(model, clips, nqs, out_dir=args.out, verbose=True)
  except CATError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(markdown_table(rows), end="")
  print(f"{len(files)} clip(s); wrote results.csv, results.md, bitrate_quality.png to {args.out}",
        file=sys.stderr)
  return 0


def register(subparsers) -> None:
  """Adds the `eval` subcommand to an argparse subparsers object (func=run)."""
  p = subparsers.add_parser("eval", help="reconstruction metrics over codebook counts (paper's table)",
                            description=__doc__)
  p.add_argument("--model", help="model directory: config.json + model.safetensors")
  p.add_argument("--checkpoint", help="a training run's WORKDIR (its newest checkpoint)")
  p.add_argument("--data", required=True, help="an audio file or a folder of audio files")
  p.add_argument("--num-quantizers", help="comma-separated codebook counts (default 1,2,4,8,... up to the model's)")
  p.add_argument("--out", default="eval_out", help="output folder (default: eval_out)")
  p.add_argument("--max-clips", type=int, help="evaluate at most this many files")
  p.set_defaults(func=run)
