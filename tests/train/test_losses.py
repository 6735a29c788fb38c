"""Spectral, adversarial and feature-matching losses against independent numpy/librosa values."""
import jax
import librosa
import numpy as np
import jax.numpy as jnp
import pytest

from cat_jax.train import losses, metrics, spectral

mel_loss_jit = jax.jit(losses.mel_loss)  # one compile instead of one per eager op

SR = 24000


def _signals(t=4800, seed=0):
  rng = np.random.default_rng(seed)
  n = np.arange(t) / SR
  x = 0.5 * np.sin(2 * np.pi * 440 * n) + 0.05 * rng.normal(size=t)
  y = x + 0.1 * rng.normal(size=t)
  return x.astype(np.float32), y.astype(np.float32)


@pytest.mark.parametrize("n_fft, hop, t", [(64, 16, 4800), (512, 128, 4801), (512, 100, 4803)])
def test_stft_matches_librosa(n_fft, hop, t):
  """Hops that divide n_fft frame by block slices, others by a gather: both equal librosa."""
  x, _ = _signals(t)
  got = np.asarray(spectral.stft(jnp.asarray(x)[None], n_fft, hop))[0]
  ref = librosa.stft(x, n_fft=n_fft, hop_length=hop, window="hann", center=True, pad_mode="reflect").T
  np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-3)


def test_stft_of_a_bin_centred_sine():
  """A sine at FFT bin k has a Hann-windowed peak of n_fft/4 at bin k (away from the edges)."""
  n_fft, k = 256, 16
  t = np.arange(4096)
  x = np.sin(2 * np.pi * k * t / n_fft).astype(np.float32)
  mag = np.abs(np.asarray(spectral.stft(jnp.asarray(x)[None], n_fft, 64)))[0, 4:-4]
  np.testing.assert_allclose(mag[:, k], n_fft / 4, rtol=1e-4)
  assert np.all(mag[:, k + 3:] < 1e-3 * n_fft)
  norm = np.abs(np.asarray(spectral.stft(jnp.asarray(x)[None], n_fft, 64, normalized=True)))[0, 4:-4]
  np.testing.assert_allclose(norm[:, k], n_fft / 4 / np.sqrt(n_fft), rtol=1e-4)


