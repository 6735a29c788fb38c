"""A stream engine for a server: many independent streams in fixed-capacity slots, one program call per shard and step.

  engine = StreamEngine(model, capacity=64, chunk_frames=1)
  sid = engine.open()                      # takes a free slot (a StreamError when all are taken)
  engine.push(sid, samples)                # any number of samples, (N,) mono or (C, N); buffered here
  engine.step()                            # every stream with a whole chunk buffered: encode + decode
  codes, audio = engine.pull_codes(sid), engine.pull_audio(sid)   # what is ready so far
  codes, audio = engine.close(sid)         # the partial last frame padded like offline; slot freed

Exactness: a stream's codes equal `model.encode` of everything it was pushed (bit for bit) and its
audio equals `model.decode` of those codes (to float rounding), whatever the push sizes, the
moment it joined and the other streams sharing the steps (see cat_jax.streaming).

One compiled program per (model, shard size, chunk size, n_q): the step runs the jitted
`encoder_step` then `decoder_step` of cat_jax.streaming over fixed-shape shards of the slots
(pipelined: two programs, the encoder's and the decoder's, whose calls run at once on threads;
the decoder then decodes the codes of the step before, so audio comes one step later);
slots without a whole chunk sit out through the `active` mask (their caches untouched) and a slot
taken by a new stream is made fresh through the `reset` mask, so streams joining or leaving never
recompile. The shards (by default one per CPU core when they divide the capacity) run at once on
threads: XLA:CPU runs the cached attention's batched matmuls on one core, so two half-size calls
finish well before one whole (100m, 64 streams, decoder: 300 against 470 ms); a shard with no
stream to serve is not called. Samples wait on the host (numpy) until a chunk is whole; the device
holds only the KV ring buffers of the slots (donated, updated in place).
"""
from __future__ import annotations

import collections
import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, NamedTuple

import jax
import numpy as np

from cat_jax.errors import AudioError, StreamError
from cat_jax.stream_state import init_decoder_state, init_encoder_state
from cat_jax.streaming import check_chunk_frames, decoder_step, encoder_step
from cat_jax.validation import check_num_quantizers


def engine_step(graphdef, params, enc, dec, audio, valid, active, reset, *, n_q, dtype):
  """One step of all slots: encodes `audio` (B, K*dr, C) and decodes the codes it gives.
  valid (B,): frames inside the stream (the rest are offline padding, masked in the quantizer);
  active (B,) bool: slots that take part; reset (B,) bool: slots made fresh first.
  Returns (enc, dec, codes (n_q, B, K), audio (B, K*dr, C))."""
  enc, codes, _ = encoder_step(graphdef, params, enc, audio, valid, active, reset, n_q=n_q, dtype=dtype)
  dec, out = decoder_step(graphdef, params, dec, codes, active, reset, dtype=dtype)
  return enc, dec, codes, out


class EngineProgram(NamedTuple):
  """The engine's programs, jitted with a graphdef bound (states donated) and shared by every
  engine of that model: `call` (`engine_step`: encode, then decode of those codes) and, for a
  pipelined engine, `encode` and `decode` on their own (encoder_step / decoder_step of
  cat_jax.streaming). `traces` counts traces per (program, slots, chunk samples, n_q, dtype):
  jit traces only when it compiles a new program, so it counts programs."""
  call: Callable
  encode: Callable
  decode: Callable
  traces: collections.Counter


def make_program(graphdef) -> EngineProgram:
  traces = collections.Counter()

  def step(params, enc, dec, audio, valid, active, reset, *, n_q, dtype):
    traces[("step", audio.shape[0], audio.shape[1], n_q, dtype)] += 1
    return engine_step(graphdef, params, enc, dec, audio, valid, active, reset, n_q=n_q, dtype=dtype)

  def encode(params, enc, audio, valid, active, reset, *, n_q, dtype):
    traces[("encode", audio.shape[0], audio.shape[1], n_q, dtype)] += 1
    enc, codes, _ = encoder_step(graphdef, params, enc, audio, valid, active, reset, n_q=n_q, dtype=dtype)
    return enc, codes

  def decode(params, dec, codes, active, reset, *, dtype):
    traces[("decode", codes.shape[1], codes.shape[2], codes.shape[0], dtype)] += 1
    return decoder_step(graphdef, params, dec, codes, active, reset, dtype=dtype)

  def jit(fn, static, donate):
    return jax.jit(fn, static_argnames=static, donate_argnames=donate)

  return EngineProgram(jit(step, ("n_q", "dtype"), ("enc", "dec")), jit(encode, ("n_q", "dtype"), ("enc",)),
                       jit(decode, ("dtype",), ("dec",)), traces)


