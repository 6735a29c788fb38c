"""The projected causal Transformer stage of CAT (pre-norm, RoPE, sliding-window attention).

Layout inside the model is channel-last, `x: (B, T, C)`. Layers of a stage are
stacked along a leading `layers` axis and run with `jax.lax.scan`.

Attention takes explicit positions so that the same code serves offline coding and
streaming with a KV cache: a query at position p sees key k iff 0 <= p - k < context.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cat_jax.config import TransformerSpec
from cat_jax.model.layers import ACTIVATIONS, Dense, LayerScale, make_norm


ATTENTION_BLOCK = 128  # offline causal attention runs in query blocks of this many frames


class KVCache(NamedTuple):
  """Ring buffers of a stage's last S frames, one per layer: position p lives in slot p % S, so a
  step writes only its new frames, in place. Which position a slot holds follows from the
  stream's next position alone (`slot_positions`). Layers are separate buffers, not one stacked
  array: each layer reads its own in place, where a slice of a stack is copied out first (XLA:CPU)."""
  k: tuple  # L x (B, H, Dh, S): keys Dh-major, values slot-major (the attention einsums' layouts)
  v: tuple  # L x (B, H, S, Dh)


class LayerCache(NamedTuple):
  """One layer's view of a KVCache."""
  k: jax.Array  # (B, H, Dh, S)
  v: jax.Array  # (B, H, S, Dh)
  pos: jax.Array  # (B, S) int32 position held by each slot, -1: none (masked out)


def slot_positions(first: jax.Array, s: int) -> jax.Array:
  """(B, S): the position in each of S ring slots when a stream's next frame is at `first` (B,):
  slot j holds the last position p < first with p % S == j, or -1 where that p < 0 (a fresh
  stream, or one sitting out at a negative position)."""
  p = first[:, None] - 1 - (first[:, None] - 1 - jnp.arange(s)) % s
  return jnp.where(p >= 0, p, -1)


def ring_write(buf: jax.Array, new: jax.Array, positions: jax.Array, after: jax.Array, slot_axis: int) -> jax.Array:
  """Scatters a chunk's entries new (B, T, H, Dh) at `positions` (B, T) into their slots p % S of
  buf (B, H, S, Dh) (slot_axis 2) or (B, H, Dh, S) (slot_axis 3), in place when buf is donated.
  Only the last min(T, S) can matter later; entries at negative positions (streams sitting out)
  are dropped. `after` (B, ...): a result of
  the reads of buf; the write is made to depend on it because XLA orders an in-place write after
  the reads of the old value only through data (not through an optimization_barrier) and would
  otherwise copy buf first. Per stream, so a broken stream cannot reach the others' caches."""
  b, t = positions.shape
  s = buf.shape[slot_axis]
  m = min(t, s)
  pos = positions[:, t - m:]
  slots = jnp.where(pos >= 0, pos % s, s + jnp.arange(m))  # (B, m): distinct; >= S is dropped
  tie = 0.0 * after.reshape(b, -1)[:, :1, None, None]  # (B, 1, 1, 1) zeros that depend on `after`
  new = (new[:, t - m:] + tie.astype(new.dtype)).astype(buf.dtype)
  index = (jnp.arange(b)[:, None], slice(None)) + (slice(None),) * (slot_axis - 2) + (slots,)
  return buf.at[index].set(new, unique_indices=True, mode="drop")  # indexed (B, m, H, Dh) either way


