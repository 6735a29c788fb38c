"""Codebook-count sweep: encode each clip once, decode every codebook prefix, average the
paper's metrics per count, and report them as the paper's table (CSV, Markdown, PNG plot), beside
classic codecs when asked (see baselines)."""
from __future__ import annotations

import csv
import functools
import math
import os
import sys
from typing import Iterable, Sequence

import jax
import numpy as np
from flax import nnx

from cat_jax.audio import map_channels, resample
from cat_jax.codec import bucket
from cat_jax.errors import AudioError, CodesError
from cat_jax.eval import baselines as bl
from cat_jax.eval.metrics import METRICS, compute_all, display_mel
from cat_jax.validation import check_num_quantizers

DEFAULT_QUANTIZERS = (1, 2, 4, 8, 16, 32)
# (row key, header): the paper's columns first, then ours.
COLUMNS = (("bitrate", "bit/s"), ("codebooks", "codebooks"), ("stoi", "STOI"), ("pesq_nb", "PESQ-NB"),
           ("pesq_wb", "PESQ-WB"), ("mel_loss", "mel loss"), ("stft_dist", "STFT dist"),
           ("si_sdr", "SI-SDR"), ("sdr", "SDR"), ("sc", "SC"), ("f0_match", "F0 match"))
SYSTEM = "cat_jax"  # the 'system' of the model's rows; baseline rows carry their baseline's name
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aif", ".aiff", ".au")


def default_quantizers(n_max: int) -> tuple[int, ...]:
  """Powers of two from DEFAULT_QUANTIZERS up to n_max, plus n_max itself."""
  return tuple(sorted({n for n in DEFAULT_QUANTIZERS if n <= n_max} | {n_max}))


def _check_quantizers(nqs, n_max: int) -> tuple[int, ...]:
  nqs = tuple(nqs)
  if not nqs:
    raise CodesError("num_quantizers_list is empty")
  if None in nqs:  # check_num_quantizers reads None as "all"; a list must name its counts
    raise CodesError(f"num_quantizers must be an integer in 1..{n_max}, got None")
  return tuple(sorted({check_num_quantizers(n, n_max) for n in nqs}))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _latents(graphdef, params, codes):
  """codes (n, B, F) -> quantizer output (B, F, D); a small program, compiled per n."""
  return nnx.merge(graphdef, params).quantizer.decode(codes)


@functools.partial(jax.jit, static_argnames=("graphdef", "dtype"))
def _decode_latents(graphdef, params, z, frame_lengths, dtype=None):
  """(B, F, D) -> audio (B, F * downsample_rate, C); compiled once per length, whatever n is."""
  return nnx.merge(graphdef, params).decode_latents(z, frame_lengths, dtype=dtype)[0]


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
    y = np.asarray(y)[0, :t].T
    out[n] = np.pad(y, ((0, 0), (0, t - y.shape[-1])))  # v2 drops a partial last frame: silence there
  return out


def evaluate(model, clips: Iterable[np.ndarray], num_quantizers_list: Sequence[int] | None = None,
             sr: int | None = None, out_dir: str | os.PathLike | None = None,
             verbose: bool = False, baselines: Sequence[str] = ()) -> list[dict]:
  """Averages compute_all over clips for each codebook count; one row per count, ascending.

  model: a cat_jax.CAT. clips: arrays (T,) or (C, T) at `sr` (default: the model's rate), each
  resampled and channel-mapped to the model, encoded once, decoded per count (see reconstruct);
  metrics compare mono mixdowns of input and reconstruction, trimmed to the input's length. Rows
  hold COLUMNS' keys plus 'clips' (means ignore NaN, e.g. PESQ on silence) and 'system' ("cat_jax").
  baselines (names or groups, see baselines.parse_baselines): each codes the same mono clips, is
  aligned to them (lag search up to baselines.MAX_LAG_S) and scored the same way; one row each
  after the model's rows, with 'codebooks' None.
  With out_dir, writes results.csv, results.md and bitrate_quality.png there.
  """
  cfg = model.config
  nqs = _check_quantizers(default_quantizers(cfg.num_quantizers) if num_quantizers_list is None
                          else num_quantizers_list, cfg.num_quantizers)
  sr = cfg.sampling_rate if sr is None else int(sr)
  names = bl.parse_baselines(baselines)
  for name in names:
    bl.check_available(name)
  max_lag = round(bl.MAX_LAG_S * cfg.sampling_rate)
  scores: dict[int, list[dict]] = {n: [] for n in nqs}
  base_scores: dict[str, list[dict]] = {name: [] for name in names}
  for i, clip in enumerate(clips):
    x = np.asarray(clip, np.float32)
    x = x[None] if x.ndim == 1 else x
    if x.ndim != 2:
      raise AudioError(f"clip {i} must be (T,) or (C, T), got shape {x.shape}")
    x = map_channels(resample(x, sr, cfg.sampling_rate), cfg.channels, f"clip {i}")
    mono = x.mean(0)
    for n, y in reconstruct(model, x, nqs).items():
      scores[n].append(compute_all(mono, y.mean(0), cfg.sampling_rate))
    for name in names:
      y, _ = bl.align(mono, bl.run_baseline(name, mono, cfg.sampling_rate), max_lag)
      base_scores[name].append(compute_all(mono, y, cfg.sampling_rate))
    if verbose:
      print(f"clip {i + 1}: {x.shape[-1] / cfg.sampling_rate:.2f} s", file=sys.stderr)
  if not scores[nqs[0]]:
    raise AudioError("no clips to evaluate")
  rows = [_row(SYSTEM, cfg.bits_per_second(n), n, scores[n]) for n in nqs]
  rows += [_row(name, bl.bitrate(name), None, base_scores[name]) for name in names]
  if out_dir is not None:
    write_reports(rows, out_dir)
  return rows


