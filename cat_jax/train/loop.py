"""The training loop behind train.py: data -> sharded train step -> metrics, checkpoints, eval.

Everything a run needs lives in WORKDIR: checkpoints (Orbax, async, atomic), the data position
of every process, metrics.jsonl, TensorBoard events. Rerunning the same command resumes from the
newest readable checkpoint; SIGTERM saves one and exits cleanly.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cat_jax import parallel, sharding
from cat_jax.checkpoint import TrainCheckpointer
from cat_jax.errors import CATError, ConfigError
from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib
from cat_jax.train.logger import MetricLogger


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


def segment_samples(seconds: float, downsample_rate: int, sample_rate: int) -> int:
  """A segment length in seconds rounded up to whole frames, in samples."""
  frames = max(1, int(np.ceil(seconds * sample_rate / downsample_rate)))
  return frames * downsample_rate


def make_data(cfg, mc, seed_offset: int = 0, batch_size: int | None = None, source: str | None = None,
              segment_seconds: float | None = None):
  """The training iterator (or, with `source`/`segment_seconds`, another one shaped like it)."""
  from cat_jax.data.pipeline import make_iterator
  src = source or cfg.data.source
  if not isinstance(src, str) or ":" not in src:
    raise ConfigError(f"data.source must be folder:PATH, tfds:NAME[:SPLIT], arrayrecord:GLOB or "
                      f"corpus:DIR/MANIFEST.jsonl, got {src!r}")
  d = cfg.data
  return make_iterator(
      src, sample_rate=mc.sampling_rate, channels=mc.channels,
      segment_samples=segment_samples(segment_seconds or cfg.segment_seconds, mc.downsample_rate, mc.sampling_rate),
      batch_size=batch_size or cfg.batch_size, seed=cfg.seed + seed_offset,
      max_text_len=d.get("max_text_len", 128), num_workers=d.get("num_workers", 0),
      gain_db=tuple(d.gain_db) if d.get("gain_db", None) else None,
      shard_index=jax.process_index(), shard_count=jax.process_count(), data_dir=d.get("data_dir", None))


def _init_codec_params(cfg):
  """Codec weights of `init_from` (reference directory or Orbax params checkpoint), or None."""
  if not cfg.get("init_from"):
    return None
  from cat_jax.cli import load_model
  return load_model(cfg.init_from).params


def train(cfg, workdir: str, *, log_every: int = 10, max_bad_steps: int = 20,
          on_log: Callable[[int, dict], None] | None = None) -> RunResult:
  """Runs (or resumes) a training run to cfg.num_steps; returns the final state.

  `on_log(step, metrics)`, if given, receives each logged step's flat scalars (e.g. a live loss plot)."""
  trainer = state_lib.build_trainer(cfg)
  mc = trainer.model_config
  mesh = sharding.mesh_from_config(cfg)
  parallel.check_batch_divides(cfg.batch_size, mesh)
  ckpt = TrainCheckpointer(workdir, keep=cfg.get("keep_checkpoints", 3))
  data = make_data(cfg, mc)
  restored = ckpt.restore(parallel.sharded_abstract_state(trainer, mesh))  # onto this run's mesh
  if restored is not None:
    start, state, _, data_state = restored
    if data_state is not None:
      data.set_state(data_state)
    else:
      print(f"[train] no data position saved for step {start}; the data order restarts", flush=True)
    print(f"[train] resumed from step {start} in {ckpt.directory}", flush=True)
  else:
    start = 0
    state = parallel.init_sharded_state(trainer, mesh, jax.random.key(cfg.seed), _init_codec_params(cfg))
  meta = {"config": json.loads(cfg.to_json_best_effort()), "process_count": jax.process_count()}
  stage1 = int(cfg.schedule.stage1_steps)
  steps = {}  # stage -> jitted step (a static stage compiles a smaller program than lax.cond over both)

  def step_fn(stage):
    if stage not in steps:
      steps[stage] = parallel.make_sharded_train_step(trainer, mesh, stage)
    return steps[stage]

  eval_batch = None
  if cfg.get("eval_every"):  # a fixed batch: of data.eval_source (e.g. unseen voices) or held out of the training data
    held_out = make_data(cfg, mc, seed_offset=10_000, batch_size=cfg.get("eval_batch_size", None),
                         source=cfg.data.get("eval_source", None), segment_seconds=cfg.get("eval_segment_seconds", None))
    eval_batch = next(held_out)
    held_out.close()
  log = MetricLogger(workdir, cfg.num_steps, start, enabled=jax.process_index() == 0)
  last, bad_run, preempted, last_skipped = None, 0, False, None
  step = start
  with _Preemption() as pre:
    while step < cfg.num_steps:
      batch = {k: v for k, v in next(data).items() if k in parallel.BATCH_NDIM}
      with parallel.mesh_context(mesh):
        state, metrics = step_fn(1 if step < stage1 else 2)(state, sharding.shard_batch(batch, mesh))
      step += 1
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
      if eval_batch is not None and cfg.eval_every and step % cfg.eval_every == 0:
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
  SC, SI-SDR, SDR; cat_jax.eval.metrics) averaged over its first `eval_clips` clips (default 1); the
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
    clips = max(1, min(int(trainer.config.get("eval_clips", 1)), len(batch["lengths"])))
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
