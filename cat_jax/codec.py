"""`CAT`: the user-facing codec, mirroring the reference's API names.

The NNX model is split once into (graphdef, params); encode/decode are pure jitted
functions of the params. Input lengths are bucketed (few compiled shapes): the model is
causal, so zero-padding past the end never changes the frames that are returned.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cat_jax import convert
from cat_jax.config import CATConfig
from cat_jax.errors import AudioError, CheckpointError, CodesError
from cat_jax.model.cat import CATModel
from cat_jax.model.transformer import unstack_layers


@dataclasses.dataclass
class EncoderOutput:
  audio_codes: np.ndarray  # (n_q, B, frames) int32
  audio_codes_lengths: np.ndarray  # (B,)
  encoder_hidden_states: np.ndarray  # (B, D, frames)


@dataclasses.dataclass
class DecoderOutput:
  audio: np.ndarray  # (B, C, samples)
  audio_lengths: np.ndarray  # (B,)


def bucket(n: int) -> int:
  """Smallest size >= n of the form m * 2^e, m in 8..15 (<= 12.5% padding); powers of 2 below 16."""
  if n <= 16:
    return 1 << max(0, (n - 1).bit_length())
  e = n.bit_length() - 4
  return -(-n // (1 << e)) * (1 << e)


def abstract_model(config: CATConfig, remat: bool = False):
  """(graphdef, abstract params) without allocating any weights."""
  model = nnx.eval_shape(lambda: CATModel(config, key=jax.random.key(0), remat=remat))
  return nnx.split(model)


def param_shapes(abstract_params) -> dict[tuple, tuple[int, ...]]:
  """{path: shape} of every parameter (for the conversion table)."""
  pure = nnx.to_pure_dict(abstract_params)
  return {tuple(p): tuple(x.shape) for p, x in _flatten(pure)}


def _flatten(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


# ---- pure functions (jit/shard them as you like) -----------------------------------

def encode_fn(graphdef, params, audio, lengths, n_q=None, dtype=None, layers=None):
  """audio (B, T, C), T a multiple of downsample_rate -> codes (n_q, B, F), frame lengths, hidden (B, F, D).
  `layers`: optional `inference_layers(params)["encoder"]` to run the Transformer layers unrolled."""
  return nnx.merge(graphdef, params).encode(audio, lengths, n_q, dtype, layers)


def decode_fn(graphdef, params, codes, frame_lengths, dtype=None, layers=None):
  """codes (n_q, B, F) -> audio (B, F * downsample_rate, C), sample lengths."""
  return nnx.merge(graphdef, params).decode(codes, frame_lengths, dtype, layers)


def inference_layers(params) -> dict | None:
  """{"encoder"/"decoder": {module index: per-layer views}} of the Transformer weights for unrolled
  offline coding, on a single CPU device only (zero-copy there; accelerators read scanned weight
  slices in place). None elsewhere."""
  devices = {d for x in jax.tree.leaves(params) for d in x.devices()}
  if len(devices) != 1 or next(iter(devices)).platform != "cpu":
    return None
  return {part: {i: unstack_layers(m["transformer"]["layers"]) for i, m in params[part].items() if "transformer" in m}
          for part in ("encoder", "decoder")}


class CAT:
  """A CAT codec: config + (graphdef, params), with encode/decode/save like the reference."""

  def __init__(self, config: CATConfig, graphdef, params, dtype=None):
    self.config = config
    self.graphdef = graphdef
    self.params = params
    self.dtype = dtype
    self._encode = jax.jit(functools.partial(encode_fn, graphdef), static_argnames=("n_q", "dtype"))
    self._decode = jax.jit(functools.partial(decode_fn, graphdef), static_argnames=("dtype",))

  @property
  def params(self):
    """The parameter pytree (nnx.State, Transformer layers stacked)."""
    return self._params

  @params.setter
  def params(self, value):
    self._params, self._layers = value, None

  def layer_views(self, part: str):
    """`inference_layers(params)[part]` ("encoder"/"decoder"), made once; None off a single CPU device."""
    if self._layers is None:
      self._layers = inference_layers(self._params) or {}
    return self._layers.get(part)

  # ---- construction ---------------------------------------------------------
  @classmethod
  def from_config(cls, config: CATConfig | dict | str, seed: int = 0, dtype=None) -> "CAT":
    """Random initialisation (jitted, so a large model is built without per-op overhead)."""
    config = _as_config(config)
    graphdef, _ = abstract_model(config)
    init = jax.jit(lambda key: nnx.split(CATModel(config, key=key))[1])
    return cls(config, graphdef, init(jax.random.key(seed)), dtype)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike, dtype=None) -> "CAT":
    """Loads a reference-layout directory: config.json + model.safetensors (or a sharded index)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise CheckpointError(f"model directory not found: {path}")
    config = CATConfig.from_json(os.path.join(path, "config.json"))
    return cls.from_torch_state_dict(config, convert.read_safetensors_dir(path), dtype)

  @classmethod
  def from_torch_state_dict(cls, config: CATConfig, tensors: dict, dtype=None) -> "CAT":
    graphdef, abstract = abstract_model(config)
    pure = convert.torch_to_params(config, tensors, param_shapes(abstract))
    nnx.replace_by_pure_dict(abstract, jax.tree.map(jnp.asarray, pure))
    return cls(config, graphdef, abstract, dtype)

  def state_dict(self) -> dict[str, np.ndarray]:
    """Reference-named float32 tensors."""
    return convert.params_to_torch(self.config, nnx.to_pure_dict(self.params))

  def save_pretrained(self, path: str | os.PathLike, max_shard_size: int | None = None) -> list[str]:
    """Writes config.json + safetensors (sharded past `max_shard_size` bytes) in the reference layout."""
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    self.config.to_json(os.path.join(path, "config.json"))
    return ["config.json"] + convert.write_safetensors_dir(path, self.state_dict(), max_shard_size)

  @property
  def num_params(self) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))

  # ---- coding -----------------------------------------------------------------
  def encode(self, audio, padding_mask=None, num_quantizers: int | None = None,
             chunk_duration: float | None = None) -> EncoderOutput:
    """audio (B, C, T) or (B, T) -> codes (n_q, B, frames), lengths (B,), hidden (B, D, frames)."""
    cfg = self.config
    x = self._check_audio(audio)
    b, c, t = x.shape
    lengths = _lengths(padding_mask, b, t, "padding_mask")
    n_q = self._check_nq(num_quantizers, cfg.num_quantizers)
    if chunk_duration is not None:
      from cat_jax.streaming import encode_chunked
      return encode_chunked(self, x, lengths, n_q, chunk_duration)
    dr = cfg.downsample_rate
    frames = -(-t // dr)
    fb = bucket(frames) if cfg.causal else frames  # non-causal stages would attend to the padding
    xp = np.zeros((b, fb * dr, c), np.float32)
    xp[:, :t] = x.transpose(0, 2, 1)
    codes, flen, hidden = self._encode(self.params, xp, jnp.asarray(lengths, jnp.int32), n_q=n_q, dtype=self.dtype,
                                      layers=self.layer_views("encoder"))
    return EncoderOutput(np.asarray(codes)[:, :, :frames], np.asarray(flen),
                         np.asarray(hidden)[:, :frames].transpose(0, 2, 1))

  def decode(self, audio_codes, padding_mask=None, num_quantizers: int | None = None,
             chunk_duration: float | None = None) -> DecoderOutput:
    """codes (n_q, B, frames) or (n_q, frames) -> audio (B, C, frames * downsample_rate), lengths."""
    codes = self._check_codes(audio_codes, num_quantizers)
    n_q, b, f = codes.shape
    flen = _lengths(padding_mask, b, f, "padding_mask")
    if chunk_duration is not None:
      from cat_jax.streaming import decode_chunked
      return decode_chunked(self, codes, flen, chunk_duration)
    fb = bucket(f) if self.config.causal else f
    cp = np.zeros((n_q, b, fb), np.int32)
    cp[:, :, :f] = codes
    audio, alen = self._decode(self.params, cp, jnp.asarray(flen, jnp.int32), dtype=self.dtype,
                               layers=self.layer_views("decoder"))
    audio = np.asarray(audio)[:, : f * self.config.downsample_rate].transpose(0, 2, 1)
    return DecoderOutput(audio, np.asarray(alen))

  # ---- input checks -----------------------------------------------------------
  def _check_audio(self, audio) -> np.ndarray:
    try:
      x = np.asarray(audio, dtype=np.float32)
    except (TypeError, ValueError) as e:
      raise AudioError(f"audio must be a float array, got {type(audio).__name__}: {e}") from None
    if x.ndim == 2:
      x = x[:, None, :]
    if x.ndim != 3:
      raise AudioError(f"audio must be (B, C, T) or (B, T), got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[2] == 0:
      raise AudioError(f"audio is empty (shape {x.shape})")
    if x.shape[1] != self.config.channels:
      raise AudioError(f"audio has {x.shape[1]} channel(s) but the model takes {self.config.channels}")
    if not np.isfinite(x).all():
      raise AudioError("audio contains NaN or Inf samples")
    return x

  @staticmethod
  def _check_nq(n: int | None, limit: int) -> int:
    if n is None:
      return limit
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= limit:
      raise CodesError(f"num_quantizers must be an integer in 1..{limit}, got {n!r}")
    return int(n)

  def _check_codes(self, codes, num_quantizers) -> np.ndarray:
    c = np.asarray(codes)
    if not np.issubdtype(c.dtype, np.integer):
      raise CodesError(f"codes must be integers, got dtype {c.dtype}")
    if c.ndim == 2:
      c = c[:, None, :]
    if c.ndim != 3 or 0 in c.shape:
      raise CodesError(f"codes must be (n_q, B, frames) or (n_q, frames) and non-empty, got shape {c.shape}")
    if c.shape[0] > self.config.num_quantizers:
      raise CodesError(f"codes have {c.shape[0]} quantizers; the model has {self.config.num_quantizers}")
    if num_quantizers is not None:
      n = self._check_nq(num_quantizers, self.config.num_quantizers)
      if n > c.shape[0]:
        raise CodesError(f"num_quantizers={n} but the codes hold only {c.shape[0]} quantizers")
      c = c[:n]
    k = self.config.codebook_size
    if c.min() < 0 or c.max() >= k:
      raise CodesError(f"codes must lie in [0, {k}), found values in [{c.min()}, {c.max()}]")
    return c.astype(np.int32)


def _lengths(mask, b: int, t: int, what: str) -> np.ndarray:
  if mask is None:
    return np.full((b,), t, np.int64)
  m = np.asarray(mask)
  if m.shape != (b, t):
    raise AudioError(f"{what} must have shape {(b, t)}, got {m.shape}")
  return m.astype(bool).sum(-1).astype(np.int64)


def _as_config(config: Any) -> CATConfig:
  if isinstance(config, CATConfig):
    return config
  if isinstance(config, dict):
    return CATConfig.from_dict(config)
  return CATConfig.from_json(config)
