"""Reconstruction metrics defined as the CAT authors' evaluation code defines them.

Every metric takes 1-D signals `metric(ref, est, sr) -> float`. Alignment: none is searched
for (a codec is sample-aligned); both signals are trimmed to the shorter one, then resampled
(soxr HQ) to the metric's rate: 16 kHz for everything except the STFT distance (24 kHz).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

from cat_jax.audio import resample
from cat_jax.errors import AudioError, CATError

EVAL_SR = 16000  # STOI, PESQ, mel loss, SI-SDR, SDR, SC
STFT_SR = 24000  # STFT distance
MEL_SCALES = ((150, 2048), (80, 512))  # (n_mels, window); hop = window // 4
STFT_WINDOWS = (2048, 512)  # DAC MultiScaleSTFTLoss defaults; hop = window // 4
CLAMP = 1e-5  # floor on magnitudes before the log
EPS = 1e-20  # keeps SDR ratios finite: identical signals give about 200 dB, not inf
METRICS = ("stoi", "pesq_nb", "pesq_wb", "mel_loss", "stft_dist", "si_sdr", "sdr", "sc", "f0_match")
F0_RANGE = (60.0, 400.0)  # Hz: the pitch range searched (speech)
F0_TOLERANCE = 0.05  # relative: about a semitone


class MetricUnavailableError(CATError):
  """A metric needs something this installation lacks (e.g. model weights)."""


# ---- input handling --------------------------------------------------------------

def _signal(x, what: str) -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim != 1:
    raise AudioError(f"{what} must be a 1-D signal, got shape {x.shape}")
  if x.size == 0:
    raise AudioError(f"{what} is empty")
  if not np.isfinite(x).all():
    raise AudioError(f"{what} contains NaN or Inf samples")
  return x


def prepare(ref, est, sr: int, target_sr: int) -> tuple[np.ndarray, np.ndarray]:
  """Checks two 1-D signals, trims both to the shorter, resamples to target_sr (float64)."""
  r, e = _signal(ref, "reference"), _signal(est, "estimate")
  if not isinstance(sr, (int, np.integer)) or sr <= 0:
    raise AudioError(f"sample rate must be a positive integer, got {sr!r}")
  n = min(r.size, e.size)
  if sr == target_sr:
    return r[:n], e[:n]
  pair = resample(np.stack([r[:n], e[:n]]).astype(np.float32), int(sr), target_sr)  # (2, n')
  return pair[0].astype(np.float64), pair[1].astype(np.float64)


# ---- spectra ---------------------------------------------------------------------

def _hann(n: int) -> np.ndarray:
  """Periodic Hann window (as scipy/torch build it for STFTs)."""
  return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def stft_mag(x: np.ndarray, n_fft: int, hop: int, window, pad_mode: str = "reflect") -> np.ndarray:
  """Centred STFT magnitudes (freq, frames) via librosa; reflect padding as torch.stft does."""
  import librosa
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # librosa warns on signals shorter than n_fft
    return np.abs(librosa.stft(x, n_fft=n_fft, hop_length=hop, window=window, center=True,
                               pad_mode=pad_mode))


def _mel_filters(sr: int, n_fft: int, n_mels: int) -> np.ndarray:
  import librosa
  return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=8000.0)


def display_mel(x: np.ndarray, sr: int) -> np.ndarray:
  """Power mel spectrogram (80 bins, window 1024, hop 256) of a 1-D clip, for pictures (not a metric)."""
  import librosa
  return librosa.feature.melspectrogram(y=np.asarray(x, np.float32), sr=sr, n_fft=1024, hop_length=256, n_mels=80)


def _log_and_linear_l1(a: np.ndarray, b: np.ndarray) -> float:
  """mean|log10(clamp(a)^2) - log10(clamp(b)^2)| + mean|a - b|."""
  la = np.log10(np.maximum(a, CLAMP) ** 2)
  lb = np.log10(np.maximum(b, CLAMP) ** 2)
  return float(np.mean(np.abs(la - lb)) + np.mean(np.abs(a - b)))


# ---- core metrics on prepared signals (same rate, same length) --------------------

def _mel_loss(r: np.ndarray, e: np.ndarray) -> float:
  total = 0.0
  for n_mels, win in MEL_SCALES:
    fb = _mel_filters(EVAL_SR, win, n_mels)  # (n_mels, win // 2 + 1)
    w = np.sqrt(_hann(win))
    total += _log_and_linear_l1(fb @ stft_mag(r, win, win // 4, w), fb @ stft_mag(e, win, win // 4, w))
  return total


def _stft_dist(r: np.ndarray, e: np.ndarray) -> float:
  total = 0.0
  for win in STFT_WINDOWS:
    w = _hann(win)
    total += _log_and_linear_l1(stft_mag(r, win, win // 4, w), stft_mag(e, win, win // 4, w))
  return total


def _sc(r: np.ndarray, e: np.ndarray) -> float:
  import librosa
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sr_, se = np.abs(librosa.stft(r)), np.abs(librosa.stft(e))  # librosa defaults: 2048 / 512 / hann
  den = np.linalg.norm(sr_)
  return float(np.linalg.norm(sr_ - se) / den) if den > 0 else float("nan")


def _si_sdr(r: np.ndarray, e: np.ndarray) -> float:
  nr, ne = np.linalg.norm(r), np.linalg.norm(e)
  if nr == 0 or ne == 0:
    return float("nan")
  r, e = r / nr, e / ne
  target = np.dot(e, r) * r  # projection onto the unit-norm reference
  noise = e - target
  return float(10 * np.log10((np.sum(target ** 2) + EPS) / (np.sum(noise ** 2) + EPS)))


def _sdr(r: np.ndarray, e: np.ndarray) -> float:
  return float(10 * np.log10((np.sum(r ** 2) + EPS) / (np.sum((r - e) ** 2) + EPS)))


def f0_track(x: np.ndarray, sr: int = EVAL_SR, frame_s: float = 0.04, hop_s: float = 0.02,
             floor_db: float = -40.0, min_peak: float = 0.5) -> np.ndarray:
  """Pitch in Hz per frame of a 1-D signal (NaN where unvoiced): the lag of the highest normalised
  autocorrelation peak in F0_RANGE of each Hann-windowed frame, voiced where that peak exceeds
  `min_peak` and the frame's RMS is within `floor_db` of the loudest frame's."""
  n, hop = int(frame_s * sr), int(hop_s * sr)
  if x.size < n:
    return np.zeros((0,))
  f = np.lib.stride_tricks.sliding_window_view(x, n)[::hop] * np.hanning(n)  # (F, n)
  ac = np.fft.irfft(np.abs(np.fft.rfft(f, 2 * n, axis=1)) ** 2, axis=1)[:, :n]
  lo, hi = int(sr / F0_RANGE[1]), int(sr / F0_RANGE[0])
  lag = lo + np.argmax(ac[:, lo:hi + 1], axis=1)
  peak = ac[np.arange(len(ac)), lag] / np.maximum(ac[:, 0], EPS)
  rms = np.sqrt(np.mean(f ** 2, axis=1))
  voiced = (peak > min_peak) & (rms > rms.max() * 10 ** (floor_db / 20))
  return np.where(voiced, sr / lag, np.nan)


def _f0_match(r: np.ndarray, e: np.ndarray) -> float:
  fr, fe = f0_track(r), f0_track(e)
  voiced = np.isfinite(fr)
  if not voiced.any():
    return float("nan")
  with np.errstate(invalid="ignore"):
    return float(np.mean(np.abs(fe[voiced] / fr[voiced] - 1.0) < F0_TOLERANCE))  # unvoiced estimate: a miss


def _stoi(r: np.ndarray, e: np.ndarray) -> float:
  from pystoi import stoi as _pystoi
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    score = float(_pystoi(r, e, EVAL_SR, extended=False))
  # pystoi warns and returns 1e-5 when too few speech frames remain: no score, not a zero one (a
  # 0.3 s clip would otherwise pull a mean over clips down as if it were unintelligible)
  return float("nan") if any("Not enough" in str(w.message) for w in caught) else score


def _pesq(r: np.ndarray, e: np.ndarray, mode: str) -> float:
  from pesq import PesqError, pesq as _pesq_fn
  if not r.any() or not e.any():  # PESQ normalises by the peak: silence has no score
    return float("nan")
  try:
    return float(_pesq_fn(EVAL_SR, r.astype(np.float32), e.astype(np.float32), mode))
  except PesqError:  # e.g. no utterance detected in the reference (silence)
    return float("nan")


# ---- public metrics: metric(ref, est, sr) -> float -------------------------------

def stoi(ref, est, sr: int) -> float:
  """STOI (pystoi, not extended) at 16 kHz; 1 for identical speech. NaN where pystoi gives up (its
  1e-5) because fewer than 30 speech frames (about 0.4 s) remain after its silence removal."""
  return _stoi(*prepare(ref, est, sr, EVAL_SR))


def f0_match(ref, est, sr: int) -> float:
  """Fraction of the reference's voiced 40 ms frames (hop 20 ms, at 16 kHz) whose pitch the estimate
  reproduces within F0_TOLERANCE (`f0_track`). Not one of the authors' metrics: a decoder that
  buzzes at its patch rate scores near 0 however close its spectral envelope. NaN without voice."""
  return _f0_match(*prepare(ref, est, sr, EVAL_SR))


def pesq_nb(ref, est, sr: int) -> float:
  """Narrow-band PESQ (ITU-T P.862, `pesq` package) at 16 kHz; NaN for silence or when PESQ finds no speech."""
  return _pesq(*prepare(ref, est, sr, EVAL_SR), "nb")


def pesq_wb(ref, est, sr: int) -> float:
  """Wide-band PESQ (P.862.2) at 16 kHz; NaN for silence or when PESQ finds no speech."""
  return _pesq(*prepare(ref, est, sr, EVAL_SR), "wb")


def mel_loss(ref, est, sr: int) -> float:
  """Two-scale mel distance at 16 kHz, summed over (n_mels, window) in MEL_SCALES.

  Per scale: hop window/4, sqrt of a periodic Hann window, centred reflect-padded STFT
  magnitudes, librosa mel filters (fmin 0, fmax 8 kHz) applied to magnitudes; the term is
  mean|log10(clamp(M_ref, 1e-5)^2) - log10(clamp(M_est, 1e-5)^2)| + mean|M_ref - M_est|.
  """
  return _mel_loss(*prepare(ref, est, sr, EVAL_SR))


def stft_dist(ref, est, sr: int) -> float:
  """DAC's MultiScaleSTFTLoss (defaults) at 24 kHz.

  Sum over windows w in (2048, 512), hop w/4, periodic Hann window, centred reflect-padded
  STFT magnitudes S (n_fft = w): mean|log10(clamp(S_ref, 1e-5)^2) - log10(clamp(S_est,
  1e-5)^2)| + mean|S_ref - S_est| (log weight 1, magnitude weight 1, means over all bins).
  """
  return _stft_dist(*prepare(ref, est, sr, STFT_SR))


def spectral_convergence(ref, est, sr: int) -> float:
  """||S_ref - S_est||_F / ||S_ref||_F on librosa.stft magnitudes (defaults: n_fft 2048, hop 512) at 16 kHz."""
  return _sc(*prepare(ref, est, sr, EVAL_SR))


def si_sdr(ref, est, sr: int) -> float:
  """Scale-invariant SDR in dB at 16 kHz: both signals L2-normalised (no mean removal), the
  estimate projected onto the reference; target/residual energy ratio. NaN for silence."""
  return _si_sdr(*prepare(ref, est, sr, EVAL_SR))


def sdr(ref, est, sr: int) -> float:
  """Plain SDR in dB at 16 kHz: 10 log10(||ref||^2 / ||ref - est||^2) (no bss_eval filtering)."""
  return _sdr(*prepare(ref, est, sr, EVAL_SR))


# ---- hooks for metrics that need model weights ----------------------------------

def speaker_similarity(ref, est, sr: int, embed: Callable[[np.ndarray], np.ndarray] | None = None) -> float:
  """Cosine similarity of speaker embeddings at 16 kHz; `embed` maps a 1-D 16 kHz signal to a vector.

  The authors use a pretrained speaker-verification network whose weights cannot be fetched
  here, so without `embed` this raises MetricUnavailableError.
  """
  if embed is None:
    raise MetricUnavailableError(
        "speaker similarity needs a speaker-verification model whose weights are not available "
        "offline; pass embed=<function mapping a 1-D 16 kHz signal to an embedding vector>")
  r, e = prepare(ref, est, sr, EVAL_SR)
  a, b = np.ravel(embed(r)).astype(np.float64), np.ravel(embed(e)).astype(np.float64)
  return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + EPS))


def utmos(est, sr: int, predictor: Callable[[np.ndarray], float] | None = None) -> float:
  """UTMOS naturalness score of `est` at 16 kHz via `predictor` (1-D 16 kHz signal -> MOS).

  UTMOS weights cannot be fetched here, so without `predictor` this raises MetricUnavailableError.
  """
  if predictor is None:
    raise MetricUnavailableError(
        "UTMOS needs the UTMOS predictor's weights, which are not available offline; "
        "pass predictor=<function mapping a 1-D 16 kHz signal to a MOS score>")
  e = _signal(est, "estimate")
  return float(predictor(resample(e[None].astype(np.float32), int(sr), EVAL_SR)[0].astype(np.float64)))


# ---- everything at once ------------------------------------------------------------

def compute_all(ref, est, sr: int, embed=None, predictor=None) -> dict[str, float]:
  """All METRICS (plus 'spk_sim' / 'utmos' when their hooks are given), resampling once per rate."""
  r16, e16 = prepare(ref, est, sr, EVAL_SR)
  r24, e24 = prepare(ref, est, sr, STFT_SR)
  out = {
      "stoi": _stoi(r16, e16),
      "pesq_nb": _pesq(r16, e16, "nb"),
      "pesq_wb": _pesq(r16, e16, "wb"),
      "mel_loss": _mel_loss(r16, e16),
      "stft_dist": _stft_dist(r24, e24),
      "si_sdr": _si_sdr(r16, e16),
      "sdr": _sdr(r16, e16),
      "sc": _sc(r16, e16),
      "f0_match": _f0_match(r16, e16),
  }
  if embed is not None:
    out["spk_sim"] = speaker_similarity(ref, est, sr, embed)
  if predictor is not None:
    out["utmos"] = utmos(np.asarray(est)[: min(np.size(ref), np.size(est))], sr, predictor)
  return out
