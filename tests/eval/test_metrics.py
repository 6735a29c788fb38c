"""Each metric against an independent computation, identity cases and known scalings."""
import librosa
import numpy as np
import pytest

from cat_jax.audio import resample
from cat_jax.errors import AudioError, CATError
from cat_jax.eval import metrics as m


def _noisy(x, snr_db, seed=0):
  """x plus white noise at the given SNR."""
  n = np.random.default_rng(seed).standard_normal(x.size)
  n *= np.linalg.norm(x) / np.linalg.norm(n) / 10 ** (snr_db / 20)
  return (x + n).astype(np.float64)


def _np_stft_mag(x, n_fft, hop, window, pad_mode):
  """Centred STFT magnitudes (freq, frames) by framing and rfft."""
  xp = np.pad(np.asarray(x, np.float64), n_fft // 2, mode=pad_mode)
  n = 1 + (xp.size - n_fft) // hop
  frames = np.stack([xp[i * hop: i * hop + n_fft] for i in range(n)])
  return np.abs(np.fft.rfft(frames * window, axis=-1)).T


def _periodic_hann(n):
  return np.hanning(n + 1)[:-1]


def _log_lin_l1(a, b):
  la, lb = np.log10(np.clip(a, 1e-5, None) ** 2), np.log10(np.clip(b, 1e-5, None) ** 2)
  return np.abs(la - lb).mean() + np.abs(a - b).mean()


# ---- SI-SDR / SDR / SC: plain formulas ------------------------------------------

def test_si_sdr_matches_textbook_formula(speech16k):
  x = speech16k.astype(np.float64)
  y = 0.7 * _noisy(x, 10) + 0.01
  alpha = np.dot(y, x) / np.dot(x, x)
  expect = 10 * np.log10(np.sum((alpha * x) ** 2) / np.sum((y - alpha * x) ** 2))
  assert m.si_sdr(x, y, 16000) == pytest.approx(expect, abs=1e-9)
  assert m.si_sdr(x, 0.7 * _noisy(x, 10), 16000) == pytest.approx(10.0, abs=0.1)  # white noise at 10 dB SNR


def test_si_sdr_scale_invariance_and_identity(speech16k):
  x = speech16k.astype(np.float64)
  y = _noisy(x, 5)
  base = m.si_sdr(x, y, 16000)
  assert m.si_sdr(x, 3.0 * y, 16000) == pytest.approx(base, abs=1e-9)
  assert m.si_sdr(0.2 * x, y, 16000) == pytest.approx(base, abs=1e-9)
  assert m.si_sdr(x, x, 16000) > 150
  assert m.si_sdr(x, 0.5 * x, 16000) > 150  # scaling alone is no distortion
  assert m.si_sdr(x, -x, 16000) > 150  # projection onto the reference absorbs the sign


def test_sdr_plain_formula_and_known_scaling(speech16k):
  x = speech16k.astype(np.float64)
  assert m.sdr(x, 0.5 * x, 16000) == pytest.approx(20 * np.log10(2), abs=1e-9)
  assert m.sdr(x, 2.0 * x, 16000) == pytest.approx(0.0, abs=1e-9)
  y = _noisy(x, 12)
  assert m.sdr(x, y, 16000) == pytest.approx(12.0, abs=1e-6)
  assert m.sdr(x, x, 16000) > 150


def test_spectral_convergence_matches_numpy_stft(speech16k):
  x = speech16k.astype(np.float64)
  y = _noisy(x, 6)
  w = _periodic_hann(2048)
  sx, sy = _np_stft_mag(x, 2048, 512, w, "constant"), _np_stft_mag(y, 2048, 512, w, "constant")
  expect = np.linalg.norm(sx - sy) / np.linalg.norm(sx)
  assert m.spectral_convergence(x, y, 16000) == pytest.approx(expect, rel=1e-9)
  assert m.spectral_convergence(x, x, 16000) == 0.0


# ---- mel loss / STFT distance ---------------------------------------------------

def test_mel_loss_matches_numpy_stft_with_librosa_filters(speech16k):
  x = speech16k.astype(np.float64)
  y = _noisy(x, 8)
  expect = 0.0
  for n_mels, win in ((150, 2048), (80, 512)):
    fb = librosa.filters.mel(sr=16000, n_fft=win, n_mels=n_mels, fmin=0, fmax=8000)
    w = np.sqrt(_periodic_hann(win))
    expect += _log_lin_l1(fb @ _np_stft_mag(x, win, win // 4, w, "reflect"),
                          fb @ _np_stft_mag(y, win, win // 4, w, "reflect"))
  got = m.mel_loss(x, y, 16000)
  assert got == pytest.approx(expect, rel=1e-9)
  assert got > 0.5
  assert m.mel_loss(x, x, 16000) == 0.0


def test_stft_dist_matches_torch_stft(speech24k):
  torch = pytest.importorskip("torch")
  x = speech24k.astype(np.float64)
  y = _noisy(x, 8)
  expect = 0.0
  for win in (2048, 512):
    mags = [torch.stft(torch.from_numpy(s), n_fft=win, hop_length=win // 4,
                       window=torch.hann_window(win, dtype=torch.float64), center=True,
                       pad_mode="reflect", return_complex=True).abs().numpy() for s in (x, y)]
    expect += _log_lin_l1(*mags)
  got = m.stft_dist(x, y, 24000)
  assert got == pytest.approx(expect, rel=1e-9)
  assert m.stft_dist(x, x, 24000) == 0.0


def test_stft_dist_resamples_to_24k_and_mel_loss_to_16k(speech16k):
  x = speech16k
  y = _noisy(x, 10).astype(np.float32)
  x24, y24 = resample(np.stack([x, y]), 16000, 24000)
  assert m.stft_dist(x, y, 16000) == pytest.approx(m.stft_dist(x24, y24, 24000), rel=1e-9)
  assert m.mel_loss(x24, y24, 24000) == pytest.approx(
      m.mel_loss(*resample(np.stack([x24, y24]), 24000, 16000), 16000), rel=1e-9)


# ---- STOI / PESQ on real speech ---------------------------------------------------

def test_stoi_identity_and_ordering(speech16k):
  x = speech16k
  assert m.stoi(x, x, 16000) == pytest.approx(1.0, abs=1e-6)
  clean, mid, bad = (m.stoi(x, _noisy(x, snr), 16000) for snr in (20, 0, -15))
  assert 1.0 > clean > mid > bad
  assert bad < 0.6


def test_stoi_of_a_clip_too_short_to_score_is_nan(speech16k):
  """Under 30 speech frames pystoi returns 1e-5; that is no score (NaN, left out of means), not 0."""
  short = speech16k[:4800]  # 0.3 s
  assert np.isnan(m.stoi(short, short, 16000))
  assert np.isfinite(m.stoi(speech16k[:16000], speech16k[:16000], 16000))


def test_pesq_identity_noise_and_silence(speech16k):
  x = speech16k
  assert m.pesq_nb(x, x, 16000) > 4.4
  assert m.pesq_wb(x, x, 16000) > 4.5
  noise = np.random.default_rng(1).standard_normal(x.size) * 0.1
  assert m.pesq_nb(x, noise, 16000) < 1.6
  assert m.pesq_wb(x, noise, 16000) < 1.3
  assert m.pesq_wb(x, x, 16000) > m.pesq_wb(x, _noisy(x, 20), 16000) > m.pesq_wb(x, _noisy(x, 0), 16000)
  assert np.isnan(m.pesq_wb(np.zeros(16000), np.zeros(16000), 16000))  # no utterance: NaN, not a crash


# ---- lengths, inputs, compute_all, hooks -------------------------------------------

def test_trims_to_shorter_and_checks_inputs(speech16k):
  x = speech16k.astype(np.float64)
  y = _noisy(x, 10)
  longer = np.concatenate([y, np.ones(4000)])
  assert m.sdr(x, longer, 16000) == pytest.approx(m.sdr(x, y, 16000), abs=1e-12)
  assert m.mel_loss(x[:8000], y, 16000) == pytest.approx(m.mel_loss(x[:8000], y[:8000], 16000), abs=1e-12)
  with pytest.raises(AudioError, match="1-D"):
    m.sdr(np.stack([x, x]), y, 16000)
  with pytest.raises(AudioError, match="NaN"):
    m.sdr(x, np.full_like(y, np.nan), 16000)
  with pytest.raises(AudioError, match="empty"):
    m.stoi(np.zeros(0), y, 16000)


def test_compute_all_equals_the_single_metrics(speech24k):
  x = speech24k
  y = _noisy(x, 15)
  out = m.compute_all(x, y, 24000)
  assert tuple(out) == m.METRICS
  single = {"stoi": m.stoi, "pesq_nb": m.pesq_nb, "pesq_wb": m.pesq_wb, "mel_loss": m.mel_loss,
            "stft_dist": m.stft_dist, "si_sdr": m.si_sdr, "sdr": m.sdr, "sc": m.spectral_convergence,
            "f0_match": m.f0_match}
  for k, f in single.items():
    assert out[k] == pytest.approx(f(x, y, 24000), rel=1e-9), k


def test_hooks_raise_clearly_without_weights_and_work_with_them(speech16k):
  x = speech16k
  with pytest.raises(m.MetricUnavailableError, match="speaker-verification"):
    m.speaker_similarity(x, x, 16000)
  with pytest.raises(CATError, match="UTMOS"):
    m.utmos(x, 16000)
  spectrum = lambda s: np.abs(np.fft.rfft(s, 1024))  # a stand-in embedding
  assert m.speaker_similarity(x, 2.0 * x, 16000, embed=spectrum) == pytest.approx(1.0, abs=1e-9)
  a, b = spectrum(x.astype(np.float64)), spectrum(np.ones(x.size))
  expect = np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)
  assert m.speaker_similarity(x, np.ones(x.size), 16000, embed=spectrum) == pytest.approx(expect, rel=1e-6)
  x48 = resample(x[None], 16000, 48000)[0]
  assert m.utmos(x48, 48000, predictor=lambda s: s.size / 16000) == pytest.approx(x.size / 16000, abs=1e-3)
  out = m.compute_all(x, x, 16000, embed=spectrum, predictor=lambda s: 3.5)
  assert out["spk_sim"] == pytest.approx(1.0) and out["utmos"] == 3.5


def test_f0_match_tracks_pitch_not_spectrum(speech16k):
  """Identical speech matches on every voiced frame and mild noise keeps the pitch; the same speech
  a fifth higher (same words, same duration) or a fixed-pitch buzz with the same loudness contour
  (what a patch-synchronous decoder makes, at its patch rate) matches on almost none."""
  x = speech16k.astype(np.float64)
  f0 = m.f0_track(x)
  assert np.isfinite(f0).sum() > 20 and 70 < np.nanmedian(f0) < 250  # espeak's voice
  assert m.f0_match(x, x, 16000) == 1.0
  assert m.f0_match(x, _noisy(x, 20), 16000) > 0.8
  shifted = librosa.effects.pitch_shift(x.astype(np.float32), sr=16000, n_steps=7).astype(np.float64)
  assert m.f0_match(x, shifted, 16000) < 0.2
  n = np.arange(x.size)
  envelope = np.convolve(np.abs(x), np.ones(320) / 320, "same")
  buzz = envelope * np.sign(np.sin(2 * np.pi * 1.4 * np.nanmedian(f0) * n / 16000))
  assert m.f0_match(x, buzz, 16000) < 0.2
  assert np.isnan(m.f0_match(np.zeros(8000), x[:8000], 16000))  # no voice in the reference: no score