def rope_tables(positions: jax.Array, head_dim: int, max_period: float) -> tuple[jax.Array, jax.Array]:
  """(cos, sin), each (B, T, 1, Dh/2), for `rope`. Computed once per stage: fused into each
  layer's rotation, they would be re-evaluated for every head of every layer."""
  ds = jnp.arange(head_dim // 2, dtype=jnp.float32)
  freqs = jnp.exp(ds * (-math.log(max_period) * 2 / head_dim))
  angle = positions.astype(jnp.float32)[:, :, None, None] * freqs
  return _materialized(jnp.cos(angle)), _materialized(jnp.sin(angle))


def _materialized(x: jax.Array) -> jax.Array:
  """x, exactly (x + 0), as a reduction's output, which XLA does not fuse into the ops that read
  it; XLA:CPU drops optimization barriers and would recompute cos/sin inside every rotation
  (the released config's 512-token rope fusions 1.0 ms each instead of 0.2 ms)."""
  return jnp.sum(jnp.stack([x, jnp.zeros_like(x)]), axis=0)


def rope(x: jax.Array, tables: tuple[jax.Array, jax.Array]) -> jax.Array:
  """Rotary embedding on adjacent channel pairs (2i, 2i+1). x: (B, T, H, Dh), tables from `rope_tables`."""
  cos, sin = tables
  xr = x.astype(jnp.float32).reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
  a, b = xr[..., 0], xr[..., 1]
  out = jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1)
  return out.reshape(x.shape).astype(x.dtype)


def sin_embedding(positions: jax.Array, dim: int, max_period: float) -> jax.Array:
  """Additive sinusoidal embedding [cos | sin]. positions: (B, T) -> (B, T, dim)."""
  half = dim // 2
  adim = jnp.arange(half, dtype=jnp.float32)
  phase = positions.astype(jnp.float32)[..., None] / (jnp.float32(max_period) ** (adim / (half - 1)))
  return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)], axis=-1)


def attention_mask(q_pos: jax.Array, k_pos: jax.Array, context: int | None, causal: bool,
                   lengths: jax.Array | None = None) -> jax.Array:
  """(B, T, S) boolean: key slot valid (and, with `lengths` (B,), before the stage's valid length:
  v2's length masking), not in the future, and inside the window."""
  valid = k_pos >= 0
  if lengths is not None:
    valid = valid & (k_pos < lengths[:, None])
  valid = valid[:, None, :]
  if not causal:
    return jnp.broadcast_to(valid, (q_pos.shape[0], q_pos.shape[1], k_pos.shape[1]))
  delta = q_pos[:, :, None] - k_pos[:, None, :]
  mask = valid & (delta >= 0)
  if context is not None:
    mask = mask & (delta < context)
  return mask


