"""One way to load a codec: `load_codec(path)` reads any of the three places a CAT lives and,
given the architecture the caller expects, checks it.

- a reference-layout directory: config.json + model.safetensors (or a sharded index), what
  `save_pretrained` / `cat-jax export` write and the PyTorch reference reads;
- an Orbax params checkpoint: config.json + params/ (`cat_jax.checkpoint`, `cat-jax convert`);
- a training run's WORKDIR: checkpoints/<step>/ (`cat_jax.train.export.restore_codec`).
"""
from __future__ import annotations

import os

from cat_jax.checkpoint import is_orbax_params_dir, load_params
from cat_jax import hub
from cat_jax.codec import CAT, as_dtype
from cat_jax.config import CATConfig
from cat_jax.errors import CheckpointError
from cat_jax.train.export import restore_codec

LAYOUTS = ("reference", "orbax", "run")


def layout(path: str | os.PathLike) -> str:
  """Which of LAYOUTS `path` holds: an Orbax params checkpoint (config.json and params/), a
  training run (checkpoints/ and no config.json), else the reference layout."""
  path = os.fspath(path)
  if is_orbax_params_dir(path):
    return "orbax"
  if os.path.isdir(os.path.join(path, "checkpoints")) and not os.path.exists(os.path.join(path, "config.json")):
    return "run"
  return "reference"


def load_codec(path: str | os.PathLike | None, *, expect: CATConfig | None = None, kind: str | None = None,
               step: int | None = None, ema: bool = False, dtype=None, param_dtype=None,
               revision: str | None = None, cache_dir: str | os.PathLike | None = None) -> CAT:
  """A `CAT` from `path`, whose layout is `kind` (one of LAYOUTS; default: `layout(path)`).

  expect: the architecture the caller needs (e.g. a recipe's model for `init_from`); another one
  is a CheckpointError naming the fields that differ. step / ema: which checkpoint of a run, and
  its EMA weights instead of the trained ones (runs only). dtype: the compute dtype of coding;
  param_dtype: the storage dtype of the weights (float32 or bfloat16).
  A Hugging Face Hub id ("ORG/NAME", optionally "ORG/NAME@REVISION") that is not a local path is
  fetched (config.json and safetensors only) or read from the Hub cache (`cat_jax.hub`), pinned to
  `revision`, and loads as a reference layout.
  """
  if path is None:
    raise CheckpointError("--model DIR is required")
  path = hub.resolve_path(path, revision, cache_dir)
  kind = layout(path) if kind is None else kind
  if kind not in LAYOUTS:
    raise CheckpointError(f"unknown model layout {kind!r}; expected one of {LAYOUTS}")
  if kind != "run" and (step is not None or ema):
    raise CheckpointError(f"{path} is not a training run: step and ema choose a run's checkpoint")
  if kind == "orbax":
    config, graphdef, params = load_params(path)
    model = CAT(config, graphdef, params, as_dtype(dtype))
  elif kind == "run":
    model, _ = restore_codec(path, step, ema)
    model.dtype = as_dtype(dtype)
  else:
    model = CAT.from_pretrained(path, dtype=dtype, param_dtype=param_dtype)
  if param_dtype is not None and kind != "reference":
    model = model.astype(param_dtype)
  if expect is not None and model.config != expect:
    raise CheckpointError(f"{path} holds another architecture than expected: {architecture_diff(model.config, expect)}")
  return model


def architecture_diff(got: CATConfig, want: CATConfig, limit: int = 3) -> str:
  """The first `limit` fields where two configs differ, as 'field: got here, want expected'."""
  diffs = list(_diff(_fields(got), _fields(want), ""))
  if not diffs:
    return "the configs differ"
  text = "; ".join(f"{k}: {a!r} here, {b!r} expected" for k, a, b in diffs[:limit])
  return text + (f" (and {len(diffs) - limit} more)" if len(diffs) > limit else "")


def _fields(config: CATConfig) -> dict:
  """The architecture fields of a config (its JSON form without the carried-along extras)."""
  d = config.to_dict()
  keys = ("sampling_rate", "downsample_rate", "causal_transformer_context_duration", "number_channels",
          "enable_channel_interleave", "encoder_kwargs", "decoder_kwargs", "reversed_decoder_kwargs",
          "quantizer_type", "quantizer_kwargs")
  return {k: d.get(k) for k in keys}


def _diff(a, b, where: str):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in sorted(set(a) | set(b)):
      yield from _diff(a.get(k), b.get(k), f"{where}.{k}" if where else k)
  elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
    for i, (x, y) in enumerate(zip(a, b)):
      yield from _diff(x, y, f"{where}[{i}]")
  elif a != b:
    yield where, (f"{len(a)} modules" if isinstance(a, list) else a), (f"{len(b)} modules" if isinstance(b, list) else b)
