"""Device meshes and the one table that maps logical axis names onto mesh axes.

Every parameter carries logical `axes` metadata (see cat_jax.model.layers.param); these rules
turn them into PartitionSpecs, so changing the parallelism is a config change only. A
dimension that a mesh axis does not divide stays replicated (tiny models still run on
any mesh).
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cat_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or tuple of axes, or None = replicated). First match wins.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("vocab", "tensor"),
    ("conv_out", "tensor"),
    ("conv_in", "fsdp"),
    ("io", None), ("qkv", None), ("head_dim", None), ("gate", None), ("layers", None),
    ("quantizers", None), ("rvq", None), ("code", None), ("codebook", None),
    ("kernel_h", None), ("kernel_w", None),
)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, *, dcn_data: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh with Auto axes; -1 takes the remaining devices.

  `dcn_data` > 1 spreads the data axis over slices (multi-pod): data-parallel traffic then
  crosses the slower data-centre network, everything else stays inside a slice.
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  sizes = [data, fsdp, tensor]
  if sizes.count(-1) > 1:
    raise ConfigError("at most one mesh axis may be -1")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if n % known:
      raise ConfigError(f"{n} devices cannot be split into mesh axes {sizes}")
    sizes[sizes.index(-1)] = n // known
  if int(np.prod(sizes)) != n:
    raise ConfigError(f"mesh data={sizes[0]} x fsdp={sizes[1]} x tensor={sizes[2]} needs "
                      f"{int(np.prod(sizes))} devices, but {n} are present")
  auto = (jax.sharding.AxisType.Auto,) * 3
  if dcn_data > 1:
    from jax.experimental import mesh_utils
    if sizes[0] % dcn_data:
      raise ConfigError(f"mesh data={sizes[0]} is not divisible by dcn_data={dcn_data}")
    grid = mesh_utils.create_hybrid_device_mesh(
        (sizes[0] // dcn_data, sizes[1], sizes[2]), (dcn_data, 1, 1), devices)
  else:
    grid = np.asarray(devices).reshape(sizes)
  return Mesh(grid, MESH_AXES, axis_types=auto)


def mesh_from_config(cfg) -> Mesh:
  """A parsed training config's mesh block (cat_jax.train.train_config.MeshConfig: data, fsdp,
  tensor, dcn_data) -> Mesh."""
  m = cfg.mesh
  return make_mesh(m.data, m.fsdp, m.tensor, dcn_data=m.dcn_data)


def logical_to_spec(axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules=DEFAULT_RULES) -> P:
  """PartitionSpec for a value with these logical axes; a mesh axis is used at most once and only
  where it divides the dimension."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name, dim in zip(axes, shape):
    target = table.get(name) if name is not None else None
    targets = () if target is None else ((target,) if isinstance(target, str) else tuple(target))
    keep = []
    size = 1
    for t in targets:
      s = mesh.shape[t]
      if t in used or s == 1 or dim % (size * s):
        continue
      keep.append(t)
      size *= s
    used.update(keep)
    out.append(None if not keep else (keep[0] if len(keep) == 1 else tuple(keep)))
  return P(*out)


def _variable_spec(v: nnx.Variable, mesh: Mesh, rules) -> P:
  axes = v.get_metadata().get("axes")
  shape = (v.get_value() if hasattr(v, "get_value") else v.value).shape
  if axes is None or len(axes) != len(shape):
    return P()
  return logical_to_spec(axes, shape, mesh, rules)


def tree_shardings(tree, mesh: Mesh, rules=DEFAULT_RULES):
  """NamedShardings for any pytree holding nnx Variables (params, optimizer moments, EMA) and
  plain arrays (replicated), with the same structure as `tree` (usable as jit in/out_shardings)."""
  def one(x):
    if isinstance(x, nnx.Variable):
      s = NamedSharding(mesh, _variable_spec(x, mesh, rules))
      return jax.tree.map(lambda _: s, x)
    return NamedSharding(mesh, P())
  return jax.tree.map(one, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
  """Leading axis over the batch axes of the mesh, the rest replicated."""
  target = dict(rules)["batch"]
  return NamedSharding(mesh, P(target, *([None] * (ndim - 1))))


def shard_batch(batch: dict, mesh: Mesh) -> dict:
  """Process-local numpy batch -> global jax Arrays sharded over the batch axes.

  Each process passes only its own rows (global batch / process_count); on one process this
  is a plain device_put.
  """
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, np.ndim(v)), np.asarray(v))
          for k, v in batch.items()}