class Attention(nnx.Module):
  """Multi-head self-attention with one fused q/k/v projection (reference: in_projs.0, out_projs.0)."""

  def __init__(self, spec: TransformerSpec, *, key):
    c, h = spec.d_model, spec.num_heads
    k1, k2 = jax.random.split(key)
    self.num_heads, self.head_dim = h, spec.head_dim
    self.use_rope = spec.positional_embedding in ("rope", "sin_rope")
    self.max_period = spec.max_period
    self.context, self.causal = spec.context, spec.causal
    # in_proj kernel: (C, 3, H, Dh), the reference's (3C, C) read as (3, H, Dh) blocks.
    self.in_proj = Dense((c,), (3, h, spec.head_dim), ("embed", "qkv", "heads", "head_dim"), key=k1)
    self.out_proj = Dense((h, spec.head_dim), (c,), ("heads", "head_dim", "embed"), key=k2)

  def __call__(self, x, positions, *, cache: LayerCache | None = None, dtype=None, tables=None, lengths=None):
    """x: (B, T, C), positions: (B, T), tables: optional `rope_tables(positions)`; lengths (B,):
    v2's length masking (keys at or past the valid length are masked out, query rows there give
    exactly zero before out_proj), offline only. Returns (y (B, T, C), new cache or None)."""
    qkv = self.in_proj(x, dtype)  # (B, T, 3, H, Dh)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.use_rope:
      if tables is None:
        tables = rope_tables(positions, self.head_dim, self.max_period)
      q, k = rope(q, tables), rope(k, tables)
    if cache is not None:
      return self._attend_cached(q, k, v, positions, cache, dtype)
    q, k, v = (a.transpose(0, 2, 1, 3) for a in (q, k, v))  # (B, H, T, Dh): no transposes inside the blocks
    blocks = [self._attend_block(q[:, :, q0:q1], k[:, :, k0:q1], v[:, :, k0:q1],
                                 positions[:, q0:q1], positions[:, k0:q1], lengths)
              for q0, q1, k0 in self._blocks(q.shape[2])]
    out = blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=2)
    if lengths is not None:
      out = jnp.where((positions < lengths[:, None])[:, None, :, None], out, 0.0)
    return self.out_proj(out.transpose(0, 2, 1, 3), dtype), None

  def _blocks(self, t: int) -> list[tuple[int, int, int]]:
    """Static query blocks (q0, q1) and the first key k0 that any query in the block can see.

    Offline positions are 0..T-1 (see `run_modules`), so a causal block never needs keys past
    its last query, nor keys before its first query's window: about half of the T x T
    logits, and far fewer once T exceeds the window, are never computed.
    """
    if not self.causal or t <= 2 * ATTENTION_BLOCK:
      return [(0, t, 0)]
    return [(q0, min(t, q0 + ATTENTION_BLOCK), 0 if self.context is None else max(0, q0 - self.context + 1))
            for q0 in range(0, t, ATTENTION_BLOCK)]

  def _attend_block(self, q, k, v, q_pos, k_pos, lengths=None):
    """q: (B, H, Tq, Dh), k, v: (B, H, S, Dh) -> (B, H, Tq, Dh)."""
    mask = attention_mask(q_pos, k_pos, self.context, self.causal, lengths)[:, None]  # (B, 1, Tq, S)
    logits = jnp.einsum("bhtd,bhsd->bhts", q, k, preferred_element_type=jnp.float32) * (1.0 / math.sqrt(self.head_dim))
    probs = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
    probs = jnp.where(mask, probs, 0.0)  # rows with no key (padding slots) give 0, not NaN
    return jnp.einsum("bhts,bhsd->bhtd", probs.astype(v.dtype), v)

  def _attend_cached(self, q, k, v, positions, cache: LayerCache, dtype):
    """Streaming: the chunk's T queries attend over one layer's cache slots (keys (B, H, Dh, S),
    values (B, H, S, Dh)) and the chunk's own keys, one softmax over both and no concatenated copy
    of the cache. q, k, v: (B, T, H, Dh). Returns (y, the chunk's (k, v)), which the caller writes
    with `ring_write`."""
    s = cache.v.shape[2]
    positions = positions.astype(cache.pos.dtype)
    # Query-major (B, H, T, keys) logits over Dh-major keys: of the layouts XLA:CPU offers for
    # these small batched matmuls, the fastest (bench_streaming, 100m at 64 streams).
    l_old = jnp.einsum("bhds,bthd->bhts", cache.k.astype(q.dtype), q, preferred_element_type=jnp.float32)
    l_new = jnp.einsum("bshd,bthd->bhts", k, q, preferred_element_type=jnp.float32)
    logits = jnp.concatenate([l_old, l_new], axis=-1) * (1.0 / math.sqrt(self.head_dim))  # (B, H, T, S + T)
    mask = attention_mask(positions, jnp.concatenate([cache.pos, positions], axis=1), self.context, self.causal)
    mask = mask[:, None]  # (B, 1, T, S + T)
    probs = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
    probs = jnp.where(mask, probs, 0.0).astype(v.dtype)  # streams sitting out see no key
    out = (jnp.einsum("bhts,bhsd->bhtd", probs[..., :s], cache.v.astype(v.dtype))
           + jnp.einsum("bhts,bshd->bhtd", probs[..., s:], v))
    return self.out_proj(jnp.swapaxes(out, 1, 2), dtype), (k, v)


