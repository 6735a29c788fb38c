"""Streaming encode/decode with KV caches that equal offline coding exactly.

Every stage is causal with a sliding window, so a frame's outputs depend only on the past:
feeding K frames at a time through stages that remember their last `context - 1` keys (in ring
buffers updated in place, see stream_state) gives the offline codes bit for bit and the offline
audio to float rounding, for any K.

Pure step functions take (graphdef, params, state, chunk) and return (state, outputs);
`steps_for(model)` gives them jitted (once per chunk shape) with the model's weights bound,
consuming (donating) the state.
`encode_frames` / `decode_frames` code whole signals K frames at a time: they back
`CAT.encode/decode(chunk_duration=...)` and the `stream-encode` / `stream-decode` commands.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cat_jax.config import CATConfig
from cat_jax.errors import AudioError, ConfigError
from cat_jax.model.cat import deinterleave, interleave, run_modules
from cat_jax.stream_state import (DecoderState, EncoderState, StageState, init_decoder_state, init_encoder_state,
                                  reset_streams, stage_rates)


# ---- pure steps ---------------------------------------------------------------------

def _run_stages(modules, rates, stages: tuple, x, frames: int, dtype, active=None):
  """Runs a module list on `frames` token frames with the stages' caches; advances positions.
  Streams not `active` (B,) run at negative positions, where attention writes nothing to the
  caches (their outputs are junk), and keep their positions: no copy of the caches is made."""
  b = x.shape[0]
  on = jnp.ones((b,), bool) if active is None else jnp.asarray(active, bool)
  offsets = [None if s is None else jnp.where(on, s.offset, -frames * r - 1) for s, r in zip(stages, rates)]
  caches = [None if s is None else s.cache for s in stages]
  x, _, new_caches = run_modules(modules, x, jnp.zeros((b,), jnp.int32), offsets=offsets, caches=caches, dtype=dtype)
  new = tuple(None if s is None else StageState(c, s.offset + jnp.where(on, frames * r, 0))
              for s, c, r in zip(stages, new_caches, rates))
  return x, new


def encoder_step(graphdef, params, state: EncoderState, audio, valid=None, active=None, reset=None,
                 *, n_q: int | None = None, dtype=None):
  """Encodes K whole frames per stream. audio: (B, K*downsample_rate, C); valid (B,): frames of
  this chunk inside the stream's length (later ones are masked in the quantizer like offline
  padding; default all); active (B,) bool: streams that take part (others keep their state);
  reset (B,) bool: streams restarted before this chunk. Ignores the sample buffer.
  Returns (state, codes (n_q, B, K) int32, hidden (B, K, D))."""
  model = nnx.merge(graphdef, params)
  cfg = model.config
  if reset is not None:
    state = reset_streams(state, reset)
  b, t, _ = audio.shape
  if t % cfg.downsample_rate or t == 0:
    raise AudioError(f"encoder_step takes whole frames of {cfg.downsample_rate} samples, got {t} samples; "
                     "use encoder_push for arbitrary sizes")
  k = t // cfg.downsample_rate
  rates = stage_rates(cfg.encoder, True, cfg.stream_downsample_rate)
  x, _ = interleave(cfg, audio.astype(jnp.float32), jnp.zeros((b,), jnp.int32))  # v2: one L R L R stream
  h, stages = _run_stages(model.encoder, rates, state.stages, x, k, dtype, active)
  valid = jnp.full((b,), k, jnp.int32) if valid is None else jnp.asarray(valid, jnp.int32)
  codes = model.quantizer(h, valid, n_q).codes
  return state._replace(stages=stages), codes, h


def encoder_push(graphdef, params, state: EncoderState, samples, reset=None, *, n_q: int | None = None,
                 dtype=None):
  """Feeds N arbitrary samples per stream; complete frames are encoded, the rest is buffered.
  samples: (B, N, C). Returns (state, codes (n_q, B, M), hidden (B, M, D), count (B,)) with
  M = (downsample_rate - 1 + N) // downsample_rate; stream b's first count[b] frames are new."""
  cfg = nnx.merge(graphdef, params).config
  if reset is not None:
    state = reset_streams(state, reset)
  dr = cfg.downsample_rate
  b, n, c = samples.shape
  m = (dr - 1 + n) // dr
  if n == 0:
    return (state, jnp.zeros((n_q or cfg.num_quantizers, b, 0), jnp.int32),
            jnp.zeros((b, 0, cfg.quantizer.input_dim), jnp.float32), jnp.zeros((b,), jnp.int32))
  fill = state.fill
  total = fill + n
  count = total // dr
  # joined[b] = buffer[b, :fill[b]] ++ samples[b] (junk past total[b])
  idx = jnp.arange(dr + n, dtype=jnp.int32)[None]  # (1, dr+N)
  from_samples = jnp.take_along_axis(samples.astype(jnp.float32),
                                     jnp.clip(idx - fill[:, None], 0, max(n - 1, 0))[..., None], axis=1)
  from_buffer = jnp.pad(state.buffer, ((0, 0), (0, n), (0, 0)))
  joined = jnp.where((idx < fill[:, None])[..., None], from_buffer, from_samples)
  frames = joined[:, :m * dr].reshape(b, m, dr, c).transpose(1, 0, 2, 3)  # (M, B, dr, C)

  def body(st, inp):
    frame, j = inp
    st, codes, h = encoder_step(graphdef, params, st, frame, active=j < count, n_q=n_q, dtype=dtype)
    return st, (codes[:, :, 0], h[:, 0])

  state, (codes, hidden) = jax.lax.scan(body, state, (frames, jnp.arange(m)))
  rest = jnp.take_along_axis(joined, jnp.clip(count[:, None] * dr + jnp.arange(dr)[None], 0, dr + n - 1)[..., None],
                             axis=1)
  state = state._replace(buffer=rest, fill=total - count * dr)
  return state, jnp.moveaxis(codes, 0, -1), jnp.moveaxis(hidden, 0, 1), count


