"""Training checkpoints of a run in `WORKDIR/checkpoints/<step>/` (the whole train state, Orbax,
async and atomic) beside each process's data position, and the run config saved with them."""
from __future__ import annotations

import json
import os
import shutil

import jax
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

from cat_jax.errors import CheckpointError


class TrainCheckpointer:
  """Orbax CheckpointManager for a training run in `WORKDIR/checkpoints/<step>/`.

  Each checkpoint holds the full train state (`state`, sharded arrays, saved asynchronously)
  and `meta` (config, step, process count). The data iterator state of every process goes to
  `WORKDIR/data_state/<step>/p<i>.json` (each process owns its own position). Saves are
  atomic (Orbax writes to a temporary directory and renames); the last `keep` checkpoints
  and the best by `best_metric` (lower is better) are kept.
  """

  def __init__(self, workdir: str, keep: int = 3, best_metric: str | None = "eval/mel", async_save: bool = True):
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
    path = self._data_path(step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
      json.dump(data_state, f)
    os.replace(path + ".tmp", path)  # atomic

  def _read_data_state(self, step: int):
    try:
      with open(self._data_path(step)) as f:
        return json.load(f)
    except (OSError, ValueError):
      return None

  def _prune_data_states(self) -> None:
    root = os.path.join(self.workdir, "data_state")
    if not os.path.isdir(root) or jax.process_index() != 0:
      return
    keep = set(self.steps())
    for d in os.listdir(root):
      if d.isdigit() and int(d) not in keep and int(d) < max(keep | {0}):
        shutil.rmtree(os.path.join(root, d), ignore_errors=True)


def read_run_config(workdir: str, step: int | None = None):
  """The ml_collections config a training run saved with its checkpoint (newest, or `step`)."""
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