def default_shards(capacity: int, pipeline: bool = False) -> int:
  """One shard per CPU core (pipelined: per two cores, each shard making two calls at once) when
  that divides the capacity, else 1; on accelerators 1."""
  cores = (os.cpu_count() or 1) if jax.default_backend() == "cpu" else 1
  n = max(1, cores // 2) if pipeline else cores
  return n if capacity % n == 0 else 1


class _Held(NamedTuple):
  """Pipelined: a step's codes waiting for the next step's decode, with that step's masks."""
  codes: np.ndarray  # (n_q, B, K)
  active: np.ndarray  # (B,) bool
  reset: np.ndarray  # (B,) bool
  deliveries: list  # (stream, slot, frames) whose audio the decode gives


class _Stream:
  """Host side of one stream: its samples waiting for a whole chunk, and outputs not yet pulled."""

  def __init__(self, sid: int, slot: int, channels: int):
    self.id, self.slot, self.channels = sid, slot, channels
    self.pending: collections.deque = collections.deque()  # (n, C) float32 pieces
    self.buffered = 0  # samples in `pending`
    self.pushed = 0  # samples pushed in all
    self.ended = False  # no more pushes; drain then free the slot
    self.drained = False  # every sample coded and decoded, slot freed
    self.in_flight = 0  # pipelined: chunks whose codes are still to be decoded (0 or 1)
    self.codes: list = []  # (n_q, f) int32 pieces ready to pull
    self.audio: list = []  # (C, n) float32 pieces ready to pull
    self.frames = 0  # code frames produced in all

  def take(self, n: int) -> np.ndarray:
    """The first n buffered samples (n, C), removed from the buffer (n <= buffered)."""
    parts, got = [], 0
    while got < n:
      piece = self.pending.popleft()
      need = n - got
      if piece.shape[0] > need:
        self.pending.appendleft(piece[need:])
        piece = piece[:need]
      parts.append(piece)
      got += piece.shape[0]
    self.buffered -= n
    return parts[0] if len(parts) == 1 else np.concatenate(parts, 0)


class StreamEngine:
  """Serves up to `capacity` concurrent streams of `model` (a cat_jax.CAT), `chunk_frames` token
  frames (chunk_frames * downsample_rate samples) per stream and step, `n_q` codebooks (None: all).

  Stream ids are never reused (a slot is); outputs are (n_q, frames) int32 codes and (C, samples)
  float32 audio, as `model.encode(...).audio_codes[:, b]` and `model.decode(...).audio[b]`.
  `shards`: program calls per step, run at once, each over capacity / shards slots (None: one
  per CPU core, or per two cores pipelined, when that divides the capacity, else 1; on accelerators 1).
  `pipeline`: a step encodes its chunks and, at the same time (on another thread), decodes the codes
  of the step before, so a stream's audio comes one step after its codes (codes as soon as ever).
  Encoder and decoder are then two programs whose calls overlap: on a 2-core CPU, one stream of the
  100m configuration takes 34 ms a step against 46-49 ms with the decode after the encode."""

  def __init__(self, model, capacity: int, chunk_frames: int = 1, n_q: int | None = None,
               shards: int | None = None, pipeline: bool = False):
    if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
      raise StreamError(f"capacity must be a positive integer, got {capacity!r}")
    if shards is None:
      shards = default_shards(capacity, pipeline)
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1 or capacity % shards:
      raise StreamError(f"shards must be a positive integer dividing the capacity {capacity}, got {shards!r}")
    cfg = model.config
    self.model, self.config = model, cfg
    self.capacity, self.k = int(capacity), check_chunk_frames(chunk_frames)
    self.n_q = check_num_quantizers(n_q, cfg.num_quantizers)
    self.dr, self.channels = cfg.downsample_rate, cfg.channels
    self.chunk_samples = self.k * self.dr
    self.program = model.bound("stream_engine", make_program)
    self.shards, self.shard_size = int(shards), self.capacity // int(shards)
    self._enc = [init_encoder_state(cfg, self.shard_size) for _ in range(self.shards)]
    self._dec = [init_decoder_state(cfg, self.shard_size) for _ in range(self.shards)]
    self.pipeline = bool(pipeline)
    calls = self.shards * (2 if self.pipeline else 1)  # program calls that may run at once
    self._pool = ThreadPoolExecutor(calls) if calls > 1 else None
    self._held: _Held | None = None
    self._slots: list[_Stream | None] = [None] * self.capacity
    self._reset = np.zeros((self.capacity,), bool)  # slots to make fresh at their next step
    self._streams: dict[int, _Stream] = {}
    self._next_id = 0
    self.steps = 0  # steps that ran

  # ---- bookkeeping ------------------------------------------------------------
  @property
  def traces(self) -> int:
    """Times this engine's programs (its shapes) were traced, i.e. compiled: once it has stepped,
    1 (2 pipelined: the encoder's and the decoder's), however streams join and leave."""
    n, t, q, dt = self.shard_size, self.chunk_samples, self.n_q, self.model.dtype
    keys = ([("encode", n, t, q, dt), ("decode", n, self.k, q, dt)] if self.pipeline else [("step", n, t, q, dt)])
    return sum(self.program.traces[key] for key in keys)

  @property
  def free_slots(self) -> int:
    return sum(s is None for s in self._slots)

  @property
  def streams(self) -> list[int]:
    """Ids of the streams not yet closed (including ended ones still draining or holding outputs)."""
    return list(self._streams)

  def buffered(self, sid: int) -> int:
    """Samples of stream `sid` waiting on the host for a whole chunk (or for the last step)."""
    return self._get(sid, "query").buffered

  def ready(self) -> int:
    """Streams that the next step() would serve (a whole chunk buffered, an ended stream's
    remainder, or, pipelined, codes of the last step to decode)."""
    held = self._held.deliveries if self._held is not None else []
    return len({id(s) for s, _, _ in held} | {id(s) for s in self._slots if s is not None and self._runs(s)})

  def _runs(self, s: _Stream) -> bool:
    return s.buffered >= self.chunk_samples or (s.ended and s.buffered > 0)

  def _get(self, sid, what: str) -> _Stream:
    s = self._streams.get(sid) if isinstance(sid, (int, np.integer)) and not isinstance(sid, bool) else None
    if s is None:
      state = "was closed" if isinstance(sid, (int, np.integer)) and 0 <= sid < self._next_id else "is unknown"
      raise StreamError(f"cannot {what} stream {sid!r}: it {state} (open streams: {sorted(self._streams)})")
    return s

  # ---- the API ----------------------------------------------------------------
  def open(self) -> int:
    """Starts a stream in a free slot (made fresh at its first step) and returns its id."""
    try:
      slot = self._slots.index(None)
    except ValueError:
      raise StreamError(f"stream engine is full: all {self.capacity} slots hold streams; close one "
                        "or build the engine with a larger capacity") from None
    s = _Stream(self._next_id, slot, self.channels)
    self._next_id += 1
    self._slots[slot] = s
    self._reset[slot] = True
    self._streams[s.id] = s
    return s.id

  def push(self, sid: int, samples) -> None:
    """Appends samples to stream `sid`: (N,) for a mono model or (C, N) with the model's C channels,
    N >= 0. They are coded by the steps that follow, a whole chunk at a time."""
    s = self._get(sid, "push to")
    if s.ended:
      raise StreamError(f"cannot push to stream {sid}: it was ended (end() or close())")
    try:
      x = np.asarray(samples, dtype=np.float32)
    except (TypeError, ValueError) as e:
      raise AudioError(f"samples must be a float array, got {type(samples).__name__}: {e}") from None
    c = self.channels
    if x.ndim == 1 and c == 1:
      x = x[None]
    if x.ndim != 2:
      want = "(N,) or (1, N)" if c == 1 else f"({c}, N)"
      raise AudioError(f"samples must be {want} for this {c}-channel model, got shape {x.shape}")
    if x.shape[0] != c:
      raise AudioError(f"samples have {x.shape[0]} channel(s) (shape {x.shape}) but the model takes {c}; "
                       f"pass ({c}, N)")
    if not np.isfinite(x).all():
      raise AudioError("samples contain NaN or Inf")
    n = x.shape[1]
    if n:
      s.pending.append(np.ascontiguousarray(x.T))
      s.buffered += n
      s.pushed += n

  def step(self) -> int:
    """One step of all slots (a program call per shard with a stream to serve, at once): each
    stream with a whole chunk buffered codes it (encode, then decode of its codes; pipelined, the
    decode of the codes of the step before runs at the same time), an ended stream its zero-padded
    remainder (then its slot is freed). Returns the number of streams served (0: nothing to do, no
    call made)."""
    b, k, dr = self.capacity, self.k, self.dr
    run = [s is not None and self._runs(s) for s in self._slots]
    held, self._held = self._held, None
    if not any(run) and held is None:
      return 0
    audio = np.zeros((b, self.chunk_samples, self.channels), np.float32)
    valid = np.zeros((b,), np.int32)
    emit = np.zeros((b,), np.int64)
    for i, s in enumerate(self._slots):
      if not run[i]:
        continue
      n = min(s.buffered, self.chunk_samples)
      audio[i, :n] = s.take(n)
      valid[i] = n // dr  # frames wholly inside the stream; a partial last frame is offline padding
      # v1 codes a partial last frame (its quantizer input masked); v2 yields no frame for it
      emit[i] = n // dr if self.config.v2 else -(-n // dr)
    active = np.asarray(run, bool)
    running = [(i, s) for i, s in enumerate(self._slots) if run[i]]
    reset = np.zeros((b,), bool)
    codes = np.zeros((self.n_q, b, k), np.int32)
    out = np.zeros_like(audio)
    n = self.shard_size
    params, dtype, prog = self.model.coding_params, self.model.dtype, self.program

    def part(i):  # shard i: slots [i * n, (i + 1) * n)
      return slice(i * n, (i + 1) * n)

    def take_resets(i):
      reset[part(i)] = self._reset[part(i)]
      self._reset[part(i)] = False  # consumed by this call; a shard not called keeps its resets

    def coupled(i):
      take_resets(i)
      p = part(i)
      self._enc[i], self._dec[i], c, a = prog.call(params, self._enc[i], self._dec[i], audio[p], valid[p], active[p],
                                                   reset[p], n_q=self.n_q, dtype=dtype)
      codes[:, p], out[p] = np.asarray(c), np.asarray(a)

    def encode(i):
      take_resets(i)
      p = part(i)
      self._enc[i], c = prog.encode(params, self._enc[i], audio[p], valid[p], active[p], reset[p],
                                    n_q=self.n_q, dtype=dtype)
      codes[:, p] = np.asarray(c)

    def decode(i):  # the codes of the step before, with that step's active and reset masks
      p = part(i)
      self._dec[i], a = prog.decode(params, self._dec[i], held.codes[:, p], held.active[p], held.reset[p], dtype=dtype)
      out[p] = np.asarray(a)

    busy = [i for i in range(self.shards) if active[part(i)].any()]
    if self.pipeline:
      calls = [functools.partial(encode, i) for i in busy]
      if held is not None:
        calls += [functools.partial(decode, i) for i in range(self.shards) if held.active[part(i)].any()]
    else:
      calls = [functools.partial(coupled, i) for i in busy]
    if self._pool is None or len(calls) == 1:
      for c in calls:
        c()
    else:
      list(self._pool.map(lambda c: c(), calls))
    self.steps += 1
    deliver = []
    for i, s in running:
      f = int(emit[i])
      if f:
        s.codes.append(codes[:, i, :f])
        s.frames += f
        if self.pipeline:
          deliver.append((s, i, f))
          s.in_flight += 1
        else:
          s.audio.append(out[i, :f * dr].T)
    decoded = held.deliveries if held is not None else []  # pipelined: the audio of the step before
    for s, slot, f in decoded:
      s.audio.append(out[slot, :f * dr].T)
      s.in_flight -= 1
    served = {s.id: s for _, s in running} | {s.id: s for s, _, _ in decoded}
    for s in served.values():
      self._finish(s)
    if self.pipeline and busy:
      self._held = _Held(codes, active, reset, deliver)
    return len(served)

  def pull_codes(self, sid: int) -> np.ndarray:
    """Codes of stream `sid` ready since the last pull: (n_q, frames) int32 (frames may be 0)."""
    s = self._get(sid, "pull from")
    out = np.concatenate(s.codes, -1) if s.codes else np.zeros((self.n_q, 0), np.int32)
    s.codes = []
    return out

  def pull_audio(self, sid: int) -> np.ndarray:
    """Decoded audio of stream `sid` ready since the last pull: (C, samples) float32."""
    s = self._get(sid, "pull from")
    out = np.concatenate(s.audio, -1) if s.audio else np.zeros((self.channels, 0), np.float32)
    s.audio = []
    return out

  def end(self, sid: int) -> None:
    """Marks stream `sid` complete without waiting: later steps code what it still holds (the last
    partial frame padded like offline) and then free its slot; its outputs stay until close()."""
    s = self._get(sid, "end")
    s.ended = True
    self._finish(s)

  def done(self, sid: int) -> bool:
    """Whether an ended stream has coded (and decoded) all its samples; its slot is then free."""
    return self._get(sid, "query").drained

  def close(self, sid: int) -> tuple[np.ndarray, np.ndarray]:
    """Ends stream `sid`, runs steps until it has coded everything it was given (other streams are
    served by those steps too), frees its slot and forgets it. Returns its codes and audio not yet
    pulled: (n_q, frames) int32, (C, samples) float32."""
    s = self._get(sid, "close")
    self.end(sid)
    while not s.drained:
      self.step()
    codes, audio = self.pull_codes(sid), self.pull_audio(sid)
    del self._streams[sid]
    return codes, audio

  def _finish(self, s: _Stream) -> None:
    """Frees the slot of an ended stream with nothing left to encode (the next stream in it starts
    fresh); the stream is drained once its last codes are decoded too."""
    if not (s.ended and s.buffered == 0) or s.drained:
      return
    if self._slots[s.slot] is s:
      self._slots[s.slot] = None
      self._reset[s.slot] = False  # the next stream in the slot sets it again
    s.drained = s.in_flight == 0
