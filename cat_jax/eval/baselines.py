"""Classic speech codecs beside the model: Codec 2 (c2enc/c2dec) and Opus (opusenc/opusdec) run
as command-line tools on a clip, decoded back to its rate, and aligned to it before scoring."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

import numpy as np

from cat_jax.audio import read_audio, resample, write_audio
from cat_jax.errors import AudioError, CATError

# name -> (family, tool setting, bit/s)
BASELINES = {
    "codec2_700C": ("codec2", "700C", 700.0),
    "codec2_1600": ("codec2", "1600", 1600.0),
    "codec2_3200": ("codec2", "3200", 3200.0),
    "opus_6": ("opus", "6", 6000.0),
    "opus_8": ("opus", "8", 8000.0),
}
# family -> (encoder, decoder, Debian package)
TOOLS = {"codec2": ("c2enc", "c2dec", "codec2"), "opus": ("opusenc", "opusdec", "opus-tools")}
GROUPS = {f: [n for n, b in BASELINES.items() if b[0] == f] for f in TOOLS}
CODEC2_SR = 8000  # Codec 2 codes 8 kHz signed 16-bit mono raw
OPUS_SR = 16000
MAX_LAG_S = 0.1  # the delay search range used before scoring


class BaselineUnavailableError(CATError):
  """A baseline's command-line tools are not installed."""


def _unknown(name: str) -> CATError:
  return CATError(f"unknown baseline {name!r}; valid: {', '.join([*GROUPS, *BASELINES])}")


def parse_baselines(spec: str | Sequence[str]) -> list[str]:
  """'codec2,opus_6' (or a list of names) -> baseline names, groups expanded, duplicates dropped."""
  parts = spec.split(",") if isinstance(spec, str) else list(spec)
  lookup = {k.lower(): v for k, v in {**GROUPS, **{n: [n] for n in BASELINES}}.items()}
  names: list[str] = []
  for p in (p.strip() for p in parts):
    if not p:
      continue
    if p.lower() not in lookup:
      raise _unknown(p)
    names += [n for n in lookup[p.lower()] if n not in names]
  return names


def bitrate(name: str) -> float:
  """The baseline's nominal bit rate in bit/s."""
  if name not in BASELINES:
    raise _unknown(name)
  return BASELINES[name][2]


def check_available(name: str) -> None:
  """Raises BaselineUnavailableError when the baseline's encoder or decoder is not on PATH."""
  if name not in BASELINES:
    raise _unknown(name)
  enc, dec, package = TOOLS[BASELINES[name][0]]
  if shutil.which(enc) is None or shutil.which(dec) is None:
    raise BaselineUnavailableError(f"baseline {name} needs {enc}/{dec} (apt-get install {package})")


def _run(name: str, cmd: list[str]) -> None:
  try:
    subprocess.run(cmd, check=True, capture_output=True)
  except subprocess.CalledProcessError as e:
    msg = (e.stderr or b"").decode(errors="replace").strip().splitlines()
    raise CATError(f"baseline {name}: {cmd[0]} failed (exit {e.returncode})"
                   + (f": {msg[-1]}" if msg else "")) from None


def run_baseline(name: str, audio: np.ndarray, sr: int) -> np.ndarray:
  """Codes a 1-D float clip with a baseline; returns the decoded clip at sr, as long as the input."""
  check_available(name)
  family, setting, _ = BASELINES[name]
  x = np.asarray(audio, np.float32)
  if x.ndim != 1 or x.size == 0:
    raise AudioError(f"baseline {name} needs a non-empty 1-D clip, got shape {x.shape}")
  enc, dec, _ = TOOLS[family]
  with tempfile.TemporaryDirectory(prefix="cat_jax_baseline_") as d:
    path = functools.partial(os.path.join, d)
    if family == "codec2":
      pcm = np.clip(resample(x[None], sr, CODEC2_SR)[0], -1.0, 1.0)
      np.round(pcm * 32767).astype("<i2").tofile(path("in.raw"))
      _run(name, [enc, setting, path("in.raw"), path("out.bit")])
      _run(name, [dec, setting, path("out.bit"), path("out.raw")])
      y, y_sr = np.fromfile(path("out.raw"), "<i2").astype(np.float32) / 32768.0, CODEC2_SR
    else:
      write_audio(path("in.wav"), resample(x[None], sr, OPUS_SR), OPUS_SR)
      _run(name, [enc, "--quiet", "--bitrate", setting, path("in.wav"), path("out.opus")])
      _run(name, [dec, "--quiet", "--rate", str(OPUS_SR), path("out.opus"), path("out.wav")])
      y, y_sr = read_audio(path("out.wav"))
      y = y.mean(0)
  y = resample(y[None], y_sr, sr)[0] if y.size else y
  out = np.zeros(x.size, np.float32)
  out[: min(x.size, y.size)] = y[: x.size]
  return out


def find_lag(ref: np.ndarray, est: np.ndarray, max_lag: int) -> int:
  """The lag in [-max_lag, max_lag] maximising sum_n ref[n] * est[n + lag] (FFT correlation)."""
  r, e = np.asarray(ref, np.float64), np.asarray(est, np.float64)
  n = 1 << int(np.ceil(np.log2(max(r.size + e.size - 1, 1))))
  corr = np.fft.irfft(np.fft.rfft(e, n) * np.conj(np.fft.rfft(r, n)), n)  # corr[k] at lag k mod n
  lags = np.arange(-min(max_lag, r.size - 1), min(max_lag, e.size - 1) + 1)
  return int(lags[np.argmax(corr[lags % n])])


def align(ref: np.ndarray, est: np.ndarray, max_lag: int) -> tuple[np.ndarray, int]:
  """Shifts est by its lag against ref (est delayed or advanced), zero-padded or trimmed to
  len(ref) -> (aligned est, lag); est[n + lag] lines up with ref[n]."""
  lag = find_lag(ref, est, max_lag)
  e = np.asarray(est)
  out = np.zeros(np.size(ref), e.dtype)
  lo, hi = max(0, -lag), min(out.size, e.size - lag)  # out[i] = est[i + lag] where it exists
  if hi > lo:
    out[lo:hi] = e[lo + lag: hi + lag]
  return out, lag