def encoder_flush(graphdef, params, state: EncoderState, *, n_q: int | None = None, dtype=None):
  """Ends the streams: a buffered partial frame is zero-padded and encoded as offline encoding
  pads the end (its quantizer input masked). Returns (state, codes (n_q, B, 1), hidden, count (B,))."""
  dr = state.buffer.shape[1]
  b = state.fill.shape[0]
  keep = (jnp.arange(dr)[None] < state.fill[:, None])[..., None]
  frame = jnp.where(keep, state.buffer, 0.0)
  count = (state.fill > 0).astype(jnp.int32)
  state, codes, h = encoder_step(graphdef, params, state, frame, jnp.zeros((b,), jnp.int32), count > 0,
                                 n_q=n_q, dtype=dtype)
  return state._replace(fill=jnp.zeros_like(state.fill)), codes, h, count


def decoder_step(graphdef, params, state: DecoderState, codes, active=None, reset=None, *, dtype=None):
  """Decodes K frames per stream. codes: (n_q, B, K) int. Returns (state, audio (B, K*downsample_rate, C))."""
  model = nnx.merge(graphdef, params)
  cfg = model.config
  if reset is not None:
    state = reset_streams(state, reset)
  k = codes.shape[-1]
  rates = stage_rates(cfg.decoder, False, cfg.downsample_rate)
  z = model.quantizer.decode(jnp.asarray(codes, jnp.int32))
  audio, stages = _run_stages(model.decoder, rates, state.stages, z, k, dtype, active)
  audio, _ = deinterleave(cfg, audio, jnp.zeros((audio.shape[0],), jnp.int32))
  return DecoderState(stages), audio


class Steps(NamedTuple):
  """The steps above for one model's weights: call them as `f(state, ...)` (no graphdef, no params)."""
  encode: Callable  # encoder_step
  push: Callable  # encoder_push
  flush: Callable  # encoder_flush
  decode: Callable  # decoder_step


def make_steps(graphdef) -> tuple:
  """The steps jitted with `graphdef` bound, taking (params, state, ...): compiled once per chunk
  shape, the state argument donated."""
  def jit(fn, static):
    return jax.jit(functools.partial(fn, graphdef), static_argnames=static, donate_argnames=("state",))
  return (jit(encoder_step, ("n_q", "dtype")), jit(encoder_push, ("n_q", "dtype")),
          jit(encoder_flush, ("n_q", "dtype")), jit(decoder_step, ("dtype",)))