def _row(system: str, bitrate: float, codebooks: int | None, scores: list[dict]) -> dict:
  row = {"system": system, "bitrate": bitrate, "codebooks": codebooks, "clips": len(scores)}
  for k in METRICS:
    vals = np.array([s[k] for s in scores], np.float64)
    row[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
  return row


# ---- reports ---------------------------------------------------------------------

def columns(rows: Sequence[dict]) -> tuple[tuple[str, str], ...]:
  """COLUMNS, led by a 'system' column when any row is not the model's (baselines)."""
  mixed = any(r.get("system", SYSTEM) != SYSTEM for r in rows)
  return ((("system", "system"),) if mixed else ()) + COLUMNS


def _fmt(key: str, v) -> str:
  if key == "system":
    return str(v)
  if v is None:
    return "-"
  if key == "codebooks":
    return str(int(v))
  if key == "bitrate":
    return f"{v:g}"
  return "nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def markdown_table(rows: Sequence[dict]) -> str:
  """The paper's table layout: header, separator, one line per row."""
  cols = columns(rows)
  lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
  lines += ["| " + " | ".join(_fmt(k, r.get(k, SYSTEM)) for k, _ in cols) + " |" for r in rows]
  return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict], path: str | os.PathLike) -> None:
  """Same columns as the Markdown table (row keys as headers), full precision; None is empty."""
  cols = columns(rows)
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([k for k, _ in cols])
    w.writerows([["" if r.get(k, SYSTEM) is None else r.get(k, SYSTEM) for k, _ in cols] for r in rows])


def plot(rows: Sequence[dict], path: str | os.PathLike) -> None:
  """Bitrate (log x axis) against each quality metric, one panel per metric, one line per system."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = (("STOI", ("stoi",)), ("PESQ", ("pesq_nb", "pesq_wb")), ("mel loss", ("mel_loss",)),
            ("STFT dist", ("stft_dist",)), ("SI-SDR / SDR (dB)", ("si_sdr", "sdr")), ("SC", ("sc",)))
  systems = {r.get("system", SYSTEM): [] for r in rows}
  for r in rows:
    systems[r.get("system", SYSTEM)].append(r)
  bits = sorted({r["bitrate"] for r in rows})
  fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
  for ax, (title, keys) in zip(axes.flat, panels):
    for system, rs in systems.items():
      for k in keys:
        label = " ".join(([system] if len(systems) > 1 else [])
                         + ([dict(COLUMNS)[k]] if len(keys) > 1 else []))
        ax.plot([r["bitrate"] for r in rs], [r[k] for r in rs], marker="o", label=label or None)
    ax.set_xscale("log")
    ax.set_xticks(bits, [f"{b:g}" for b in bits])
    ax.minorticks_off()
    ax.set_title(title)
    ax.set_xlabel("bit/s")
    ax.grid(True, alpha=0.3)
    if len(keys) > 1 or len(systems) > 1:
      ax.legend(fontsize="small")
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


# ---- inputs ----------------------------------------------------------------------------

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


def mel_comparison(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]], sr: int, path: str | os.PathLike) -> str:
  """A PNG of log-mel spectrograms, input beside output, one row per (title, ref, est) of 1-D clips."""
  import librosa
  from matplotlib.figure import Figure
  fig = Figure(figsize=(11, 2.6 * len(pairs)))
  for i, (title, ref, est) in enumerate(pairs):
    mels = [librosa.power_to_db(display_mel(a, sr), ref=1.0, top_db=None) for a in (ref, est)]
    top = max(m.max() for m in mels)
    for j, (m, side) in enumerate(zip(mels, ("input", "output"))):
      ax = fig.add_subplot(len(pairs), 2, 2 * i + j + 1)
      ax.imshow(m, origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma",
                extent=(0, len(ref) / sr, 0, m.shape[0]))
      ax.set_title(f"{title}: {side}", fontsize="small")
      ax.set_xlabel("s")
      ax.set_ylabel("mel bin")
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  return os.fspath(path)
