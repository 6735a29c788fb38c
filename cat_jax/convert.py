"""The reference (PyTorch / Hugging Face) checkpoint layout <-> cat_jax parameters.

One table, built from the config, knows every reference tensor name, its cat_jax path
(plus the layer/quantizer index for stacked parameters), its transform and its
reference shape. Import, export and the manifest test all read that table.
All transforms are transposes and reshapes, so a round trip is bit-exact.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from cat_jax.config import CATConfig, TransformerSpec
from cat_jax.errors import CheckpointError

SAFETENSORS = "model.safetensors"
INDEX = "model.safetensors.index.json"


@dataclasses.dataclass(frozen=True)
class Entry:
  name: str  # reference tensor name
  path: tuple  # cat_jax parameter path (keys into the pure params dict)
  index: int | None  # position along the stacked leading axis, if any
  kind: str  # 'linear' | 'reshape' | 'wn_v'
  torch_shape: tuple[int, ...]

  def to_jax(self, w: np.ndarray, jax_shape: tuple[int, ...]) -> np.ndarray:
    if self.kind == "linear":  # torch (out, in) -> kernel (*in, *out)
      return w.T.reshape(jax_shape)
    if self.kind == "wn_v":  # (out, in, 1) -> (in, out)
      return w[:, :, 0].T
    return w.reshape(jax_shape)

  def to_torch(self, a: np.ndarray) -> np.ndarray:
    if self.kind == "linear":
      out, inp = self.torch_shape
      return np.ascontiguousarray(a.reshape(inp, out).T)
    if self.kind == "wn_v":
      return np.ascontiguousarray(a.T[:, :, None])
    return np.ascontiguousarray(a.reshape(self.torch_shape))


# Per-layer tensor names of each family: attention projections (in the order the family lists
# them), feed-forward (plain, gated), and whether every stage keeps its input/output projections.
_V1_NAMES = {"attn": (("self_attn.out_projs.0.weight", "out_proj", "out"), ("self_attn.in_projs.0.weight", "in_proj", "in")),
             "ffn": ("linear1.weight", "linear2.weight"), "gated": ("gating.linear_in.weight", "gating.linear_out.weight"),
             "square_projections": False}
_V2_NAMES = {"attn": (("self_attn.in_proj.weight", "in_proj", "in"), ("self_attn.out_proj.weight", "out_proj", "out")),
             "ffn": ("ffn.0.weight", "ffn.2.weight"), "gated": ("ffn.linear_in.weight", "ffn.linear_out.weight"),
             "square_projections": True}


def _transformer_entries(prefix: str, path: tuple, s: TransformerSpec) -> list[Entry]:
  """v1 names (in_projs.0, linear1, gating.linear_in, projections only where widths differ) or,
  for a v2 spec, v2's (in_proj, ffn.0 / ffn.2, ffn.linear_in, square projections on every stage)."""
  names = _V2_NAMES if s.v2 else _V1_NAMES
  c = s.d_model
  out = []
  if names["square_projections"] or s.input_dimension != c:
    out.append(Entry(f"{prefix}.input_proj.weight", path + ("input_proj", "kernel"), None, "linear",
                     (c, s.input_dimension)))
  lp = path + ("transformer", "layers")
  for l in range(s.num_layers):
    n = f"{prefix}.transformer.layers.{l}"

    def add(suffix, sub, kind, shape):
      out.append(Entry(f"{n}.{suffix}", lp + sub, l, kind, shape))

    for name, module, which in names["attn"]:
      add(name, ("self_attn", module, "kernel"), "linear", (3 * c, c) if which == "in" else (c, c))
    for norm in ("norm1", "norm2"):
      if s.norm == "layer_norm":
        add(f"{norm}.weight", (norm, "weight"), "reshape", (c,))
        add(f"{norm}.bias", (norm, "bias"), "reshape", (c,))
      else:
        add(f"{norm}.alpha", (norm, "alpha"), "reshape", (1, 1, c))
    if s.gating == "none":
      add(names["ffn"][0], ("linear1", "kernel"), "linear", (s.dim_feedforward, c))
      add(names["ffn"][1], ("linear2", "kernel"), "linear", (c, s.dim_feedforward))
    else:
      h = s.ffn_hidden
      add(names["gated"][0], ("gating", "linear_in", "kernel"), "linear", (2 * h, c))
      add(names["gated"][1], ("gating", "linear_out", "kernel"), "linear", (c, h))
    if s.layer_scale is not None:
      add("layer_scale_1.scale", ("layer_scale_1", "scale"), "reshape", (c,))
      add("layer_scale_2.scale", ("layer_scale_2", "scale"), "reshape", (c,))
  if names["square_projections"] or s.output_dimension != c:
    out.append(Entry(f"{prefix}.output_proj.weight", path + ("output_proj", "kernel"), None, "linear",
                     (s.output_dimension, c)))
  return out


