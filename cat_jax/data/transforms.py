"""Per-clip grain transforms (picklable classes) from a source item to a training example.

Each stage passes an error element ({'error': reason, 'path', 'detail'}) through untouched, so a bad
file travels to the main process in its slot (keeping worker output order exact) and is counted there.
Shapes: decoded audio is (C, T) float32 (cat_jax.audio's layout); the example is channel-last (S, C).
"""
from __future__ import annotations

import os

import grain
import numpy as np

from cat_jax import audio as audio_lib
from cat_jax.data import records, text as text_lib
from cat_jax.errors import AudioError

REASONS = ("unreadable", "corrupt", "empty", "too_short", "silent", "channels", "no_sample_rate")


def _bad(reason: str, path: str, detail: str = "") -> dict:
  return {"error": reason, "path": path, "detail": detail}


class _Stage(grain.transforms.Map):
  """A map that skips error elements."""

  def map(self, element: dict) -> dict:
    return element if "error" in element else self.apply(element)

  def apply(self, element: dict) -> dict:
    raise NotImplementedError


class _RandomStage(grain.transforms.RandomMap):
  """A random map that skips error elements; `rng` comes from grain (seed and element index)."""

  def random_map(self, element: dict, rng: np.random.Generator) -> dict:
    return element if "error" in element else self.apply(element, rng)

  def apply(self, element: dict, rng: np.random.Generator) -> dict:
    raise NotImplementedError


def _pcm_to_float(a: np.ndarray) -> np.ndarray:
  """(T,) or (T, C) PCM of any numeric dtype -> (C, T) float32 in [-1, 1]."""
  a = np.asarray(a)
  if a.ndim == 1:
    a = a[:, None]
  if a.ndim != 2:
    raise ValueError(f"audio must be (T,) or (T, C), got shape {a.shape}")
  if np.issubdtype(a.dtype, np.integer):
    scale = float(2 ** (8 * a.dtype.itemsize - 1))
    return np.ascontiguousarray(a.T, np.float32) / scale
  return np.ascontiguousarray(a.T, np.float32)


class Decode(_Stage):
  """Source item -> {'audio' (C, T) float32, 'sr', 'text', 'task', 'path'} or an error element."""

  def apply(self, item: dict) -> dict:
    path = item.get("path", "?")
    try:
      if item["kind"] == "file":
        if os.path.isfile(path) and os.path.getsize(path) == 0:
          return _bad("empty", path, "zero-byte file")
        audio, sr = audio_lib.read_audio(path)
        out = {"audio": audio, "sr": sr, "text": item["text"], "task": item["task"]}
      elif item["kind"] == "record":
        out = records.unpack(item["bytes"])
        out["path"] = out["path"] or path
      else:  # 'array' (TFDS)
        if item["sr"] is None:
          return _bad("no_sample_rate", path, "no sample-rate field and no default rate given")
        raw = item["audio"]
        if raw is None or np.size(raw) == 0:
          return _bad("empty", path, "no samples")
        out = {"audio": _pcm_to_float(raw), "sr": item["sr"], "text": item["text"], "task": item["task"]}
    except AudioError as e:
      return _bad("empty" if "empty" in str(e) else "unreadable" if "not found" in str(e) else "corrupt",
                  path, str(e))
    except Exception as e:  # anything a decoder raises on a bad file
      return _bad("corrupt", path, f"{type(e).__name__}: {e}")
    out.setdefault("path", path)
    return out


class Resample(_Stage):
  """Resamples to the model rate with soxr (cat_jax.audio.resample)."""

  def __init__(self, sample_rate: int):
    self.sample_rate = int(sample_rate)

  def apply(self, ex: dict) -> dict:
    if ex["audio"].shape[1] == 0:
      return _bad("empty", ex["path"], "no samples")
    return {**ex, "audio": audio_lib.resample(ex["audio"], ex["sr"], self.sample_rate), "sr": self.sample_rate}


class MixChannels(_Stage):
  """Downmixes to mono or repeats mono to `channels`; other layouts are errors ('channels')."""

  def __init__(self, channels: int):
    self.channels = int(channels)

  def apply(self, ex: dict) -> dict:
    try:
      return {**ex, "audio": audio_lib.map_channels(ex["audio"], self.channels, ex["path"])}
    except AudioError as e:
      return _bad("channels", ex["path"], str(e))


