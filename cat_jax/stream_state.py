"""Streaming state of CAT: per-stage KV caches and positions, plus the encoder's sample buffer.

A state holds B independent streams. Each causal Transformer stage keeps, per layer, a ring
buffer of keys/values (frame p in slot p % S) and the position of its next frame. A step writes
its T new frames in place and then attends, so S = context - 1 + T slots hold exactly what the
sliding window needs: a state is made for chunks of up to `chunk_frames` token frames, and any
chunk size reproduces offline coding.
States are plain NamedTuple pytrees; every function here is pure and jit-friendly.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cat_jax.config import CATConfig, PatchSpec
from cat_jax.errors import ConfigError
from cat_jax.model.transformer import KVCache


class StageState(NamedTuple):
  """One Transformer stage of B streams."""
  cache: tuple  # one KVCache per layer (separate buffers: no slice copies): k, v (B, H, S, Dh); pos (B, S), -1 = empty
  offset: jax.Array  # (B,) int32 position of the stream's next frame at this stage


class EncoderState(NamedTuple):
  stages: tuple  # per encoder module: StageState (Transformer) or None (patch)
  buffer: jax.Array  # (B, downsample_rate, C) samples of the incomplete frame
  fill: jax.Array  # (B,) int32 samples held in `buffer`


class DecoderState(NamedTuple):
  stages: tuple  # per decoder module: StageState (Transformer) or None (patch)


def stage_rates(specs, downsample: bool, downsample_rate: int) -> list[int]:
  """Frames per token frame at which each module runs (encoder: dr, dr/240, ...; decoder: 1, 2, ...)."""
  rate = downsample_rate if downsample else 1
  rates = []
  for s in specs:
    rates.append(rate)
    if isinstance(s, PatchSpec):
      rate = rate // s.patch_size if downsample else rate * s.patch_size
  return rates


def cache_capacity(spec, frames: int = 1) -> int:
  """Ring slots of a stage that takes `frames` frames per step: its window minus the query, plus the step."""
  if not spec.causal or spec.context is None:
    raise ConfigError("streaming needs causal Transformer stages with a finite context; "
                      "this config has a non-causal stage")
  return spec.context - 1 + frames


def _check_chunk(chunk_frames) -> int:
  if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, int) or chunk_frames < 1:
    raise ConfigError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
  return chunk_frames


def _stage_init(spec, batch: int, cache_dtype, frames: int) -> StageState:
  s = cache_capacity(spec, frames)
  shape = (batch, spec.num_heads, s, spec.head_dim)  # every array its own buffer (donation)
  cache = tuple(KVCache(jnp.zeros(shape, cache_dtype), jnp.zeros(shape, cache_dtype), jnp.full((batch, s), -1, jnp.int32))
                for _ in range(spec.num_layers))
  return StageState(cache, jnp.zeros((batch,), jnp.int32))


def _stages_init(specs, rates, batch: int, cache_dtype, chunk_frames) -> tuple:
  k = _check_chunk(chunk_frames)
  return tuple(None if isinstance(s, PatchSpec) else _stage_init(s, batch, cache_dtype, k * r)
               for s, r in zip(specs, rates))


def init_encoder_state(config: CATConfig, batch: int, cache_dtype=jnp.float32, chunk_frames: int = 1) -> EncoderState:
  """B fresh encoder streams for steps of up to `chunk_frames` token frames: empty caches,
  positions 0, empty sample buffer."""
  rates = stage_rates(config.encoder, True, config.downsample_rate)
  return EncoderState(_stages_init(config.encoder, rates, batch, cache_dtype, chunk_frames),
                      jnp.zeros((batch, config.downsample_rate, config.channels), jnp.float32),
                      jnp.zeros((batch,), jnp.int32))


def init_decoder_state(config: CATConfig, batch: int, cache_dtype=jnp.float32, chunk_frames: int = 1) -> DecoderState:
  """B fresh decoder streams for steps of up to `chunk_frames` token frames."""
  rates = stage_rates(config.decoder, False, config.downsample_rate)
  return DecoderState(_stages_init(config.decoder, rates, batch, cache_dtype, chunk_frames))


def _bcast(mask: jax.Array, ndim: int, axis: int) -> jax.Array:
  return mask.reshape((1,) * axis + (-1,) + (1,) * (ndim - axis - 1))


def reset_streams(state, mask: jax.Array):
  """Makes the streams where `mask` (B,) is True fresh. Empty slots (pos -1) are masked out of
  attention with weight exactly 0, so clearing positions, offsets and fill is enough."""
  mask = jnp.asarray(mask, bool)

  def stage(st):
    if st is None:
      return None
    cache = tuple(c._replace(pos=jnp.where(mask[:, None], -1, c.pos)) for c in st.cache)
    return StageState(cache, jnp.where(mask, 0, st.offset))

  stages = tuple(stage(st) for st in state.stages)
  if isinstance(state, EncoderState):
    return EncoderState(stages, state.buffer, jnp.where(mask, 0, state.fill))
  return DecoderState(stages)


def select_streams(mask: jax.Array, new, old):
  """Per stream: `new` where mask (B,) is True, else `old`. Copies whole caches; the steps instead
  let streams sit out by running them at negative positions, whose cache writes are dropped."""
  mask = jnp.asarray(mask, bool)

  def pick(a, b, axis):
    return jnp.where(_bcast(mask, a.ndim, axis), a, b)

  def stage(n, o):
    if n is None:
      return None
    return StageState(jax.tree.map(lambda a, b: pick(a, b, 0), n.cache, o.cache), pick(n.offset, o.offset, 0))

  stages = tuple(stage(n, o) for n, o in zip(new.stages, old.stages))
  if isinstance(new, EncoderState):
    return EncoderState(stages, pick(new.buffer, old.buffer, 0), pick(new.fill, old.fill, 0))
  return DecoderState(stages)


def state_bytes(state) -> int:
  """Memory held by a state (caches dominate)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