def _ref_mel_loss(x, y, length=None):
  total = 0.0
  for w, m in zip(losses.MEL_WINDOWS, losses.MEL_BINS):
    fb = librosa.filters.mel(sr=SR, n_fft=w, n_mels=m)
    def mel(s):
      spec = np.abs(librosa.stft(s.astype(np.float64), n_fft=w, hop_length=w // 4, window="hann", center=True, pad_mode="reflect"))
      return fb @ (spec / np.sqrt(w))  # (n_mels, frames)
    d = np.abs(np.log10(np.maximum(mel(x), 1e-5)) - np.log10(np.maximum(mel(y), 1e-5)))
    if length is not None:
      d = d[:, np.arange(d.shape[1]) * (w // 4) < length]
    total += d.mean()
  return total


@pytest.mark.filterwarnings("ignore")
def test_mel_loss_matches_librosa():
  x, y = _signals()
  got = float(mel_loss_jit(jnp.asarray(x)[None, :, None], jnp.asarray(y)[None, :, None], jnp.array([x.size])))
  # float32 FFT vs float64 reference: Slaney-normalised mels of the small windows sit near the
  # 1e-5 clamp, where the log amplifies float32 rounding (about 0.1 %); a wrong window/hop is off by far more.
  np.testing.assert_allclose(got, _ref_mel_loss(x, y), rtol=3e-3)
  same = float(mel_loss_jit(jnp.asarray(x)[None, :, None], jnp.asarray(x)[None, :, None], jnp.array([x.size])))
  assert abs(same) < 1e-6


@pytest.mark.filterwarnings("ignore")
def test_mel_loss_masks_frames_past_length():
  """Only frames whose centre lies inside the valid samples count; what lies further out is ignored."""
  x, y = _signals(t=9600, seed=1)
  n = 3000
  xp, yp = x.copy(), y.copy()
  xp[n:] = 0
  yp[n:] = 0
  got = float(mel_loss_jit(jnp.asarray(xp)[None, :, None], jnp.asarray(yp)[None, :, None], jnp.array([n])))
  np.testing.assert_allclose(got, _ref_mel_loss(xp, yp, n), rtol=3e-3)
  yg = yp + 9.0 * (np.arange(x.size) >= n + 1100)  # beyond every valid frame's window (max 2048 / 2)
  two = mel_loss_jit(jnp.asarray(np.stack([xp, xp]))[..., None], jnp.asarray(np.stack([yp, yg]))[..., None],
                        jnp.array([n, n]))
  assert float(two) == pytest.approx(got, rel=1e-5)


def test_stft_loss_matches_numpy():
  x, y = _signals()
  ref = 0.0
  for w in (2048, 512):
    sx = np.abs(librosa.stft(x, n_fft=w, hop_length=w // 4, center=True, pad_mode="reflect"))
    sy = np.abs(librosa.stft(y, n_fft=w, hop_length=w // 4, center=True, pad_mode="reflect"))
    ref += np.abs(2 * np.log10(np.maximum(sx, 1e-5)) - 2 * np.log10(np.maximum(sy, 1e-5))).mean()
    ref += np.abs(sx - sy).mean()
  got = float(losses.stft_loss(jnp.asarray(x)[None, :, None], jnp.asarray(y)[None, :, None], jnp.array([x.size])))
  np.testing.assert_allclose(got, ref, rtol=2e-4)


def test_lsgan_values():
  real = [jnp.array([1.0, 0.5]), jnp.array([[0.0]])]
  fake = [jnp.array([0.0, 1.0]), jnp.array([[2.0]])]
  # D: mean((r-1)^2) + mean(f^2): (0 + .25)/2 + .5 = .625 ; (1) + 4 = 5
  assert float(losses.lsgan_discriminator_loss(real, fake)) == pytest.approx(0.625 + 5.0)
  # G: mean((f-1)^2): (1 + 0)/2 = .5 ; 1
  assert float(losses.lsgan_generator_loss(fake)) == pytest.approx(1.5)


def test_feature_matching_values():
  real = [[jnp.array([1.0, -3.0]), jnp.array([2.0])], [jnp.array([[4.0, 4.0]])]]
  fake = [[jnp.array([2.0, -1.0]), jnp.array([2.0])], [jnp.array([[0.0, 4.0]])]]
  # layer terms: mean|f-r| / mean|r|: 1.5/2 = .75 ; 0/2 = 0 ; 2/4 = .5 -> mean .41666
  assert float(losses.feature_matching_loss(real, fake)) == pytest.approx((0.75 + 0.0 + 0.5) / 3, rel=1e-6)


def test_si_sdr_values():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(1, 2000, 1)).astype(np.float32)
  noise = rng.normal(size=(1, 2000, 1)).astype(np.float32)
  noise -= ref * (noise * ref).sum() / (ref * ref).sum()  # orthogonal to ref
  noise *= np.linalg.norm(ref) / np.linalg.norm(noise) * 0.1  # 20 dB below
  got = float(metrics.si_sdr(jnp.asarray(ref), jnp.asarray(3 * (ref + noise)), jnp.array([2000]))[0])
  assert got == pytest.approx(20.0, abs=1e-3)


def test_codebook_stats_values():
  codes = jnp.array([[[0, 0, 1, 3]], [[2, 2, 2, 2]]])  # (n_q=2, B=1, F=4), size 4
  usage, ppl = metrics.codebook_stats(codes, jnp.array([3]), 4)  # last frame padded
  np.testing.assert_allclose(np.asarray(usage), [0.5, 0.25])
  p = np.array([2 / 3, 1 / 3])
  np.testing.assert_allclose(np.asarray(ppl), [np.exp(-(p * np.log(p)).sum()), 1.0], rtol=1e-5)
  usage2, _ = metrics.codebook_stats(codes, jnp.array([4]), 4, active=jnp.array([1]))
  np.testing.assert_allclose(np.asarray(usage2), [0.75, 0.0])


def test_waveform_loss_plain_and_low_passed():
  """Plain: mean |x - y| over valid samples only. Low-passed: a difference above the cut-off costs
  (almost) nothing, one below it costs its own mean |.|, and padding past the length never counts."""
  t, n = 4000, np.arange(4000) / SR
  x = 0.5 * np.sin(2 * np.pi * 200 * n)
  low, high = 0.1 * np.sin(2 * np.pi * 150 * n), 0.1 * np.sin(2 * np.pi * 3000 * n)
  lengths = jnp.array([t, 3000])
  junk = np.where(np.arange(t) >= 3000, 5.0, 0.0)  # past the second clip's length
  xs = jnp.asarray(np.stack([x, x]))[..., None].astype(jnp.float32)
  def loss(d, **kw):
    ys = jnp.asarray(np.stack([x + d, x + d + junk]))[..., None].astype(jnp.float32)
    return float(losses.waveform_loss(xs, ys, lengths, sr=SR, **kw))
  valid = np.concatenate([np.abs(high), np.abs(high[:3000])])
  assert loss(high) == pytest.approx(valid.mean(), rel=1e-5)
  assert loss(high, lowpass_hz=1000.0) < 0.02 * loss(high)
  want = np.concatenate([np.abs(low), np.abs(low[:3000])]).mean()
  assert loss(low + high, lowpass_hz=1000.0) == pytest.approx(want, rel=0.05)