def _wn_entries(prefix: str, path: tuple, index, d_in: int, d_out: int) -> list[Entry]:
  return [
      Entry(f"{prefix}.bias", path + ("bias",), index, "reshape", (d_out,)),
      Entry(f"{prefix}.parametrizations.weight.original0", path + ("g",), index, "reshape", (d_out, 1, 1)),
      Entry(f"{prefix}.parametrizations.weight.original1", path + ("v",), index, "wn_v", (d_out, d_in, 1)),
  ]


def name_table(config: CATConfig) -> list[Entry]:
  """Every reference tensor of a model with this config, in reference state-dict order."""
  out: list[Entry] = []
  for side, mods in (("encoder", config.encoder), ("decoder", config.decoder)):
    block = []
    for i, m in enumerate(mods):
      if isinstance(m, TransformerSpec):
        block += _transformer_entries(f"{side}.{i}", (side, i), m)
    if side == "encoder":
      out += block
      q = config.quantizer
      if q.input_dim != q.rvq_dim:
        out += _wn_entries("quantizer.input_proj", ("quantizer", "input_proj"), None, q.input_dim, q.rvq_dim)
      if q.rvq_dim != q.output_dim:
        out += _wn_entries("quantizer.output_proj", ("quantizer", "output_proj"), None, q.rvq_dim, q.output_dim)
      qp = ("quantizer", "quantizers")
      for k in range(q.num_quantizers):
        n = f"quantizer.quantizers.{k}"
        if q.rvq_dim != q.codebook_dim:
          out += _wn_entries(f"{n}.in_proj", qp + ("in_proj",), k, q.rvq_dim, q.codebook_dim)
          out += _wn_entries(f"{n}.out_proj", qp + ("out_proj",), k, q.codebook_dim, q.rvq_dim)
        out.append(Entry(f"{n}.codebook.weight", qp + ("codebook",), k, "reshape", (q.codebook_size, q.codebook_dim)))
    else:
      out += block
  return out


def manifest(config: CATConfig) -> list[tuple[str, tuple[int, ...]]]:
  return [(e.name, e.torch_shape) for e in name_table(config)]


# ---- pure-dict helpers --------------------------------------------------------

def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


_LEGACY = [
    (re.compile(r"(\.self_attn\.)in_proj_weight$"), r"\1in_projs.0.weight"),
    (re.compile(r"(\.self_attn\.)in_proj\.weight$"), r"\1in_projs.0.weight"),
    (re.compile(r"(\.self_attn\.)out_proj\.weight$"), r"\1out_projs.0.weight"),
]


# v2's load hook (CAT_SPEC_V2.md section 4): v1-era names to v2's. No rename for v1's `gating.`.
_LEGACY_V2 = [
    (re.compile(r"(\.self_attn\.)in_proj_weight$"), r"\1in_proj.weight"),
    (re.compile(r"(\.self_attn\.)in_projs\.0\.weight$"), r"\1in_proj.weight"),
    (re.compile(r"(\.self_attn\.)out_projs\.0\.weight$"), r"\1out_proj.weight"),
    (re.compile(r"\.linear1\.(weight|bias)$"), r".ffn.0.\1"),
    (re.compile(r"\.linear2\.(weight|bias)$"), r".ffn.2.\1"),
    (re.compile(r"\.weight_g$"), r".parametrizations.weight.original0"),
    (re.compile(r"\.weight_v$"), r".parametrizations.weight.original1"),
]


def rename_legacy(tensors: dict, v2: bool = False) -> dict:
  """Renames old names the way the reference's load hook does (v1's, or v2's when `v2`)."""
  rules = _LEGACY_V2 if v2 else _LEGACY
  out = {}
  for name, w in tensors.items():
    for pat, rep in rules:
      name = pat.sub(rep, name)
    out[name] = w
  return out


