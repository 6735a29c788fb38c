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

from cat_jax import convert, streaming
from cat_jax.config import CATConfig
from cat_jax.errors import CheckpointError
from cat_jax.model.cat import CATModel
from cat_jax.model.transformer import Transformer
from cat_jax.validation import check_audio, check_codes, check_num_quantizers, mask_lengths


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

def encode_fn(graphdef, params, audio, lengths, n_q=None, *, dtype=None):
  """audio (B, T, C), T a multiple of downsample_rate -> codes (n_q, B, F), frame lengths, hidden (B, F, D)."""
  return nnx.merge(graphdef, params).encode(audio, lengths, n_q, dtype=dtype)


def decode_fn(graphdef, params, codes, frame_lengths, *, dtype=None):
  """codes (n_q, B, F) -> audio (B, F * downsample_rate, C), sample lengths."""
  return nnx.merge(graphdef, params).decode(codes, frame_lengths, dtype=dtype)


def offline_coders(graphdef):
  """(encode_fn, decode_fn) jitted with `graphdef` bound."""
  return (jax.jit(functools.partial(encode_fn, graphdef), static_argnames=("n_q", "dtype")),
          jax.jit(functools.partial(decode_fn, graphdef), static_argnames=("dtype",)))


def on_one_cpu(params) -> bool:
  """Whether every parameter lives on one and the same CPU device (where `unrolled` pays off)."""
  devices = {d for x in jax.tree.leaves(params) for d in x.devices()}
  return len(devices) == 1 and next(iter(devices)).platform == "cpu"


def unrolled(graphdef, params):
  """(graphdef, params) of the same model with every Transformer's stacked layers turned into
  per-layer modules over zero-copy views of the stack (on a single CPU device; see
  `transformer.unstack_layers`), for offline coding: XLA:CPU copies each layer's weight slice out
  of the stack at every scan step, an unrolled loop reads the views in place. Accelerators read
  scanned slices in place, so CAT uses this on one CPU device only (`CAT.coding`). Every coding
  function takes the pair as it takes the stacked one."""
  model = nnx.merge(graphdef, params)
  for t in [node for _, node in nnx.iter_graph(model) if isinstance(node, Transformer)]:
    t.unroll()
  return nnx.split(model)