class CheckAudio(_Stage):
  """Rejects clips that are non-finite, shorter than `min_samples`, or silent (peak below `silence_db`)."""

  def __init__(self, min_samples: int = 1, silence_db: float = -60.0):
    self.min_samples, self.silence_db = int(min_samples), float(silence_db)

  def apply(self, ex: dict) -> dict:
    a = ex["audio"]
    if a.shape[1] == 0:
      return _bad("empty", ex["path"], "no samples")
    if not np.isfinite(a).all():
      return _bad("corrupt", ex["path"], "NaN or Inf samples")
    if a.shape[1] < self.min_samples:
      return _bad("too_short", ex["path"], f"{a.shape[1]} samples < {self.min_samples}")
    peak = float(np.abs(a).max())
    if peak <= 10 ** (self.silence_db / 20):
      return _bad("silent", ex["path"], f"peak {20 * np.log10(max(peak, 1e-12)):.1f} dBFS")
    return ex


class Normalize(_Stage):
  """Loudness normalisation: RMS to `target_db` dBFS (gain capped at `max_gain_db`), peak kept <= `peak`."""

  def __init__(self, target_db: float = -20.0, max_gain_db: float = 30.0, peak: float = 0.99):
    self.target_db, self.max_gain_db, self.peak = float(target_db), float(max_gain_db), float(peak)

  def apply(self, ex: dict) -> dict:
    a = ex["audio"]
    rms = float(np.sqrt(np.mean(np.square(a, dtype=np.float64))))
    gain = 10 ** (min(self.target_db - 20 * np.log10(max(rms, 1e-12)), self.max_gain_db) / 20)
    gain = min(gain, self.peak / max(float(np.abs(a).max()), 1e-12))
    return {**ex, "audio": (a * np.float32(gain)).astype(np.float32)}


class RandomCrop(_RandomStage):
  """A random window of `segment_samples`, channel-last (S, C); short clips are zero-padded at the end.
  Adds 'lengths' (valid samples). Redraws up to `tries` times to avoid near-silent windows (RMS below
  `min_db` dBFS, e.g. a clip's silent tail), keeping the loudest draw if none passes."""

  def __init__(self, segment_samples: int, tries: int = 4, min_db: float = -50.0):
    self.segment_samples, self.tries, self.min_db = int(segment_samples), int(tries), float(min_db)

  def apply(self, ex: dict, rng: np.random.Generator) -> dict:
    a, s = ex["audio"], self.segment_samples
    t = a.shape[1]
    start, n = 0, min(t, s)
    if t > s:
      best = -1.0
      for _ in range(max(1, self.tries)):
        off = int(rng.integers(0, t - s + 1))
        rms = float(np.sqrt(np.mean(np.square(a[:, off:off + s], dtype=np.float64))))
        if rms > best:
          start, best = off, rms
        if rms > 10 ** (self.min_db / 20):
          break
    seg = np.zeros((s, a.shape[0]), np.float32)
    seg[:n] = a[:, start:start + n].T
    return {**ex, "audio": seg, "lengths": np.int32(n)}


class RandomGain(_RandomStage):
  """Gain augmentation: a uniform gain in [min_db, max_db], scaled back if the peak would pass `peak`."""

  def __init__(self, min_db: float, max_db: float, peak: float = 0.99):
    self.min_db, self.max_db, self.peak = float(min_db), float(max_db), float(peak)

  def apply(self, ex: dict, rng: np.random.Generator) -> dict:
    a = ex["audio"] * np.float32(10 ** (rng.uniform(self.min_db, self.max_db) / 20))
    top = float(np.abs(a).max())
    if top > self.peak:
      a *= np.float32(self.peak / top)
    return {**ex, "audio": a}


class Tokenize(_Stage):
  """Text -> 'text' ids (max_text_len,) int32 and 'text_lengths' (0: no text); keeps only batch fields."""

  def __init__(self, max_text_len: int):
    self.max_text_len = int(max_text_len)

  def apply(self, ex: dict) -> dict:
    txt, task = ex.get("text") or "", ex.get("task") or ""
    if txt and task in text_lib.TASKS and self.max_text_len > 0:
      ids, n = text_lib.encode(txt, task, self.max_text_len)
    else:
      ids, n = np.zeros((self.max_text_len,), np.int32), 0
    return {"audio": ex["audio"], "lengths": np.int32(ex["lengths"]), "text": ids,
            "text_lengths": np.int32(n), "path": ex["path"]}
