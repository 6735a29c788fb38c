"""PatchedPretransform: fold `h` consecutive frames into channels, and back.

Channel-last equivalent of the reference: output channel `d * h + j` holds input
channel `d` at offset `j` within the group.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def patch(x: jax.Array, h: int) -> jax.Array:
  """(B, T, D) -> (B, T/h, D*h); T must be a multiple of h."""
  b, t, d = x.shape
  return x.reshape(b, t // h, h, d).transpose(0, 1, 3, 2).reshape(b, t // h, d * h)


def unpatch(x: jax.Array, h: int) -> jax.Array:
  """(B, L, D*h) -> (B, L*h, D): the exact inverse of `patch`."""
  b, l, dh = x.shape
  return x.reshape(b, l, dh // h, h).transpose(0, 1, 3, 2).reshape(b, l * h, dh // h)


class PatchedPretransform(nnx.Module):
  """Holds no weights; `downsample` selects patch (encoder) or unpatch (decoder)."""

  def __init__(self, patch_size: int, downsample: bool):
    self.patch_size = patch_size
    self.downsample = downsample

  def __call__(self, x: jax.Array, lengths: jax.Array):
    if self.downsample:
      return patch(x, self.patch_size), lengths // self.patch_size
    return unpatch(x, self.patch_size), lengths * self.patch_size
