"""Orbax checkpoints of CAT parameters: `DIR/config.json` + `DIR/params/` (an Orbax PyTree).

This is the JAX-native twin of the reference layout: `cat-jax convert` moves a model between
the two. Restoring takes an optional sharding per parameter so a model can land directly
on a device mesh.
"""
from __future__ import annotations

import os

import jax
import numpy as np
from flax import nnx

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
  from cat_jax.codec import abstract_model
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
  nnx.replace_by_pure_dict(abstract, restored)
  return config, graphdef, abstract


def params_equal(a, b) -> bool:
  """Bitwise equality of two param trees (a convenience for tests and tools)."""
  la, lb = jax.tree.leaves(nnx.to_pure_dict(a)), jax.tree.leaves(nnx.to_pure_dict(b))
  return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


# ---- training checkpoints ---------------------------------------------------------------------

class TrainCheckpointer:
  """Orbax CheckpointManager for a training run in `WORKDIR/checkpoints/<step>/`.

  Each checkpoint holds the full train state (`state`, sharded arrays, saved asynchronously)
  and `meta` (config, step, process count). The data iterator state of every process goes to
  `WORKDIR/data_state/<step>/p<i>.json` (each process owns its own position). Saves are
  atomic (Orbax writes to a temporary directory and renames); the last `keep` checkpoints
  and the best by `best_metric` (lower is better) are kept.
  """

  def __init__(self, workdir: str, keep: int = 3, best_metric: str | None = "eval/mel", async_save: bool = True):
    import orbax.checkpoint as ocp
    from orbax.checkpoint import checkpoint_managers as cm
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.best_metric = best_metric
    policies = [cm.LatestN(keep)]
    if best_metric:
      policies.append(cm.BestN(get_metric_fn=lambda m: m[best_metric], reverse=True, n=1,
                               keep_checkpoints_without_metrics=False))
    opts = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=True,
        preservation_policy=cm.AnyPreservationPolicy(policies))
    self.manager = ocp.CheckpointManager(self.directory, options=opts, item_names=("state", "meta"))

  def save(self, step: int, state, meta: dict, data_state=None, metrics: dict | None = None,
           wait: bool = False) -> None:
    import orbax.checkpoint as ocp
    if data_state is not None:
      self._write_data_state(step, data_state)
    keep = {self.best_metric: float(metrics[self.best_metric])} if (
        metrics and self.best_metric and self.best_metric in metrics) else None
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    meta=ocp.args.JsonSave(meta)), metrics=keep, force=True)
    if wait:
      self.manager.wait_until_finished()
    self._prune_data_states()

  def steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def restore(self, abstract_state, step: int | None = None):
    """-> (step, state, meta, data_state or None) from the newest readable checkpoint at or
    below `step`; a corrupt or partial one is reported and skipped. None if there is none."""
    import orbax.checkpoint as ocp
    candidates = [s for s in reversed(self.steps()) if step is None or s <= step]
    if step is not None and step not in candidates[:1]:
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory} (have {self.steps()})")
    for s in candidates:
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                              meta=ocp.args.JsonRestore()))
      except Exception as e:  # truncated files, missing items, shape mismatches
        print(f"[checkpoint] step {s} in {self.directory} is unreadable ({type(e).__name__}: "
              f"{str(e)[:200]}); trying an older one", flush=True)
        continue
      return s, out["state"], out["meta"], self._read_data_state(s)
    if candidates:
      raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps {candidates})")
    return None

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # data iterator positions, one JSON file per process ------------------------------------------
  def _data_path(self, step: int, process: int | None = None) -> str:
    p = jax.process_index() if process is None else process
    return os.path.join(self.workdir, "data_state", str(step), f"p{p}.json")

  def _write_data_state(self, step: int, data_state) -> None:
    import json
    path = self._data_path(step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(data_state, f)
    os.replace(path + ".tmp", path)  # atomic

  def _read_data_state(self, step: int):
    import json
    try:
      with open(self._data_path(step)) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def _prune_data_states(self) -> None:
    import shutil
    root = os.path.join(self.workdir, "data_state")
    if not os.path.isdir(root) or jax.process_index() != 0:
      return
    keep = set(self.steps())
    for d in os.listdir(root):
      if d.isdigit() and int(d) not in keep and int(d) < max(keep | {0}):
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def read_run_config(workdir: str, step: int | None = None):
  """The ml_collections config a training run saved with its checkpoint (newest, or `step`)."""
  import ml_collections
  import orbax.checkpoint as ocp
  ckpt = TrainCheckpointer(workdir, async_save=False)
  steps = ckpt.steps()
  if not steps:
    raise CheckpointError(f"no training checkpoint in {ckpt.directory}")
  s = steps[-1] if step is None else step
  if s not in steps:
    raise CheckpointError(f"no checkpoint for step {s} in {ckpt.directory} (have {steps})")
  try:
    meta = ckpt.manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  except Exception as e:
    raise CheckpointError(f"cannot read the config of step {s} in {ckpt.directory}: {e}") from None
  finally:
    ckpt.close()
  return ml_collections.ConfigDict(meta["config"]), s


def restore_codec(workdir: str, step: int | None = None, ema: bool = False):
  """A `CAT` with the codec (or its EMA) weights of a training checkpoint."""
  from cat_jax.codec import CAT, abstract_model
  from cat_jax.train import state as state_lib
  cfg, s = read_run_config(workdir, step)
  trainer = state_lib.build_trainer(cfg)
  abstract = jax.eval_shape(lambda k: state_lib.init_state(trainer, k), jax.random.key(0))
  ckpt = TrainCheckpointer(workdir, async_save=False)
  try:
    _, state, _, _ = ckpt.restore(abstract, s)
  finally:
    ckpt.close()
  params = state.ema if ema else state.codec
  if params is None:
    raise CheckpointError(f"the run in {workdir} kept no EMA weights (optim.ema_decay was 0)")
  return CAT(trainer.model_config, abstract_model(trainer.model_config)[0], params), s


MODEL_CARD = """# {name}

A CAT (Causal Audio Tokenizer with Transformer, MOSS-Audio-Tokenizer architecture) codec trained
with cat_jax and exported to the reference PyTorch / Hugging Face layout (`config.json` +
safetensors, the reference's tensor names; loads with `strict=True`).

- sample rate {sr} Hz, {channels} channel(s), {frame_rate:g} Hz frames
- {nq} codebooks of {cb} entries: {bps_min:g} to {bps_max:g} bit/s (any prefix of the codebooks decodes)
- {params:,} parameters; training step {step}{ema}

PyTorch without remote code: `from cat_jax.torch_model import CATTorch; CATTorch.from_pretrained(DIR)`.
JAX: `from cat_jax import CAT; CAT.from_pretrained(DIR)`.
"""


def export_workdir(workdir: str, out: str, step: int | None = None, ema: bool = False,
                   max_shard_bytes: int | None = 5 * 2**30) -> list[str]:
  """Training checkpoint -> reference layout directory with a short model card."""
  model, s = restore_codec(workdir, step, ema)
  files = model.save_pretrained(out, max_shard_size=max_shard_bytes)
  c = model.config
  with open(os.path.join(out, "README.md"), "w") as f:
    f.write(MODEL_CARD.format(name=os.path.basename(os.path.abspath(out)), sr=c.sampling_rate,
                              channels=c.channels, frame_rate=c.frame_rate, nq=c.num_quantizers,
                              cb=c.codebook_size, bps_min=c.bits_per_second(1), bps_max=c.bits_per_second(),
                              params=model.num_params, step=s, ema=" (EMA weights)" if ema else ""))
  return files + ["README.md"]
