"""STFT and mel filterbank in JAX, shared by the spectral losses and the STFT discriminator.

Conventions follow torch.stft / librosa: periodic Hann window, centred frames with
reflect padding, one-sided spectrum. Signals are (N, T) float; spectra (N, frames, bins).
"""
from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np


def hann(n: int) -> np.ndarray:
  """Periodic Hann window (torch.hann_window, scipy 'hann' with fftbins=True)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def num_frames(t: int, hop: int) -> int:
  """Frames of a centred STFT of `t` samples."""
  return 1 + t // hop


def stft(x: jax.Array, n_fft: int, hop: int, window: np.ndarray | None = None,
         normalized: bool = False) -> jax.Array:
  """Complex STFT. x: (N, T) -> (N, 1 + T // hop, n_fft // 2 + 1) complex64.

  Centred with reflect padding of n_fft // 2 on both sides (needs T > n_fft // 2);
  `normalized` scales by n_fft ** -0.5 like torch.stft(normalized=True).
  """
  window = hann(n_fft) if window is None else window
  pad = n_fft // 2
  xp = jnp.pad(x.astype(jnp.float32), ((0, 0), (pad, pad)), mode="reflect")
  frames = _frames(xp, num_frames(x.shape[-1], hop), n_fft, hop) * jnp.asarray(window)
  spec = jnp.fft.rfft(frames, axis=-1)
  return spec * (n_fft ** -0.5) if normalized else spec


def _frames(xp: jax.Array, f: int, n_fft: int, hop: int) -> jax.Array:
  """(N, L) -> (N, f, n_fft), frame j = xp[:, j*hop : j*hop + n_fft]. When hop divides n_fft, as
  (k = n_fft // hop) shifted slices of hop-sized blocks: no gather, so the gradient is pads and
  adds rather than a scatter (slow on CPU and TPU)."""
  k, rem = divmod(n_fft, hop)
  if rem:
    idx = np.arange(f)[:, None] * hop + np.arange(n_fft)[None, :]  # (F, n_fft) static gather
    return xp[:, idx]
  blocks = f + k - 1  # the last frame ends at (f - 1) * hop + n_fft = blocks * hop <= L
  xb = xp[:, :blocks * hop].reshape(xp.shape[0], blocks, hop)  # (N, blocks, hop)
  return jnp.concatenate([xb[:, i:i + f] for i in range(k)], axis=-1)


@functools.lru_cache(maxsize=None)
def mel_filters(sr: int, n_fft: int, n_mels: int, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
  """librosa.filters.mel (Slaney), transposed to (bins, n_mels) float32 numpy constant."""
  import librosa
  with warnings.catch_warnings():  # tiny windows give empty filters (DAC's 32-sample scale does too)
    warnings.simplefilter("ignore")
    fb = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
  return np.ascontiguousarray(fb.T.astype(np.float32))


def frame_mask(lengths: jax.Array, t: int, hop: int) -> jax.Array:
  """(N, frames) float: 1 where the frame's centre lies inside the valid samples."""
  centres = jnp.arange(num_frames(t, hop)) * hop
  return (centres[None, :] < lengths[:, None]).astype(jnp.float32)
