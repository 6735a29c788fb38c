"""Training/eval metrics: per-codebook usage and perplexity (to catch codebook collapse,
TRAINING.md "lessons") and SI-SDR (TRAINING.md evaluation definitions)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def codebook_stats(codes: jax.Array, frame_lengths: jax.Array, codebook_size: int,
                   active: jax.Array | None = None):
  """codes (n_q, B, F) -> (usage (n_q,), perplexity (n_q,)) over valid frames of examples using
  that quantizer: usage = fraction of entries hit at least once, perplexity = exp(entropy)."""
  n_q, b, f = codes.shape
  w = (jnp.arange(f)[None, :] < frame_lengths[:, None]).astype(jnp.float32)  # (B, F)
  w = jnp.broadcast_to(w[None], (n_q, b, f))
  if active is not None:
    w = w * (jnp.arange(n_q)[:, None] < active[None, :]).astype(jnp.float32)[..., None]
  rows = jnp.broadcast_to(jnp.arange(n_q)[:, None, None], codes.shape)
  counts = jnp.zeros((n_q, codebook_size), jnp.float32).at[rows, codes].add(w)  # (n_q, K)
  p = counts / jnp.maximum(counts.sum(-1, keepdims=True), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
  return (counts > 0).mean(-1), jnp.exp(entropy)


def si_sdr(ref: jax.Array, est: jax.Array, lengths: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Per-example SI-SDR in dB over valid samples. ref, est: (B, T, C); lengths (B,) -> (B,).
  Both signals are L2-normalised, then est is projected onto ref."""
  m = (jnp.arange(ref.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)[..., None]
  r = (ref * m).reshape(ref.shape[0], -1).astype(jnp.float32)
  e = (est * m).reshape(est.shape[0], -1).astype(jnp.float32)
  r = r / (jnp.linalg.norm(r, axis=-1, keepdims=True) + eps)
  e = e / (jnp.linalg.norm(e, axis=-1, keepdims=True) + eps)
  target = jnp.sum(r * e, -1, keepdims=True) * r
  noise = e - target
  return 10 * jnp.log10((jnp.sum(target ** 2, -1) + eps) / (jnp.sum(noise ** 2, -1) + eps))
