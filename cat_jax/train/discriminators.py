"""Discriminators of the adversarial stage (TRAINING.md defaults table): a multi-period
discriminator (HiFi-GAN style, periods 2, 3, 5, 7, 11) and a multi-band multi-resolution
complex-STFT discriminator (DAC style, FFT 2048/1024/512, bands at 0/0.1/0.25/0.5/0.75/1.0 of Nyquist).

Inputs are mono signals (N, T) (channels folded into N). Each sub-discriminator returns
(logits, features): features are the activations after every hidden conv, channel-last.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cat_jax.model.layers import fan_in_normal, param
from cat_jax.train import spectral

CONV_AXES = ("kernel_h", "kernel_w", "conv_in", "conv_out")


class Conv2d(nnx.Module):
  """NHWC 2-D convolution with bias; kernel (kh, kw, in, out)."""

  def __init__(self, c_in: int, c_out: int, kernel: tuple[int, int], stride=(1, 1), padding=((0, 0), (0, 0)),
               *, key):
    self.stride, self.padding = tuple(stride), tuple(tuple(p) for p in padding)
    self.kernel = param(key, fan_in_normal(c_in * kernel[0] * kernel[1]), (*kernel, c_in, c_out), CONV_AXES)
    self.bias = nnx.Param(jnp.zeros((c_out,), jnp.float32), axes=("conv_out",))

  def __call__(self, x, dtype=None):
    return grouped_conv([self], x, dtype)

  def out_size(self, size: int, axis: int) -> int:
    """Output length along spatial `axis` (0: H, 1: W) of an input of `size`."""
    k, (lo, hi) = self.kernel.shape[axis], self.padding[axis]
    return (size + lo + hi - k) // self.stride[axis] + 1


def grouped_conv(convs: Sequence[Conv2d], x, dtype=None):
  """Convs of equal shape as one grouped conv: x (N, H, W, G * c_in), group-major channels ->
  (N, H', W', G * c_out), group g through convs[g]."""
  c0 = convs[0]
  w = jnp.concatenate([c.kernel[...] for c in convs], axis=-1)
  b = jnp.concatenate([c.bias[...] for c in convs])
  if dtype is not None:
    x, w = x.astype(dtype), w.astype(dtype)
  y = jax.lax.conv_general_dilated(x, w, c0.stride, c0.padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                   feature_group_count=len(convs), preferred_element_type=jnp.float32)
  return y + b


def _lrelu(x):
  return jax.nn.leaky_relu(x, 0.1)


class PeriodDiscriminator(nnx.Module):
  """Folds (N, T) into (N, T/p, p, 1) and applies (5, 1) convs strided along time."""

  def __init__(self, period: int, channels: Sequence[int], *, key):
    self.period = period
    keys = jax.random.split(key, len(channels) + 1)
    chans = (1, *channels)
    self.convs = nnx.List([
        Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < len(channels) - 1 else 1, 1), ((2, 2), (0, 0)), key=keys[i])
        for i in range(len(channels))])
    self.post = Conv2d(chans[-1], 1, (3, 1), (1, 1), ((1, 1), (0, 0)), key=keys[-1])

  def __call__(self, x, dtype=None):
    n, t = x.shape
    p = self.period
    if t % p:
      x = jnp.pad(x, ((0, 0), (0, p - t % p)), mode="reflect")
    h = x.reshape(n, -1, p, 1)
    feats = []
    for conv in self.convs:
      h = _lrelu(conv(h, dtype))
      feats.append(h)
    return self.post(h, dtype), feats


class BandedSTFTDiscriminator(nnx.Module):
  """Complex STFT (real, imag as 2 channels) split into frequency bands, one conv stack per band,
  bands concatenated along frequency, then a shared output conv. On accelerators the band stacks run
  as one grouped conv per layer (a fifth of the conv ops to compile): each band zero-padded to the
  widest, side by side in the channel axis, and its positions past the band's own width zeroed after
  every layer, which is the zero padding its own conv would have seen. XLA:CPU runs grouped convs
  about 20x slower (speech_cpu's discriminators, forward and backward: 29.8 s against 1.48 s), so a
  CPU program runs the bands one by one."""

  def __init__(self, n_fft: int, bands: Sequence[float], channels: int, *, key):
    self.n_fft = n_fft
    bins = n_fft // 2 + 1
    self.bands = tuple((int(a * bins), int(b * bins)) for a, b in zip(bands[:-1], bands[1:]))
    kb, kp = jax.random.split(key)

    def stack(k):
      ks = jax.random.split(k, 5)
      c = channels
      return nnx.List([
          Conv2d(2, c, (3, 9), (1, 1), ((1, 1), (4, 4)), key=ks[0]),
          Conv2d(c, c, (3, 9), (1, 2), ((1, 1), (4, 4)), key=ks[1]),
          Conv2d(c, c, (3, 9), (1, 2), ((1, 1), (4, 4)), key=ks[2]),
          Conv2d(c, c, (3, 9), (1, 2), ((1, 1), (4, 4)), key=ks[3]),
          Conv2d(c, c, (3, 3), (1, 1), ((1, 1), (1, 1)), key=ks[4])])

    self.band_convs = nnx.List([stack(k) for k in jax.random.split(kb, len(self.bands))])
    self.post = Conv2d(channels, 1, (3, 3), (1, 1), ((1, 1), (1, 1)), key=kp)

  def _band_by_band(self, z, dtype=None) -> list:
    """z (N, F, bins, 2) -> every band's features, band-major (band 0's layers, then band 1's, ...)."""
    feats = []
    for (lo, hi), convs in zip(self.bands, self.band_convs):
      h = z[:, :, lo:hi]
      for conv in convs:
        h = _lrelu(conv(h, dtype))
        feats.append(h)
    return feats

  def _grouped(self, z, dtype=None) -> list:
    """`_band_by_band` as one grouped conv per layer over the zero-padded, re-masked bands."""
    widths = [hi - lo for lo, hi in self.bands]
    g, n, f = len(widths), z.shape[0], z.shape[1]
    h = jnp.stack([jnp.pad(z[:, :, lo:hi], ((0, 0), (0, 0), (0, max(widths) - (hi - lo)), (0, 0)))
                   for lo, hi in self.bands], axis=3).reshape(n, f, max(widths), g * 2)  # (N, F, W, G * 2)
    per_band = [[] for _ in range(g)]
    layers = list(zip(*self.band_convs))
    for i, convs in enumerate(layers):
      h = _lrelu(grouped_conv(convs, h, dtype))  # (N, F, W', G * C)
      widths = [convs[0].out_size(w, 1) for w in widths]
      c = h.shape[-1] // g
      for b, w in enumerate(widths):
        per_band[b].append(h[:, :, :w, b * c:(b + 1) * c])
      if i + 1 < len(layers):
        valid = (np.arange(h.shape[2])[:, None] < np.asarray(widths)[None, :]).astype(np.float32)  # (W', G)
        h = (h.reshape(*h.shape[:3], g, c) * valid[:, :, None]).reshape(h.shape)
    return [feat for fs in per_band for feat in fs]

  def __call__(self, x, dtype=None):
    spec = spectral.stft(x, self.n_fft, self.n_fft // 4)  # (N, F, bins)
    z = jnp.stack([spec.real, spec.imag], axis=-1)  # (N, F, bins, 2)
    # chosen when the program is lowered for its platform (an AOT compile for TPU on a CPU host included)
    feats = jax.lax.platform_dependent(z, cpu=lambda z: self._band_by_band(z, dtype),
                                       default=lambda z: self._grouped(z, dtype))
    layers = len(self.band_convs[0])
    h = jnp.concatenate(feats[layers - 1::layers], axis=2)  # every band's last layer, along frequency
    return self.post(h, dtype), feats


class Discriminators(nnx.Module):
  """All sub-discriminators; __call__(x (N, T)) -> (list of logits, list of feature lists)."""

  def __init__(self, *, key, periods=(2, 3, 5, 7, 11), period_channels=(32, 128, 512, 1024, 1024),
               fft_sizes=(2048, 1024, 512), bands=(0.0, 0.1, 0.25, 0.5, 0.75, 1.0), stft_channels=32):
    k1, k2 = jax.random.split(key)
    self.mpd = nnx.List([PeriodDiscriminator(p, tuple(period_channels), key=k)
                         for p, k in zip(periods, jax.random.split(k1, len(periods)))])
    self.mrd = nnx.List([BandedSTFTDiscriminator(n, tuple(bands), stft_channels, key=k)
                         for n, k in zip(fft_sizes, jax.random.split(k2, len(fft_sizes)))])

  def __call__(self, x, dtype=None):
    logits, feats = [], []
    for d in list(self.mpd) + list(self.mrd):
      lg, fs = d(x, dtype)
      logits.append(lg)
      feats.append(fs)
    return logits, feats