def torch_to_params(config: CATConfig, tensors: dict, shapes: dict) -> dict:
  """Reference tensors -> nested dict of numpy params.

  `shapes` maps each cat_jax path to its full (stacked) shape, e.g. from `jax.eval_shape`.
  """
  tensors = rename_legacy(tensors, config.v2)
  table = name_table(config)
  expected = {e.name for e in table}
  missing = sorted(expected - set(tensors))
  unexpected = sorted(set(tensors) - expected)
  if missing or unexpected:
    msg = []
    if missing:
      msg.append(f"{len(missing)} missing tensor(s), e.g. {missing[:3]}")
    if unexpected:
      msg.append(f"{len(unexpected)} unexpected tensor(s), e.g. {unexpected[:3]}")
    raise CheckpointError("checkpoint does not match its config: " + "; ".join(msg))
  params: dict = {}
  for e in table:
    w = np.asarray(tensors[e.name])
    if tuple(w.shape) != e.torch_shape:
      raise CheckpointError(f"tensor {e.name} has shape {tuple(w.shape)}, expected {e.torch_shape}")
    check_weight(e.name, w)
    full = shapes[e.path]
    if e.index is None:
      _set(params, e.path, e.to_jax(w, full).astype(np.float32, copy=False))
      continue
    try:
      buf = _get(params, e.path)
    except KeyError:
      buf = np.empty(full, np.float32)
      _set(params, e.path, buf)
    buf[e.index] = e.to_jax(w, full[1:])
  return params


def check_weight(name: str, w) -> None:
  """A weight must hold finite floats: an integer, bool or complex tensor in a float slot, or a NaN /
  Inf, is a CheckpointError naming the tensor (NaN weights would decode to full-scale noise)."""
  w = np.asarray(w)
  if w.dtype.kind in "biuc":
    raise CheckpointError(f"tensor {name} holds {w.dtype} values; the model takes floating-point weights")
  finite = np.isfinite(w if w.dtype.kind == "f" else w.astype(np.float32))
  if not finite.all():
    raise CheckpointError(f"tensor {name} holds {int(finite.size - finite.sum())} NaN or Inf value(s)")


def params_to_torch(config: CATConfig, params: dict) -> dict[str, np.ndarray]:
  """Nested dict of params (numpy or jax arrays) -> reference tensors (float32 numpy)."""
  out = {}
  for e in name_table(config):
    a = np.asarray(_get(params, e.path), dtype=np.float32)
    if e.index is not None:
      a = a[e.index]
    out[e.name] = e.to_torch(a)
  return out


# ---- files ----------------------------------------------------------------------

def shard_path(path: str, fname, index: str) -> str:
  """A shard named by an index: a file name inside the model folder, never ../ or an absolute path."""
  norm = os.path.normpath(fname) if isinstance(fname, str) and fname else ""
  if not norm or os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep) or os.path.splitdrive(norm)[0]:
    raise CheckpointError(f"{index} names a shard outside the model folder: {fname!r}")
  return os.path.join(path, norm)


def read_safetensors_dir(path: str) -> dict[str, np.ndarray]:
  """All tensors of a model directory: model.safetensors or a sharded index."""
  from safetensors.numpy import load_file
  single, index = os.path.join(path, SAFETENSORS), os.path.join(path, INDEX)
  try:
    if os.path.exists(index):
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
      tensors = {}
      for fname in sorted(set(weight_map.values())):
        shard = load_file(shard_path(path, fname, index))
        tensors.update(shard)
      missing = sorted(set(weight_map) - set(tensors))
      if missing:
        raise CheckpointError(f"{index} lists tensors no shard holds, e.g. {missing[:3]}")
      return tensors
    if os.path.exists(single):
      return load_file(single)
  except CheckpointError:
    raise
  except (OSError, ValueError, KeyError, json.JSONDecodeError, Exception) as e:  # safetensors raises its own
    raise CheckpointError(f"cannot read weights in {path}: {type(e).__name__}: {e}") from None
  raise CheckpointError(f"{path} has neither {SAFETENSORS} nor {INDEX}")


def write_safetensors_dir(path: str, tensors: dict[str, np.ndarray], max_shard_bytes: int | None = None) -> list[str]:
  """Writes model.safetensors, or shards of at most `max_shard_bytes` plus the index. Returns files."""
  from safetensors.numpy import save_file
  os.makedirs(path, exist_ok=True)
  for f in os.listdir(path):  # stale weights from an earlier export would shadow or mix with these
    if f == INDEX or (f.startswith("model") and f.endswith(".safetensors")):
      os.remove(os.path.join(path, f))
  total = sum(t.nbytes for t in tensors.values())
  meta = {"format": "pt"}
  if max_shard_bytes is None or total <= max_shard_bytes:
    save_file(tensors, os.path.join(path, SAFETENSORS), metadata=meta)
    return [SAFETENSORS]
  shards, cur, size = [], {}, 0
  for name, t in tensors.items():
    if cur and size + t.nbytes > max_shard_bytes:
      shards.append(cur)
      cur, size = {}, 0
    cur[name] = t
    size += t.nbytes
  shards.append(cur)
  files, weight_map = [], {}
  for k, shard in enumerate(shards):
    fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(path, fname), metadata=meta)
    files.append(fname)
    weight_map.update({n: fname for n in shard})
  with open(os.path.join(path, INDEX), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
  return files + [INDEX]