class Gating(nnx.Module):
  """Gated FFN: linear_in C -> (2, h) read as [gate | value], act(gate) * value, linear_out h -> C."""

  def __init__(self, spec: TransformerSpec, *, key):
    k1, k2 = jax.random.split(key)
    h = spec.ffn_hidden
    self.activation = spec.gating
    self.linear_in = Dense((spec.d_model,), (2, h), ("embed", "gate", "mlp"), key=k1)
    self.linear_out = Dense((h,), (spec.d_model,), ("mlp", "embed"), key=k2)

  def __call__(self, x, dtype=None):
    y = self.linear_in(x, dtype)
    return self.linear_out(ACTIVATIONS[self.activation](y[..., 0, :]) * y[..., 1, :], dtype)


class TransformerLayer(nnx.Module):
  """x += ls1 * attn(norm1(x)); x += ls2 * ffn(norm2(x))."""

  def __init__(self, spec: TransformerSpec, *, key):
    k1, k2 = jax.random.split(key)
    self.self_attn = Attention(spec, key=k1)
    self.norm1 = make_norm(spec.norm, spec.d_model)
    self.norm2 = make_norm(spec.norm, spec.d_model)
    if spec.gating == "none":  # linear2(gelu(linear1(x))), exact GELU, no biases
      k2, k3 = jax.random.split(k2)
      self.linear1 = Dense((spec.d_model,), (spec.dim_feedforward,), ("embed", "mlp"), key=k2)
      self.linear2 = Dense((spec.dim_feedforward,), (spec.d_model,), ("mlp", "embed"), key=k3)
    else:
      self.gating = Gating(spec, key=k2)
    if spec.layer_scale is not None:
      self.layer_scale_1 = LayerScale(spec.d_model, spec.layer_scale)
      self.layer_scale_2 = LayerScale(spec.d_model, spec.layer_scale)
    self.has_scale = spec.layer_scale is not None
    self.gated = spec.gating != "none"

  def __call__(self, x, positions, *, cache=None, dtype=None, tables=None, lengths=None):
    y, cache = self.self_attn(self.norm1(x), positions, cache=cache, dtype=dtype, tables=tables, lengths=lengths)
    x = x + (self.layer_scale_1(y) if self.has_scale else y).astype(x.dtype)
    h = self.norm2(x)
    if self.gated:
      y = self.gating(h, dtype)
    else:
      y = self.linear2(jax.nn.gelu(self.linear1(h, dtype), approximate=False), dtype)
    x = x + (self.layer_scale_2(y) if self.has_scale else y).astype(x.dtype)
    return x, cache


def _prepend_layer_axis(module: nnx.Module) -> None:
  for _, node in nnx.iter_graph(module):
    if isinstance(node, nnx.Param):
      node.set_metadata("axes", ("layers",) + tuple(node.get_metadata()["axes"]))


