"""Training checkpoints of a run in `WORKDIR/checkpoints/<step>/` (the whole train state, Orbax,
async and atomic) beside each process's data position, and the run config saved with them."""
from __future__ import annotations

import json
import os
import shutil
import time

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
  and the best by `best_metric` (lower is better) are kept. `create=False` (readers: export,
  eval) never creates a folder. An unreadable checkpoint found while resuming (an older one
  reads) is moved aside to `WORKDIR/corrupt/` (kept for inspection), so the run can save that
  step again.
  """

  def __init__(self, workdir: str, keep: int = 3, best_metric: str | None = "eval/mel", async_save: bool = True,
               create: bool = True):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self.best_metric = best_metric
    policies = [cm.LatestN(keep)]
    if best_metric:
      policies.append(cm.BestN(get_metric_fn=lambda m: m[best_metric], reverse=True, n=1,
                               keep_checkpoints_without_metrics=False))
    opts = ocp.CheckpointManagerOptions(
        enable_async_checkpointing=async_save, create=create,
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

  def restore(self, abstract_state, step: int | None = None, move_aside: bool = False):
    """-> (step, state, meta, data_state or None). With `step`: that checkpoint, or a
    CheckpointError if it is missing or unreadable (never another step's). Without: the newest
    readable one, each unreadable newer one reported in one line (and, with `move_aside`, moved
    to WORKDIR/corrupt/ so the step can be saved again). None if there is no checkpoint; none
    readable (e.g. another architecture than the run's) is a CheckpointError and moves nothing."""
    if step is not None and step not in self.steps():
      raise CheckpointError(f"no checkpoint for step {step} in {self.directory} (have {self.steps()})")
    candidates = [step] if step is not None else list(reversed(self.steps()))
    bad = []
    for s in candidates:
      try:
        out = self.manager.restore(s, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                              meta=ocp.args.JsonRestore()))
      except Exception as e:  # truncated files, missing items, shape mismatches
        why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        if step is not None:
          raise CheckpointError(f"checkpoint step {step} in {self.directory} is unreadable ({why})") from None
        bad.append((s, why))
        continue
      for b, why in bad:  # an older one reads: these are damaged, not another run's
        where = self._move_aside(b) if move_aside else None
        print(f"[checkpoint] step {b} in {self.directory} is unreadable ({why}); "
              + (f"moved it to {where}; " if where else "") + f"using step {s}", flush=True)
      return s, out["state"], out["meta"], self._read_data_state(s)
    if candidates:
      raise CheckpointError(f"no readable checkpoint in {self.directory} (tried steps {candidates}; step "
                            f"{bad[0][0]}: {bad[0][1]}); a changed recipe needs a new WORKDIR, damaged "
                            f"checkpoints can be moved out of it")
    return None

  def _move_aside(self, step: int) -> str | None:
    """Renames checkpoints/<step> to WORKDIR/corrupt/step_<step>.<UTC time> (process 0; every
    process then forgets the step). -> the new path (None on other processes)."""
    dest = None
    if jax.process_index() == 0:
      stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
      dest = os.path.join(self.workdir, "corrupt", f"step_{step}.{stamp}")
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      os.replace(os.path.join(self.directory, str(step)), dest)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"cat_jax_move_aside_{step}")
    self.manager.reload()
    return dest

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


def kept_steps(workdir: str) -> list[int]:
  """The checkpoint steps of a training run's WORKDIR, oldest first; reads only (a missing
  WORKDIR/checkpoints/ or one without checkpoints is a CheckpointError, never created)."""
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(directory):
    raise CheckpointError(f"no training checkpoint in {directory} (not a training run's WORKDIR)")
  ckpt = TrainCheckpointer(workdir, async_save=False, create=False)
  try:
    steps = ckpt.steps()
  finally:
    ckpt.close()
  if not steps:
    raise CheckpointError(f"no training checkpoint in {directory}")
  return steps


def read_run_config(workdir: str, step: int | None = None):
  """The ml_collections config a training run saved with its checkpoint (newest, or `step`)."""
  steps = kept_steps(workdir)
  s = steps[-1] if step is None else step
  directory = os.path.join(os.path.abspath(workdir), "checkpoints")
  if s not in steps:
    raise CheckpointError(f"no checkpoint for step {s} in {directory} (have {steps})")
  ckpt = TrainCheckpointer(workdir, async_save=False, create=False)
  try:
    meta = ckpt.manager.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
  except Exception as e:
    raise CheckpointError(f"checkpoint step {s} in {directory} is unreadable (its config: "
                          f"{type(e).__name__}: {' '.join(str(e).split())[:200]})") from None
  finally:
    ckpt.close()
  return ml_collections.ConfigDict(meta["config"]), s
