"""The training loop behind train.py: data -> sharded train step -> metrics, checkpoints, eval.

Everything a run needs lives in WORKDIR: checkpoints (Orbax, async, atomic), the data position
of every process, metrics.jsonl, TensorBoard events. Rerunning the same command resumes from the
newest readable checkpoint; SIGTERM saves one and exits cleanly.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import signal
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cat_jax import sharding
from cat_jax.errors import CATError
from cat_jax.loader import load_codec
from cat_jax.train import parallel
from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib
from cat_jax.train import train_config
from cat_jax.train.checkpoints import TrainCheckpointer
from cat_jax.train.logger import MetricLogger
from cat_jax.train.workdir_lock import WorkdirLock


class TrainingError(CATError):
  """Training cannot go on (e.g. the loss stays non-finite)."""


@dataclasses.dataclass
class RunResult:
  step: int
  state: object
  trainer: object
  preempted: bool = False
  last_metrics: dict | None = None


class _Preemption:
  """Turns SIGTERM (what TPU VMs and schedulers send) into a flag the loop polls."""

  def __init__(self):
    self.flag = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: no handler, no preemption saves
      self._old = None
    return self

  def _handle(self, signum, frame):
    self.flag = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)

  def requested(self) -> bool:
    if jax.process_count() == 1:
      return self.flag
    from jax.experimental import multihost_utils  # every process must stop at the same step
    return bool(np.max(multihost_utils.process_allgather(np.array([self.flag]))))


def make_data(cfg, mc=None, seed_offset: int = 0, batch_size: int | None = None, source: str | None = None,
              segment_seconds: float | None = None, augment: bool = True):
  """The training iterator of a recipe or TrainConfig (or, with `source`/`segment_seconds`,
  another one shaped like it); `batch_size` is global (default: the stage-1 batch), `mc` the
  codec config (default cfg.model); `augment=False` leaves out data.gain_db (evaluation data).
  The source spec was checked when the config was parsed."""
  from cat_jax.data.pipeline import make_iterator
  cfg = train_config.parse(cfg)
  mc = cfg.model if mc is None else mc
  d = cfg.data
  return make_iterator(
      source or d.source, sample_rate=mc.sampling_rate, channels=mc.channels,
      segment_samples=cfg.segment_samples(segment_seconds), batch_size=batch_size or cfg.batch_size,
      seed=cfg.seed + seed_offset, max_text_len=d.max_text_len, num_workers=d.num_workers,
      gain_db=d.gain_db if augment else None,
      shard_index=jax.process_index(), shard_count=jax.process_count(), data_dir=d.data_dir)


def _init_codec_params(cfg):
  """Codec weights of `init_from` (any layout `load_codec` reads), checked against the recipe's
  model; None without `init_from`. Errors are one line naming init_from."""
  if not cfg.init_from:
    return None
  try:
    return load_codec(cfg.init_from, expect=state_lib.model_config(cfg)).params
  except CATError as e:
    raise type(e)(f"init_from: {e}") from None


def train(cfg, workdir: str, *, log_every: int = 10, max_bad_steps: int = 20,
          on_log: Callable[[int, dict], None] | None = None) -> RunResult:
  """Runs (or resumes) a training run to cfg.num_steps (cfg: a recipe ConfigDict or a TrainConfig);
  returns the final state. The data batch is `batch_size` in stage 1 and `schedule.stage2_batch_size`
  from step `schedule.stage1_steps` on; the example stream (and so the saved data position) is the
  same whatever the batch, so a resume on either side of the switch continues exactly.

  `on_log(step, metrics)`, if given, receives each logged step's flat scalars (e.g. a live loss plot).
  The run holds WORKDIR/lock.json while it runs: a second run on the same WORKDIR is refused."""
  cfg = train_config.parse(cfg)
  if jax.process_index() != 0:  # process 0 holds the lock for the whole run
    return _train(cfg, workdir, log_every, max_bad_steps, on_log)
  with WorkdirLock(workdir):
    return _train(cfg, workdir, log_every, max_bad_steps, on_log)


def _train(cfg, workdir, log_every, max_bad_steps, on_log) -> RunResult:
  trainer = state_lib.build_trainer(cfg)
  mesh = sharding.mesh_from_config(cfg)
  stages = {cfg.stage(0), cfg.stage(max(cfg.num_steps - 1, 0))}
  for stage in sorted(stages):
    parallel.check_batch_divides(cfg.stage_batch_size(stage), mesh)
  ckpt = TrainCheckpointer(workdir, keep=cfg.keep_checkpoints)
  restored = ckpt.restore(parallel.sharded_abstract_state(trainer, mesh), move_aside=True)  # onto this run's mesh
  start = 0 if restored is None else restored[0]
  data = make_data(cfg, batch_size=cfg.stage_batch_size(cfg.stage(start)))
  if restored is not None:
    _, state, _, data_state = restored
    if data_state is not None:
      data.set_state(data_state)
    else:
      print(f"[train] no data position saved for step {start}; the data order restarts", flush=True)
    print(f"[train] resumed from step {start} in {ckpt.directory}", flush=True)
  else:
    state = parallel.init_sharded_state(trainer, mesh, jax.random.key(cfg.seed), _init_codec_params(cfg))
  meta = {"config": cfg.to_dict(), "process_count": jax.process_count()}
  steps = {}  # stage -> jitted step (a static stage compiles a smaller program than lax.cond over both)

  def step_fn(stage):
    if stage not in steps:
      steps[stage] = parallel.make_sharded_train_step(trainer, mesh, stage)
    return steps[stage]

  eval_batch = None
  if cfg.eval_every:  # a fixed batch: of data.eval_source (e.g. unseen voices) or held out of the training data
    held_out = make_data(cfg, seed_offset=10_000, batch_size=cfg.eval_batch_size, source=cfg.data.eval_source,
                         segment_seconds=cfg.eval_segment_seconds, augment=False)
    eval_batch = next(held_out)
    held_out.close()
  log = MetricLogger(workdir, cfg.num_steps, start, enabled=jax.process_index() == 0)
  last, bad_run, preempted, last_skipped = None, 0, False, None
  step = start
  with _Preemption() as pre:
    while step < cfg.num_steps:
      batch = {k: v for k, v in next(data).items() if k in parallel.BATCH_NDIM}
      with parallel.mesh_context(mesh):
        state, metrics = step_fn(cfg.stage(step))(state, sharding.shard_batch(batch, mesh))
      step += 1
      if step == cfg.schedule.stage1_steps:  # the next batch is stage 2's (before any save: resumes match)
        data.resize(cfg.stage_batch_size(2) // jax.process_count())
      if step % log_every == 0 or step == cfg.num_steps:
        flat = log.write(step, jax.device_get(metrics))
        last = flat
        log.progress(step, flat.get("loss"))
        if on_log is not None:
          on_log(step, flat)
        skipped = int(flat.get("skipped_total", 0))
        if last_skipped is not None:
          window = log_every if step % log_every == 0 else step % log_every
          bad_run = bad_run + window if skipped - last_skipped >= window else 0
          if bad_run >= max_bad_steps:
            ckpt.close()
            raise TrainingError(f"loss or gradients were non-finite for the last {bad_run} steps "
                                f"(step {step}); lower the learning rate or check the data")
        last_skipped = skipped
      eval_metrics = None
      if eval_batch is not None and step % cfg.eval_every == 0:
        eval_metrics = evaluate(trainer, state, eval_batch, mesh, log, step)
      if pre.requested():
        ckpt.save(step, state, {**meta, "step": step}, data.get_state(), eval_metrics, wait=True)
        print(f"\n[train] SIGTERM: saved step {step} to {ckpt.directory}; rerun the same command to resume",
              flush=True)
        preempted = True
        break
      if step % cfg.checkpoint_every == 0 or step == cfg.num_steps:
        ckpt.save(step, state, {**meta, "step": step}, data.get_state(), eval_metrics)
  ckpt.close()
  log.close()
  if hasattr(data, "close"):
    data.close()
  stats = getattr(data, "stats", None)
  if stats is not None and getattr(stats, "bad", None):
    print(f"[data] {stats.summary()}", flush=True)
  return RunResult(step, state, trainer, preempted, last)


def evaluate(trainer, state, batch, mesh, log: MetricLogger, step: int) -> dict:
  """Reconstruction metrics on a fixed held-out batch for a sweep of codebook counts: the training
  mel/STFT/SI-SDR on the whole batch, and the paper's metrics (STOI, PESQ, mel loss, STFT distance,
  SC, SI-SDR, SDR; cat_jax.eval.metrics) averaged over its first `eval_clips` clips; the
  first clip's audio and mel picture go to TensorBoard."""
  from cat_jax.eval.metrics import compute_all
  mc = trainer.model_config
  batch = {k: v for k, v in batch.items() if k in ("audio", "lengths")}
  sb = sharding.shard_batch(batch, mesh)
  out = {}
  n = mc.num_quantizers
  nqs = sorted({1, max(1, n // 4), max(1, n // 2), n})
  for n_q in nqs:
    with parallel.mesh_context(mesh):
      m = jax.device_get(_eval_fn(trainer)(state, sb, jnp.int32(n_q)))
    for k, v in m.items():
      out[f"eval/{k}@{n_q}"] = float(v)
  out["eval/mel"] = out[f"eval/mel@{n}"]
  if log.enabled and jax.process_count() == 1:  # one host: multi-host runs log the batch metrics
    clips = max(1, min(trainer.config.eval_clips, len(batch["lengths"])))
    x, lengths = jnp.asarray(batch["audio"][:clips]), jnp.asarray(batch["lengths"][:clips])
    for n_q in nqs:
      ys = np.asarray(_reconstruct_fn(trainer)(state.codec, x, lengths, jnp.int32(n_q))[0])
      scores = [compute_all(np.asarray(batch["audio"][i, :int(lengths[i])]).mean(-1),
                            ys[i, :int(lengths[i])].mean(-1), mc.sampling_rate) for i in range(clips)]
      for k in scores[0]:
        vals = np.array([sc[k] for sc in scores], np.float64)
        out[f"eval/paper/{k}@{n_q}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    length = int(lengths[0])
    ref = np.asarray(batch["audio"][0, :length])
    y = ys[0, :length]
    log.audio("eval/reference", ref, step, mc.sampling_rate)
    log.mel_image("eval/mel_reference", ref, step, mc.sampling_rate)
    log.audio("eval/reconstruction", y, step, mc.sampling_rate)  # all codebooks (the last n_q)
    log.mel_image("eval/mel_reconstruction", y, step, mc.sampling_rate)
  log.write(step, out)
  return out


@functools.lru_cache(maxsize=None)
def _reconstruct_fn(trainer):
  """One compiled program for every codebook count (n_q is traced)."""
  return jax.jit(functools.partial(step_lib.reconstruct, trainer))


@functools.lru_cache(maxsize=None)
def _eval_fn(trainer):
  """One compiled program for every codebook count (n_q is traced)."""
  return jax.jit(functools.partial(step_lib.eval_step, trainer))