class Transformer(nnx.Module):
  """`num_layers` layers stacked on a leading axis, scanned; optional sinusoidal embedding.

  `unroll()` turns the stack into per-layer modules that run one after the other (CPU coding,
  see `codec.unrolled`); nothing else changes. Streaming always runs the layers one by one."""

  def __init__(self, spec: TransformerSpec, *, key, remat: bool = False, scan_layers: bool = True):
    self.spec = spec
    self.remat = remat
    self.scan_layers = scan_layers  # False: the scan fully unrolled (XLA:CPU then slices no weights out of the stack)

    @nnx.vmap(in_axes=0, out_axes=0)
    def make(k):
      return TransformerLayer(spec, key=k)

    self.layers = make(jax.random.split(key, spec.num_layers))
    _prepend_layer_axis(self.layers)

  @property
  def unrolled(self) -> bool:
    return isinstance(self.layers, nnx.List)

  def unroll(self) -> None:
    """Replaces the stacked layers by per-layer modules whose weights are views of the stack
    (zero-copy on the CPU, see `unstack_layers`), for coding on the CPU (`codec.unrolled`)."""
    if not self.unrolled:
      graphdef, state = nnx.split(self.layers)
      self.layers = nnx.List([nnx.merge(graphdef, s) for s in unstack_layers(state)])

  def __call__(self, x, positions, *, caches: KVCache | None = None, dtype=None, lengths=None):
    """x: (B, T, C); caches: the stage's KVCache (streaming), or None; lengths (B,): v2's length
    masking (offline). Returns (x, updated caches or None)."""
    spec = self.spec
    if spec.positional_embedding in ("sin", "sin_rope"):
      x = x + spec.positional_scale * sin_embedding(positions, x.shape[-1], spec.max_period).astype(x.dtype)
    tables = None
    if spec.positional_embedding in ("rope", "sin_rope"):
      tables = rope_tables(positions, spec.head_dim, spec.max_period)
    if caches is not None:
      return self._stream(x, positions, caches, dtype, tables)
    if self.unrolled:
      for layer in self.layers:
        x, _ = layer(x, positions, dtype=dtype, tables=tables, lengths=lengths)
      return x, None
    graphdef, state = nnx.split(self.layers)

    def body(x, layer_state):
      return nnx.merge(graphdef, layer_state)(x, positions, dtype=dtype, tables=tables, lengths=lengths)[0], None

    if self.remat:
      body = jax.checkpoint(body, prevent_cse=False)
    x, _ = jax.lax.scan(body, x, state, unroll=not self.scan_layers)  # True: no loop at all
    return x, None

  def _stream(self, x, positions, caches: KVCache, dtype, tables):
    """The layers one after the other, each over its own cache, which it updates in place once
    it has read it: a scan would slice (copy) every layer's cache and weights out of the stack."""
    if self.unrolled:
      layers = list(self.layers)
    else:
      graphdef, state = nnx.split(self.layers)
      layers = [nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state)) for i in range(self.spec.num_layers)]
    slot_pos = slot_positions(positions[:, 0], caches.v[0].shape[2])
    ks, vs = [], []
    for layer, k, v in zip(layers, caches.k, caches.v):
      x, (k_new, v_new) = layer(x, positions, cache=LayerCache(k, v, slot_pos), dtype=dtype, tables=tables)
      ks.append(ring_write(k, k_new, positions, after=x, slot_axis=3))  # x has read k and v
      vs.append(ring_write(v, v_new, positions, after=x, slot_axis=2))
    return x, KVCache(tuple(ks), tuple(vs))


def unstack_layers(layers_state) -> list:
  """Per-layer states of a stacked layer state, as zero-copy views on the CPU.

  XLA:CPU copies each layer's weight slice out of the stack at every scan step (a dot needs
  its own buffer); on single-layer weights that already live apart, an unrolled loop reads
  them in place. On the CPU, `device_put` of a numpy view aliases the stacked buffer.
  """
  n = jax.tree.leaves(layers_state)[0].shape[0]
  host = jax.tree.map(np.asarray, layers_state)
  return [jax.tree.map(lambda a, i=i: jax.device_put(a[i]), host) for i in range(n)]


class ProjectedTransformer(nnx.Module):
  """input_proj -> Transformer -> output_proj; v1 drops a projection whose widths are equal, v2
  keeps it as a learned square matrix (`spec.has_input_proj` / `has_output_proj`)."""

  def __init__(self, spec: TransformerSpec, *, key, remat: bool = False, scan_layers: bool = True):
    k1, k2, k3 = jax.random.split(key, 3)
    self.spec = spec
    if spec.has_input_proj:
      self.input_proj = Dense((spec.input_dimension,), (spec.d_model,), ("io", "embed"), key=k1)
    self.transformer = Transformer(spec, key=k2, remat=remat, scan_layers=scan_layers)
    if spec.has_output_proj:
      self.output_proj = Dense((spec.d_model,), (spec.output_dimension,), ("embed", "io"), key=k3)

  def __call__(self, x, positions, *, caches=None, dtype=None, lengths=None):
    if self.spec.has_input_proj:
      x = self.input_proj(x, dtype).astype(jnp.float32)
    x, caches = self.transformer(x, positions, caches=caches, dtype=dtype, lengths=lengths)
    if self.spec.has_output_proj:
      x = self.output_proj(x, dtype).astype(jnp.float32)
    return x, caches