def steps_for(model) -> Steps:
  """The jitted steps of a cat_jax.CAT (built once per model) with its coding weights bound."""
  def bind(jitted):
    def step(*args, **kwargs):
      return jitted(model.coding_params, *args, **kwargs)
    return step

  return Steps(*map(bind, model.bound("streaming", make_steps)))


# ---- whole signals, K frames per step (CAT.encode / CAT.decode(chunk_duration=...), the CLI) ----

def chunk_frames(config: CATConfig, chunk_duration) -> int:
  """Validates a chunk duration (seconds) and returns it in token frames."""
  frame_ms = 1000.0 / config.frame_rate
  if isinstance(chunk_duration, bool) or not isinstance(chunk_duration, (int, float, np.integer, np.floating)):
    raise ConfigError(f"chunk_duration must be a number of seconds, got {chunk_duration!r}")
  d = float(chunk_duration)
  if not math.isfinite(d) or d <= 0:
    raise ConfigError(f"chunk_duration must be > 0 seconds, got {chunk_duration!r}")
  k = d * config.frame_rate
  kr = round(k)
  if kr < 1 or abs(k - kr) > 1e-6 * max(1.0, k):
    raise ConfigError(f"chunk_duration={d:g} s is not a whole number of {frame_ms:g} ms token frames "
                      f"(e.g. {frame_ms / 1000:g} or {2 * frame_ms / 1000:g})")
  return int(kr)


def check_chunk_frames(k) -> int:
  """A chunk size in token frames: a positive integer."""
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ConfigError(f"chunk frames must be a positive integer, got {k!r}")
  return int(k)


def encode_frames(model, x: np.ndarray, lengths: np.ndarray, n_q: int, k: int, progress=None):
  """x (B, C, T) float32 -> (codes (n_q, B, F), frame lengths (B,), hidden (B, F, D)), K frames per step.
  progress: wraps the iterable of steps (e.g. a tqdm bar)."""
  cfg = model.config
  dr = cfg.downsample_rate
  b, c, t = x.shape
  frames = -(-t // dr)
  n = -(-frames // k)
  xp = np.zeros((b, n * k * dr, c), np.float32)
  xp[:, :t] = x.transpose(0, 2, 1)
  flen = np.asarray(lengths, np.int64) // dr
  state = init_encoder_state(cfg, b)
  steps = steps_for(model)
  codes, hidden = [], []
  for i in (progress or iter)(range(n)):
    valid = np.clip(flen - i * k, 0, k).astype(np.int32)
    state, cd, h = steps.encode(state, xp[:, i * k * dr:(i + 1) * k * dr], valid, n_q=n_q,
                                dtype=model.dtype)
    codes.append(np.asarray(cd))
    hidden.append(np.asarray(h))
  if cfg.v2:  # v2 yields no frame for a remainder shorter than one frame (trimmed like offline)
    frames = int(flen.max())
  codes = np.concatenate(codes, -1)[:, :, :frames]
  hidden = np.concatenate(hidden, 1)[:, :frames]
  return codes, flen, hidden


def decode_frames(model, codes: np.ndarray, k: int, progress=None) -> np.ndarray:
  """codes (n_q, B, F) -> audio (B, F * downsample_rate, C), K frames per step. progress: wraps
  the iterable of steps (e.g. a tqdm bar)."""
  n_q, b, f = codes.shape
  n = -(-f // k)
  cp = np.zeros((n_q, b, n * k), np.int32)
  cp[:, :, :f] = codes
  state = init_decoder_state(model.config, b)
  steps = steps_for(model)
  keep = np.zeros((b,), bool)  # no resets; passed as an array so the program is shared with callers that reset
  out = []
  for i in (progress or iter)(range(n)):
    state, a = steps.decode(state, cp[:, :, i * k:(i + 1) * k], None, keep, dtype=model.dtype)
    out.append(np.asarray(a))
  return np.concatenate(out, 1)[:, :f * model.config.downsample_rate]
