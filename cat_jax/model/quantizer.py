"""Residual quantizers of CAT: rlfq (cosine lookup) and rvq (squared distance).

Per-quantizer parameters are stacked on a leading `quantizers` axis and the residual
loop is a `jax.lax.scan`. Weight-normalised 1x1 convolutions keep `g` and `v` as the
reference stores them, so checkpoint conversion is lossless.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from cat_jax.config import QuantizerSpec
from cat_jax.model.layers import fan_in_uniform, normal, param


class WNConv1x1(nnx.Module):
  """Weight-normalised 1x1 conv: weight = g * v / ||v|| (norm per output channel), plus bias.

  g: (out,), v: (in, out) (the reference's (out, 1, 1) and (out, in, 1)), bias: (out,).
  """

  def __init__(self, d_in: int, d_out: int, axes: tuple[str, str], *, key):
    self.v = param(key, fan_in_uniform(d_in), (d_in, d_out), axes)
    self.g = nnx.Param(jnp.linalg.norm(self.v[...], axis=0), axes=(axes[1],))
    self.bias = nnx.Param(jnp.zeros((d_out,), jnp.float32), axes=(axes[1],))

  def weight(self) -> jax.Array:
    v = self.v[...]
    return v * (self.g[...] / jnp.sqrt(jnp.sum(v * v, axis=0)))

  def __call__(self, x):  # x: (..., in) -> (..., out)
    return x @ self.weight() + self.bias[...]


def _normalize(x, axis=-1):
  """torch.nn.functional.normalize: x / max(||x||, 1e-12)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


class CodebookQuantizer(nnx.Module):
  """One quantizer: in_proj (rvq_dim -> codebook_dim), codebook lookup, out_proj back."""

  def __init__(self, spec: QuantizerSpec, *, key):
    k1, k2, k3 = jax.random.split(key, 3)
    self.kind = spec.kind
    self.projected = spec.rvq_dim != spec.codebook_dim
    if self.projected:
      self.in_proj = WNConv1x1(spec.rvq_dim, spec.codebook_dim, ("rvq", "code"), key=k1)
      self.out_proj = WNConv1x1(spec.codebook_dim, spec.rvq_dim, ("code", "rvq"), key=k2)
      # out_proj starts as the pseudo-inverse of in_proj, so a quantizer's output approximates the
      # part of its residual it coded and the next quantizer sees what is left. Independent random
      # projections make the output uncorrelated with the residual: every later quantizer then
      # re-codes nearly the same residual and the extra codebooks add nothing (measured).
      w = jnp.linalg.pinv(self.in_proj.weight())  # (codebook_dim, rvq_dim)
      self.out_proj.v[...] = w
      self.out_proj.g[...] = jnp.linalg.norm(w, axis=0)
    self.codebook = param(k3, normal(1.0), (spec.codebook_size, spec.codebook_dim),
                          ("codebook", "code"))

  def project_in(self, x):
    return self.in_proj(x) if self.projected else x

  def project_out(self, x):
    return self.out_proj(x) if self.projected else x

  def lookup(self, z_e: jax.Array) -> jax.Array:
    """Nearest codebook index per frame (ties -> lowest index). z_e: (..., d) -> (...) int32."""
    cb = self.codebook[...].astype(jnp.float32)
    e = z_e.astype(jnp.float32)
    if self.kind == "rlfq":
      e, cb = _normalize(e), _normalize(cb)
    dist = (jnp.sum(e * e, -1, keepdims=True) - 2 * e @ cb.T + jnp.sum(cb * cb, -1)[None])
    return jnp.argmax(-dist, axis=-1).astype(jnp.int32)

  def embed(self, codes: jax.Array) -> jax.Array:
    """codes (...) -> raw codebook rows passed through out_proj, (..., rvq_dim)."""
    return self.project_out(jnp.take(self.codebook[...], codes, axis=0).astype(jnp.float32))


class QuantizerOutput(NamedTuple):
  quantized: jax.Array  # (B, T, output_dim)
  codes: jax.Array  # (n_q, B, T) int32
  commitment_loss: jax.Array  # (n_q,) masked MSE(z_e, sg(z_q)) per quantizer
  codebook_loss: jax.Array  # (n_q,) masked MSE(sg(z_e), z_q) per quantizer
  latents: jax.Array  # (n_q, B, T, codebook_dim) each quantizer's input z_e (codebook restarts)


class ResidualQuantizer(nnx.Module):
  """input_proj -> residual loop over the first n_q quantizers -> output_proj."""

  def __init__(self, spec: QuantizerSpec, *, key):
    k1, k2, k3 = jax.random.split(key, 3)
    self.spec = spec
    if spec.input_dim != spec.rvq_dim:
      self.input_proj = WNConv1x1(spec.input_dim, spec.rvq_dim, ("embed", "rvq"), key=k1)
    if spec.rvq_dim != spec.output_dim:
      self.output_proj = WNConv1x1(spec.rvq_dim, spec.output_dim, ("rvq", "embed"), key=k2)

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(k):
      return CodebookQuantizer(spec, key=k)

    self.quantizers = make(jax.random.split(k3, spec.num_quantizers))
    for _, node in nnx.iter_graph(self.quantizers):
      if isinstance(node, nnx.Param):
        node.set_metadata("axes", ("quantizers",) + tuple(node.get_metadata()["axes"]))

  def _in(self, z):
    return self.input_proj(z) if self.spec.input_dim != self.spec.rvq_dim else z

  def _out(self, z):
    return self.output_proj(z) if self.spec.rvq_dim != self.spec.output_dim else z

  def _stack(self, n_q: int):
    graphdef, state = nnx.split(self.quantizers)
    return graphdef, jax.tree.map(lambda a: a[:n_q], state)

  def __call__(self, z: jax.Array, lengths: jax.Array, n_q: int | None = None,
               active: jax.Array | None = None) -> QuantizerOutput:
    """z: (B, T, input_dim), lengths: (B,) valid frames; `active` (B,) optional per-example number
    of quantizers in use (quantizer dropout): quantizer i updates example b only if i < active[b].
    """
    n_q = self.spec.num_quantizers if n_q is None else n_q
    z = self._in(z.astype(jnp.float32))
    b, t, _ = z.shape
    frame_mask = (jnp.arange(t)[None, :] < lengths[:, None]).astype(jnp.float32)[..., None]  # (B, T, 1)
    graphdef, state = self._stack(n_q)
    denom = jnp.maximum(frame_mask.sum(), 1.0)

    def body(carry, inp):
      quantized, residual = carry
      q_state, i = inp
      q = nnx.merge(graphdef, q_state)
      mask = frame_mask
      if active is not None:
        mask = mask * (i < active).astype(jnp.float32)[:, None, None]
      z_e = q.project_in(residual * frame_mask)
      codes = q.lookup(z_e)
      z_q = jnp.take(q.codebook[...], codes, axis=0).astype(jnp.float32)
      d = z_e.shape[-1]
      commit = jnp.sum(jnp.square(z_e - jax.lax.stop_gradient(z_q)) * mask) / (denom * d)
      cbl = jnp.sum(jnp.square(jax.lax.stop_gradient(z_e) - z_q) * mask) / (denom * d)
      z_q = z_e + jax.lax.stop_gradient(z_q - z_e)  # straight-through
      out = q.project_out(z_q)
      return (quantized + out * mask, residual - out * mask), (codes, commit, cbl, jax.lax.stop_gradient(z_e))

    init = (jnp.zeros_like(z), z)
    (quantized, _), (codes, commit, cbl, z_e) = jax.lax.scan(body, init, (state, jnp.arange(n_q)))
    return QuantizerOutput(self._out(quantized), codes, commit, cbl, z_e)

  def decode(self, codes: jax.Array) -> jax.Array:
    """codes: (n_q, B, T) -> (B, T, output_dim): sum of the first n_q quantizers' outputs."""
    graphdef, state = self._stack(codes.shape[0])

    def body(acc, inp):
      q_state, c = inp
      return acc + nnx.merge(graphdef, q_state).embed(c), None

    acc = jnp.zeros((*codes.shape[1:], self.spec.rvq_dim), jnp.float32)
    acc, _ = jax.lax.scan(body, acc, (state, codes))
    return self._out(acc)
