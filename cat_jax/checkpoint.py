"""Orbax checkpoints of CAT parameters: `DIR/config.json` + `DIR/params/` (an Orbax PyTree).

This is the JAX-native twin of the reference layout: `cat-jax convert` moves a model between
the two. Restoring takes an optional sharding per parameter so a model can land directly
on a device mesh. (Training runs' checkpoints are cat_jax.train.checkpoints; `cat_jax.loader`
reads every layout.)
"""
from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

from cat_jax.codec import abstract_model
from cat_jax.config import CATConfig
from cat_jax.errors import CheckpointError

PARAMS = "params"


def is_orbax_params_dir(path: str) -> bool:
  return os.path.isdir(os.path.join(path, PARAMS)) and os.path.exists(os.path.join(path, "config.json"))


def save_params(path: str | os.PathLike, config: CATConfig, params) -> None:
  """Writes config.json and the params (an nnx.State or pure dict) with Orbax."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  os.makedirs(path, exist_ok=True)
  config.to_json(os.path.join(path, "config.json"))
  pure = params if isinstance(params, dict) else nnx.to_pure_dict(params)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(os.path.join(path, PARAMS), pure, force=True)
  ckptr.wait_until_finished()


def load_params(path: str | os.PathLike, shardings=None):
  """Reads (config, graphdef, params nnx.State). `shardings`: optional pytree like the pure params."""
  import orbax.checkpoint as ocp
  path = os.path.abspath(os.fspath(path))
  if not is_orbax_params_dir(path):
    raise CheckpointError(f"{path} is not a cat_jax params checkpoint (needs config.json and {PARAMS}/)")
  config = CATConfig.from_json(os.path.join(path, "config.json"))
  graphdef, abstract = abstract_model(config)
  target = nnx.to_pure_dict(abstract)
  if shardings is not None:
    target = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), target, shardings)
  try:
    restored = ocp.StandardCheckpointer().restore(os.path.join(path, PARAMS), target)
  except Exception as e:  # Orbax raises many types for truncated or mismatched files
    raise CheckpointError(f"cannot restore params from {path}: {type(e).__name__}: {str(e)[:300]}") from None
  bad = [a.shape for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(target)) if a.shape != b.shape]
  if bad:
    raise CheckpointError(f"params in {path} do not match config.json (shapes {bad[:3]})")
  from cat_jax.convert import check_weight
  for where, leaf in jax.tree_util.tree_leaves_with_path(restored):
    try:
      check_weight(jax.tree_util.keystr(where), leaf)
    except CheckpointError as e:
      raise CheckpointError(f"params in {path}: {e}") from None
  nnx.replace_by_pure_dict(abstract, restored)
  return config, graphdef, abstract


def params_equal(a, b) -> bool:
  """Bitwise equality of two param trees (a convenience for tests and tools)."""
  la, lb = jax.tree.leaves(nnx.to_pure_dict(a)), jax.tree.leaves(nnx.to_pure_dict(b))
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))
