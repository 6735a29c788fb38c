"""Streaming state of CAT: per-stage KV caches and positions, plus the encoder's sample buffer.

A state holds B independent streams. Each causal Transformer stage keeps the keys/values of
its last `context - 1` frames (one buffer per layer) in ring buffers (frame p in slot p % S, so
a step writes only its new frames, in place) and the position of its next frame, which is
exactly what its sliding window needs, so any chunk size reproduces offline coding.
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
  cache: KVCache  # ring buffers: k L x (B, H, Dh, S), v L x (B, H, S, Dh)
  offset: jax.Array  # (B,) int32 position of the stream's next frame at this stage (0: fresh, all slots empty)


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


def cache_capacity(spec) -> int:
  """Keys a stage must remember: its window minus the query itself (at least one slot)."""
  if not spec.causal or spec.context is None:
    raise ConfigError("streaming needs causal Transformer stages with a finite context; "
                      "this config has a non-causal stage")
  return max(spec.context - 1, 1)


def _stage_init(spec, batch: int, cache_dtype) -> StageState:
  s, h, dh = cache_capacity(spec), spec.num_heads, spec.head_dim

  def bufs(shape):  # one buffer per layer, all distinct (donation)
    return tuple(jnp.zeros(shape, cache_dtype) for _ in range(spec.num_layers))

  return StageState(KVCache(bufs((batch, h, dh, s)), bufs((batch, h, s, dh))), jnp.zeros((batch,), jnp.int32))


def _stages_init(specs, batch: int, cache_dtype) -> tuple:
  return tuple(None if isinstance(s, PatchSpec) else _stage_init(s, batch, cache_dtype) for s in specs)


def init_encoder_state(config: CATConfig, batch: int, cache_dtype=jnp.float32) -> EncoderState:
  """B fresh encoder streams: empty caches, positions 0, empty sample buffer."""
  return EncoderState(_stages_init(config.encoder, batch, cache_dtype),
                      jnp.zeros((batch, config.downsample_rate, config.channels), jnp.float32),
                      jnp.zeros((batch,), jnp.int32))


def init_decoder_state(config: CATConfig, batch: int, cache_dtype=jnp.float32) -> DecoderState:
  """B fresh decoder streams."""
  return DecoderState(_stages_init(config.decoder, batch, cache_dtype))


def reset_streams(state, mask: jax.Array):
  """Makes the streams where `mask` (B,) is True fresh: at offset 0 every slot reads as empty
  (transformer.slot_positions) and is masked out of attention with weight exactly 0, so clearing
  offsets and fill is enough."""
  mask = jnp.asarray(mask, bool)

  def stage(st):
    return None if st is None else st._replace(offset=jnp.where(mask, 0, st.offset))

  stages = tuple(stage(st) for st in state.stages)
  if isinstance(state, EncoderState):
    return EncoderState(stages, state.buffer, jnp.where(mask, 0, state.fill))
  return DecoderState(stages)


def state_bytes(state) -> int:
  """Memory held by a state (caches dominate)."""
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
