"""Training/eval metrics: per-codebook usage and perplexity (to catch codebook collapse,
TRAINING.md "lessons") and SI-SDR (TRAINING.md evaluation definitions)."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def code_weights(frame_lengths: jax.Array, n_q: int, frames: int, active: jax.Array | None = None) -> jax.Array:
  """(n_q, B, F) 1.0 where quantizer i coded frame f of example b (a valid frame, i < active[b])."""
  w = (jnp.arange(frames)[None, :] < frame_lengths[:, None]).astype(jnp.float32)  # (B, F)
  w = jnp.broadcast_to(w[None], (n_q, *w.shape))
  if active is not None:
    w = w * (jnp.arange(n_q)[:, None] < active[None, :]).astype(jnp.float32)[..., None]
  return w


def code_counts(codes: jax.Array, weights: jax.Array, codebook_size: int) -> jax.Array:
  """codes, weights (n_q, B, F) -> (n_q, K) weighted number of frames coded by each row."""
  rows = jnp.broadcast_to(jnp.arange(codes.shape[0])[:, None, None], codes.shape)
  return jnp.zeros((codes.shape[0], codebook_size), jnp.float32).at[rows, codes].add(weights)


def codebook_stats(codes: jax.Array, frame_lengths: jax.Array, codebook_size: int,
                   active: jax.Array | None = None):
  """codes (n_q, B, F) -> (usage (n_q,), perplexity (n_q,)) over valid frames of examples using
  that quantizer (see usage_perplexity)."""
  n_q, _, f = codes.shape
  return usage_perplexity(code_counts(codes, code_weights(frame_lengths, n_q, f, active), codebook_size))


def usage_perplexity(counts: jax.Array):
  """(n_q, K) counts -> (usage, perplexity), each (n_q,): usage = fraction of entries hit at least
  once, perplexity = exp(entropy)."""
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
