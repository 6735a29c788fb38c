"""Training losses of CAT (TRAINING.md, "The authors' own recipe"): multi-scale mel L1,
multi-scale STFT distance, LSGAN, and normalised feature matching.

Audio enters as (B, T, C) with valid lengths (B,); channels are folded into the batch.
Spectral terms average only over frames whose centre lies inside the valid samples.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from cat_jax.train import spectral

# TRAINING.md defaults table (DAC 24 kHz): windows 2^5..2^11, n_mels 5..320, hop = window / 4.
MEL_WINDOWS = (32, 64, 128, 256, 512, 1024, 2048)
MEL_BINS = (5, 10, 20, 40, 80, 160, 320)


def fold_channels(audio: jax.Array, lengths: jax.Array):
  """(B, T, C), (B,) -> (B*C, T), (B*C,): each channel becomes its own signal."""
  b, t, c = audio.shape
  return audio.transpose(0, 2, 1).reshape(b * c, t), jnp.repeat(lengths, c)


def sample_mask(lengths: jax.Array, t: int) -> jax.Array:
  """(B, T) float: 1 on valid samples."""
  return (jnp.arange(t)[None, :] < lengths[:, None]).astype(jnp.float32)


def spectral_distance(x: jax.Array, y: jax.Array, lengths: jax.Array, *, n_fft: int, hop: int,
                      n_mels: int | None = None, sr: int = 24000, clamp_eps: float = 1e-5,
                      power: float = 1.0, log_weight: float = 1.0, mag_weight: float = 0.0,
                      normalized: bool = True) -> jax.Array:
  """One scale: masked mean of log_weight*|log10 clamp(S_x)^p - log10 clamp(S_y)^p| + mag_weight*|S_x - S_y|,
  S = |STFT| (or its mel projection when n_mels is set). x, y: (N, T); lengths: (N,)."""
  sx = jnp.abs(spectral.stft(x, n_fft, hop, normalized=normalized))
  sy = jnp.abs(spectral.stft(y, n_fft, hop, normalized=normalized))
  if n_mels is not None:
    fb = jnp.asarray(spectral.mel_filters(sr, n_fft, n_mels))
    sx, sy = sx @ fb, sy @ fb
  d = 0.0
  if log_weight:
    lx = power * jnp.log10(jnp.maximum(sx, clamp_eps))
    ly = power * jnp.log10(jnp.maximum(sy, clamp_eps))
    d = d + log_weight * jnp.abs(lx - ly)
  if mag_weight:
    d = d + mag_weight * jnp.abs(sx - sy)
  m = spectral.frame_mask(lengths, x.shape[-1], hop)  # (N, F)
  return jnp.sum(d * m[..., None]) / (jnp.maximum(m.sum(), 1.0) * sx.shape[-1])


def mel_loss(x: jax.Array, y: jax.Array, lengths: jax.Array, *, sr: int = 24000,
             windows: Sequence[int] = MEL_WINDOWS, n_mels: Sequence[int] = MEL_BINS,
             clamp_eps: float = 1e-5, power: float = 1.0, mag_weight: float = 0.0,
             log_weight: float = 1.0, normalized: bool = True) -> jax.Array:
  """L_rec: sum over scales of the log-mel L1 (TRAINING.md; DAC's MelSpectrogramLoss with
  pow 1, mag_weight 0). x = reference, y = estimate, both (B, T, C); lengths (B,)."""
  xf, lf = fold_channels(x, lengths)
  yf, _ = fold_channels(y, lengths)
  total = 0.0
  for w, m in zip(windows, n_mels):
    total = total + spectral_distance(xf, yf, lf, n_fft=w, hop=w // 4, n_mels=m, sr=sr, clamp_eps=clamp_eps,
                                      power=power, log_weight=log_weight, mag_weight=mag_weight,
                                      normalized=normalized)
  return total


def stft_loss(x: jax.Array, y: jax.Array, lengths: jax.Array, *, windows: Sequence[int] = (2048, 512),
              clamp_eps: float = 1e-5) -> jax.Array:
  """Multi-scale STFT distance (DAC's MultiScaleSTFTLoss: log10 power + magnitude L1, un-normalised)."""
  xf, lf = fold_channels(x, lengths)
  yf, _ = fold_channels(y, lengths)
  total = 0.0
  for w in windows:
    total = total + spectral_distance(xf, yf, lf, n_fft=w, hop=w // 4, clamp_eps=clamp_eps, power=2.0,
                                      log_weight=1.0, mag_weight=1.0, normalized=False)
  return total


def waveform_loss(x: jax.Array, y: jax.Array, lengths: jax.Array, *, lowpass_hz: float = 0.0,
                  sr: int = 24000) -> jax.Array:
  """Time-domain L1 (EnCodec's l_t): mean |x - y| over valid samples of (B, T, C) audio. Unlike the
  magnitude losses it sees phase, so the codes must carry the waveform's phase and the decoder's
  patches must join up. With `lowpass_hz` > 0 the difference is first low-passed (FFT, bins above it
  zeroed): phase is asked for only where the voice's pitch lives, the bands above are left to
  the magnitude losses."""
  m = sample_mask(lengths, x.shape[1])[..., None]
  d = (x - y) * m
  if lowpass_hz:
    t = d.shape[1]
    keep = jnp.fft.rfftfreq(t, 1.0 / sr) <= lowpass_hz  # (T//2 + 1,)
    d = jnp.fft.irfft(jnp.fft.rfft(d, axis=1) * keep[None, :, None], n=t, axis=1) * m
  return jnp.sum(jnp.abs(d)) / jnp.maximum(m.sum() * x.shape[-1], 1.0)


def lsgan_discriminator_loss(real_logits: Sequence[jax.Array], fake_logits: Sequence[jax.Array]) -> jax.Array:
  """Sum over discriminators of mean((D(x) - 1)^2) + mean(D(G(z))^2)."""
  return sum(jnp.mean(jnp.square(r.astype(jnp.float32) - 1.0)) + jnp.mean(jnp.square(f.astype(jnp.float32)))
             for r, f in zip(real_logits, fake_logits))


def lsgan_generator_loss(fake_logits: Sequence[jax.Array]) -> jax.Array:
  """Sum over discriminators of mean((D(G(z)) - 1)^2)."""
  return sum(jnp.mean(jnp.square(f.astype(jnp.float32) - 1.0)) for f in fake_logits)


def feature_matching_loss(real_feats: Sequence[Sequence[jax.Array]], fake_feats: Sequence[Sequence[jax.Array]],
                          eps: float = 1e-8) -> jax.Array:
  """L_feat: mean over discriminators and layers of mean|f_fake - f_real| / mean|f_real| (real side
  held constant)."""
  terms = []
  for rs, fs in zip(real_feats, fake_feats):
    for r, f in zip(rs, fs):
      r = jax.lax.stop_gradient(r.astype(jnp.float32))
      terms.append(jnp.mean(jnp.abs(f.astype(jnp.float32) - r)) / (jnp.mean(jnp.abs(r)) + eps))
  return sum(terms) / len(terms)
