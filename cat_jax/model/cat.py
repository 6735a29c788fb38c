"""The CAT assembly: encoder modules -> residual quantizer -> decoder modules.

All tensors are channel-last inside: audio (B, T, C), features (B, frames, D).
Module lists mirror the reference's `encoder.{i}` / `decoder.{i}` indices (patch
modules hold no weights but keep their slot).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from cat_jax.config import CATConfig, PatchSpec
from cat_jax.model.patching import PatchedPretransform
from cat_jax.model.quantizer import QuantizerOutput, ResidualQuantizer
from cat_jax.model.transformer import ProjectedTransformer


class ForwardOutput(NamedTuple):
  audio: jax.Array  # (B, T, C) reconstruction
  quantizer: QuantizerOutput  # quantized (B, F, D), codes (n_q, B, F), per-quantizer losses
  encoder_hidden: jax.Array  # (B, F, D) encoder output before quantization
  frame_lengths: jax.Array  # (B,)


def _build(specs, downsample: bool, key, remat: bool, scan_layers: bool):
  keys = jax.random.split(key, len(specs))
  return nnx.List([
      PatchedPretransform(s.patch_size, downsample) if isinstance(s, PatchSpec)
      else ProjectedTransformer(s, key=k, remat=remat, scan_layers=scan_layers)
      for s, k in zip(specs, keys)])


def run_modules(modules, x, lengths, *, offsets=None, caches=None, dtype=None):
  """Runs a module list. offsets[i]: (B,) first position of Transformer i (streaming), caches[i]:
  its KV cache (transformer.KVCache). Returns (x, lengths, new caches)."""
  new_caches = []
  for i, m in enumerate(modules):
    if isinstance(m, PatchedPretransform):
      x, lengths = m(x, lengths)
      new_caches.append(None)
      continue
    b, t = x.shape[:2]
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None], (b, t))
    if offsets is not None:
      positions = positions + offsets[i][:, None]
    mask = m.spec.v2 and caches is None  # v2's length masking (streaming: valid frames only)
    x, c = m(x, positions, caches=None if caches is None else caches[i], dtype=dtype,
             lengths=lengths if mask else None)
    new_caches.append(c)
  return x, lengths, new_caches


def interleave(config: CATConfig, audio: jax.Array, lengths: jax.Array):
  """v2 channel interleave: (B, T, C) -> the stream (B, C*T, 1) of L0 R0 L1 R1 ..., lengths x C.
  Identity unless the config interleaves."""
  if not config.interleaved:
    return audio, lengths
  b, t, c = audio.shape
  return audio.reshape(b, t * c, 1), lengths * c


def deinterleave(config: CATConfig, x: jax.Array, lengths: jax.Array):
  """The inverse of `interleave`: (B, C*T, 1) -> (B, T, C), lengths / C."""
  if not config.interleaved:
    return x, lengths
  b, n, _ = x.shape
  c = config.channels
  return x.reshape(b, n // c, c), lengths // c


class CATModel(nnx.Module):
  """Encoder, quantizer and decoder of CAT as one NNX module."""

  def __init__(self, config: CATConfig, *, key: jax.Array, remat: bool = False, scan_layers: bool = True):
    k1, k2, k3 = jax.random.split(key, 3)
    self.config = config
    self.encoder = _build(config.encoder, True, k1, remat, scan_layers)
    self.quantizer = ResidualQuantizer(config.quantizer, key=k2)
    self.decoder = _build(config.decoder, False, k3, remat, scan_layers)

  def encode_latents(self, audio: jax.Array, lengths: jax.Array, *, dtype=None):
    """audio: (B, T, C) with T a multiple of downsample_rate -> (hidden (B, F, D), frame lengths (B,))."""
    x, lengths = interleave(self.config, audio.astype(jnp.float32), lengths)
    x, lengths, _ = run_modules(self.encoder, x, lengths, dtype=dtype)
    return x, lengths

  def decode_latents(self, z: jax.Array, lengths: jax.Array, *, dtype=None):
    """z: (B, F, D) quantizer output -> (audio (B, F*downsample_rate, C), sample lengths (B,))."""
    x, lengths, _ = run_modules(self.decoder, z, lengths, dtype=dtype)
    return deinterleave(self.config, x, lengths)

  def encode(self, audio, lengths, n_q: int | None = None, *, dtype=None):
    """-> (codes (n_q, B, F) int32, frame lengths (B,), encoder hidden (B, F, D))."""
    h, flen = self.encode_latents(audio, lengths, dtype=dtype)
    q = self.quantizer(h, flen, n_q)
    return q.codes, flen, h

  def decode(self, codes, frame_lengths, *, dtype=None):
    """codes: (n_q, B, F) -> (audio (B, F*downsample_rate, C), sample lengths (B,))."""
    return self.decode_latents(self.quantizer.decode(codes), frame_lengths, dtype=dtype)

  def __call__(self, audio, lengths, active: jax.Array | None = None, *, dtype=None) -> ForwardOutput:
    """Training forward: encode, quantize (optionally with per-example codebook counts), decode."""
    h, flen = self.encode_latents(audio, lengths, dtype=dtype)
    q = self.quantizer(h, flen, None, active)
    y, _ = self.decode_latents(q.quantized, flen, dtype=dtype)
    return ForwardOutput(y, q, h, flen)