DTYPES = {"float32": jnp.float32, "fp32": jnp.float32, "f32": jnp.float32,
          "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}


def as_dtype(d):
  """None, a name in DTYPES or a dtype -> None or jnp.float32 / jnp.bfloat16 (a CATError otherwise)."""
  if d is None:
    return None
  if isinstance(d, str):
    if d.lower() not in DTYPES:
      raise CheckpointError(f"unknown dtype {d!r}; expected float32 or bfloat16")
    return DTYPES[d.lower()]
  if jnp.dtype(d) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise CheckpointError(f"unsupported dtype {jnp.dtype(d).name}; expected float32 or bfloat16")
  return jnp.dtype(d).type


def _to_device(pure: dict, store) -> dict:
  """numpy params -> jax arrays of dtype `store`, leaf by leaf, dropping each host copy as it goes."""
  out = {}
  for k in list(pure):
    v = pure.pop(k)
    # device_put copies (jnp.asarray would alias the numpy buffer on CPU, and jax copies it again
    # on first use: two copies of the weights at once)
    out[k] = _to_device(v, store) if isinstance(v, dict) else jax.device_put(np.asarray(v, store)).block_until_ready()
    del v
  return out


class _LazyTensor:
  """One safetensors tensor, read when numpy asks for it (`np.asarray`)."""

  def __init__(self, handle, name: str):
    self.handle, self.name = handle, name

  def __array__(self, dtype=None, copy=None):
    a = self.handle.get_tensor(self.name)
    return a if dtype is None else a.astype(dtype, copy=False)


def _lazy_safetensors_dir(path: str) -> dict:
  """{name: lazy tensor} of a model directory (model.safetensors or a sharded index): the weights
  are read one tensor at a time while converting, not all at once."""
  import json

  from safetensors import safe_open
  single, index = os.path.join(path, convert.SAFETENSORS), os.path.join(path, convert.INDEX)
  try:
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      files = sorted(set(weight_map.values()))
    elif os.path.exists(single):
      weight_map, files = None, [convert.SAFETENSORS]
    else:
      raise CheckpointError(f"{path} has neither {convert.SAFETENSORS} nor {convert.INDEX}")
    tensors = {}
    for fname in files:
      handle = safe_open(os.path.join(path, fname) if weight_map is None else convert.shard_path(path, fname, index),
                         framework="np")  # an index's shard names stay inside the model folder
      tensors.update({k: _LazyTensor(handle, k) for k in handle.keys()})
  except CheckpointError:
    raise
  except Exception as e:  # OSError, ValueError, KeyError, JSON errors, safetensors' own
    raise CheckpointError(f"cannot read weights in {path}: {type(e).__name__}: {e}") from None
  if weight_map is not None:
    missing = sorted(set(weight_map) - set(tensors))
    if missing:
      raise CheckpointError(f"{index} lists tensors no shard holds, e.g. {missing[:3]}")
  return tensors


class CAT:
  """A CAT codec: config + (graphdef, params), with encode/decode/save like the reference."""

  def __init__(self, config: CATConfig, graphdef, params, dtype=None):
    self.config = config
    self.graphdef = graphdef
    self.params = params
    self.dtype = dtype
    self._bound = {}  # (name, unrolled) -> make(coding graphdef), see `bound`

  @property
  def params(self):
    """The parameter pytree (nnx.State, Transformer layers stacked)."""
    return self._params

  @params.setter
  def params(self, value):
    self._params, self._coding = value, None

  def coding(self) -> tuple[bool, Any, Any]:
    """(unrolled, graphdef, params) that coding runs, offline and streaming, chosen once per params:
    the layers unrolled over zero-copy views on a single CPU device (`unrolled`), stacked elsewhere."""
    if self._coding is None:
      unroll = on_one_cpu(self._params)
      self._coding = (unroll, *(unrolled(self.graphdef, self._params) if unroll else (self.graphdef, self._params)))
    return self._coding

  @property
  def coding_params(self):
    """The params that the programs of `bound` take."""
    return self.coding()[2]

  def bound(self, name: str, make):
    """`make(graphdef)` of the coding graphdef, built once per model and layout and kept: jitted
    coding functions (offline, streaming steps, the stream-engine program) are bound to it, so it
    is never hashed as a static argument (milliseconds a call). They take `coding_params`."""
    unroll, graphdef, _ = self.coding()
    if (name, unroll) not in self._bound:
      self._bound[(name, unroll)] = make(graphdef)
    return self._bound[(name, unroll)]

  # ---- construction ---------------------------------------------------------
  @classmethod
  def from_config(cls, config: CATConfig | dict | str, seed: int = 0, dtype=None) -> "CAT":
    """Random initialisation (jitted, so a large model is built without per-op overhead)."""
    config = _as_config(config)
    graphdef, _ = abstract_model(config)
    init = jax.jit(lambda key: nnx.split(CATModel(config, key=key))[1])
    return cls(config, graphdef, init(jax.random.key(seed)), dtype)

  @classmethod
  def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None,
                      cache_dir: str | os.PathLike | None = None, *, dtype=None, param_dtype=None,
                      token: str | bool | None = None, local_files_only: bool | None = None) -> "CAT":
    """Loads a reference-layout directory (config.json + model.safetensors or a sharded index), or
    a Hugging Face Hub id such as "OpenMOSS-Team/MOSS-Audio-Tokenizer" (optionally "...@REV").

    Hub ids go through `cat_jax.hub.resolve`: only config.json and the safetensors are fetched
    (never remote code); `revision` pins a branch, tag or commit; `cache_dir` (default: the standard
    Hub cache), HF_HUB_OFFLINE / `local_files_only` (only the cache) and `token` as in huggingface_hub.
    param_dtype: the storage dtype of the weights ("float32", default, or "bfloat16": half the
    memory); dtype: the compute dtype of coding (None: float32 arithmetic, or "bfloat16"). Tensors
    are read one at a time, so loading needs about one float32 copy of the weights on the host.
    """
    from cat_jax import hub
    path = hub.resolve_path(name_or_path, revision, cache_dir, token=token, local_files_only=local_files_only)
    if not os.path.isdir(path):
      raise CheckpointError(f"model directory not found: {path}")
    config = CATConfig.from_json(os.path.join(path, "config.json"))
    return cls.from_torch_state_dict(config, _lazy_safetensors_dir(path), dtype, param_dtype=param_dtype)

  @classmethod
  def from_torch_state_dict(cls, config: CATConfig, tensors: dict, dtype=None, *, param_dtype=None) -> "CAT":
    graphdef, abstract = abstract_model(config)
    pure = convert.torch_to_params(config, tensors, param_shapes(abstract))
    del tensors
    store = as_dtype(param_dtype) or jnp.float32
    nnx.replace_by_pure_dict(abstract, _to_device(pure, store))
    if dtype is None and config.v2 and config.compute_dtype == "bf16":
      dtype = "bfloat16"  # v2's compute_dtype (or codec_weight_dtype): encoder/decoder in bf16, quantizer f32
    return cls(config, graphdef, abstract, as_dtype(dtype))

  def astype(self, param_dtype) -> "CAT":
    """The same codec with its weights stored as `param_dtype` ("float32" or "bfloat16")."""
    store = as_dtype(param_dtype) or jnp.float32
    return CAT(self.config, self.graphdef, jax.tree.map(lambda x: x.astype(store), self.params), self.dtype)

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
             chunk_duration: float | None = None, progress=None) -> EncoderOutput:
    """audio (B, C, T) or (B, T) -> codes (n_q, B, frames), lengths (B,), hidden (B, D, frames).
    progress: with chunk_duration, wraps the iterable of chunks (e.g. a tqdm bar)."""
    cfg = self.config
    x = check_audio(audio, cfg.channels, single_item=cfg.v2)
    b, c, t = x.shape
    lengths = mask_lengths(padding_mask, b, t)
    n_q = check_num_quantizers(num_quantizers, cfg.num_quantizers)
    if cfg.v2:  # v2: items cut to their lengths, zero-padded to the longest (CAT_SPEC_V2.md section 3)
      t = max(int(lengths.max()), 1)
      x = np.where(np.arange(t)[None, None] < lengths[:, None, None], x[:, :, :t], 0.0).astype(np.float32)
    if chunk_duration is not None:  # exact streaming, chunk by chunk
      codes, flen, hidden = streaming.encode_frames(self, x, lengths, n_q, streaming.chunk_frames(cfg, chunk_duration),
                                                    progress)
      return EncoderOutput(codes.astype(np.int32), flen, hidden.transpose(0, 2, 1))
    dr = cfg.downsample_rate
    frames = -(-t // dr)
    fb = bucket(frames) if cfg.causal else frames  # non-causal stages would attend to the padding
    xp = np.zeros((b, fb * dr, c), np.float32)
    xp[:, :t] = x.transpose(0, 2, 1)
    encode, _ = self.bound("offline", offline_coders)
    codes, flen, hidden = encode(self.coding_params, xp, jnp.asarray(lengths, jnp.int32), n_q=n_q, dtype=self.dtype)
    if cfg.v2:  # v2 trims codes and hidden states to the largest valid frame count
      flen = np.asarray(flen)
      frames = int(flen.max())
    return EncoderOutput(np.asarray(codes)[:, :, :frames], np.asarray(flen),
                         np.asarray(hidden)[:, :frames].transpose(0, 2, 1))

  def decode(self, audio_codes, padding_mask=None, num_quantizers: int | None = None,
             chunk_duration: float | None = None, progress=None) -> DecoderOutput:
    """codes (n_q, B, frames) or (n_q, frames) -> audio (B, C, frames * downsample_rate), lengths.
    progress: with chunk_duration, wraps the iterable of chunks (e.g. a tqdm bar)."""
    codes = check_codes(audio_codes, self.config, num_quantizers)
    n_q, b, f = codes.shape
    flen = mask_lengths(padding_mask, b, f)
    if self.config.v2:  # v2: each item's codes cut to its length, re-padded with code 0 to the longest
      f = max(int(flen.max()), 1)
      codes = np.where(np.arange(f)[None, None] < flen[None, :, None], codes[:, :, :f], 0).astype(np.int32)
    if chunk_duration is not None:  # exact streaming, chunk by chunk
      audio = streaming.decode_frames(self, codes, streaming.chunk_frames(self.config, chunk_duration), progress)
      return DecoderOutput(audio.transpose(0, 2, 1), flen * self.config.downsample_rate)
    fb = bucket(f) if self.config.causal else f
    cp = np.zeros((n_q, b, fb), np.int32)
    cp[:, :, :f] = codes
    _, decode = self.bound("offline", offline_coders)
    audio, alen = decode(self.coding_params, cp, jnp.asarray(flen, jnp.int32), dtype=self.dtype)
    audio = np.asarray(audio)[:, : f * self.config.downsample_rate].transpose(0, 2, 1)
    return DecoderOutput(audio, np.asarray(alen))


def _as_config(config: Any) -> CATConfig:
  if isinstance(config, CATConfig):
    return config
  if isinstance(config, dict):
    return CATConfig.from_dict(config)
  return CATConfig.from_json(config)
