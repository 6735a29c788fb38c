"""Sharded training: the abstract state, parameters born sharded, the jitted train step with
explicit shardings, and multi-process start-up.

One code path serves 1 CPU device, 8 fake devices, a multi-host TPU pod and AOT compilation:
the logical-axis table in cat_jax.sharding decides where every array lives, this module only
hands those shardings to jax.jit.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from cat_jax import sharding as sh
from cat_jax.errors import ConfigError
from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib
from cat_jax.train import train_config

# Training batch layout (cat_jax/data): name -> rank; the leading axis is always the batch.
BATCH_NDIM: dict[str, int] = {"audio": 3, "lengths": 1, "text": 2, "text_lengths": 1}


def mesh_context(mesh: Mesh):
  """`jax.set_mesh(mesh)` as a context manager (jax.sharding.use_mesh on versions that lack it)."""
  if hasattr(jax, "set_mesh"):
    return jax.set_mesh(mesh)
  if hasattr(jax.sharding, "use_mesh"):
    return jax.sharding.use_mesh(mesh)
  return contextlib.nullcontext()


def abstract_state(trainer: state_lib.Trainer):
  """jax.eval_shape of init_state: a TrainState of ShapeDtypeStructs (Params keep their axes)."""
  return jax.eval_shape(lambda k: state_lib.init_state(trainer, k), jax.random.key(0))


def state_shardings(trainer: state_lib.Trainer, mesh: Mesh, rules=sh.DEFAULT_RULES):
  """NamedShardings for the TrainState (a prefix tree: one sharding per Param / plain array)."""
  return sh.tree_shardings(abstract_state(trainer), mesh, rules)


def batch_shardings(mesh: Mesh, batch_ndim: Mapping[str, int] = BATCH_NDIM, rules=sh.DEFAULT_RULES) -> dict:
  """name -> NamedSharding splitting the leading (batch) axis over the mesh's batch axes."""
  return {k: sh.batch_sharding(mesh, n, rules) for k, n in batch_ndim.items()}


def sharded_abstract_state(trainer: state_lib.Trainer, mesh: Mesh, rules=sh.DEFAULT_RULES):
  """The abstract state with each leaf's sharding attached (drives AOT lowering and restores)."""
  abstract = abstract_state(trainer)
  shardings = sh.tree_shardings(abstract, mesh, rules)

  def attach(s, x):
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), x)
  return jax.tree.map(attach, shardings, abstract, is_leaf=lambda x: isinstance(x, NamedSharding))


def init_sharded_state(trainer: state_lib.Trainer, mesh: Mesh, key: jax.Array, codec_params: Any = None):
  """init_state under jit with out_shardings: every parameter and moment is created on the
  devices that own its shard, never gathered on one host first."""
  shardings = state_shardings(trainer, mesh)
  rep = NamedSharding(mesh, P())
  if codec_params is None:
    init = jax.jit(lambda k: state_lib.init_state(trainer, k), in_shardings=rep, out_shardings=shardings)
    with mesh_context(mesh):
      return init(key)
  init = jax.jit(lambda k, c: state_lib.init_state(trainer, k, c), in_shardings=(rep, shardings.codec),
                 out_shardings=shardings)
  with mesh_context(mesh):
    return init(key, codec_params)


def _constrain_batch(batch: dict, mesh: Mesh, rules) -> dict:
  return {k: jax.lax.with_sharding_constraint(v, sh.batch_sharding(mesh, v.ndim, rules)) for k, v in batch.items()}


def _sharded_step(trainer, mesh, stage, rules, state, batch):
  batch = _constrain_batch(batch, mesh, rules)
  return step_lib.train_step(trainer, state, batch, stage=stage)


def _sharded_disc_step(trainer, mesh, rules, state, batch):
  return step_lib.disc_step(trainer, state, _constrain_batch(batch, mesh, rules))


def _sharded_adv_step(trainer, mesh, rules, disc, batch, y):
  return step_lib.adv_step(trainer, disc, _constrain_batch(batch, mesh, rules), y)


def _sharded_gen_step(trainer, mesh, rules, state, batch, metrics, audio_grad):
  batch = _constrain_batch(batch, mesh, rules)
  return step_lib.train_step(trainer, state, batch, stage=2, adv_inputs=(metrics, audio_grad))


def make_sharded_train_step(trainer: state_lib.Trainer, mesh: Mesh, stage: int | None = None, *,
                            donate: bool = True, batch_ndim: Mapping[str, int] = BATCH_NDIM,
                            rules=sh.DEFAULT_RULES, split: bool | None = None):
  """jax.jit(train_step) with explicit in/out shardings: (state, batch) -> (state, metrics).

  The state keeps its shardings across steps (donated: no second copy in HBM), the batch is
  split over ('data', 'fsdp'), metrics come back replicated. Call it (or `.lower` it) inside
  `mesh_context(mesh)`. Batches must hold exactly the keys of `batch_ndim`.
  An adversarial stage=2 with `split` (None: config stage2_programs == 3) is a step_lib.SplitStep
  of three such programs, `.disc`, `.adv` and `.gen` (the generated audio and its gradient are
  batch-sharded like the batch's audio).
  """
  state_sh = state_shardings(trainer, mesh, rules)
  batch_sh = batch_shardings(mesh, batch_ndim, rules)
  rep = NamedSharding(mesh, P())
  donate_argnums = (0,) if donate else ()
  if step_lib.split_applies(trainer, stage, split):
    audio_sh = batch_sh["audio"]
    disc = jax.jit(functools.partial(_sharded_disc_step, trainer, mesh, rules), in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, rep, audio_sh), donate_argnums=donate_argnums)
    adv = jax.jit(functools.partial(_sharded_adv_step, trainer, mesh, rules),
                  in_shardings=(state_sh.disc, batch_sh, audio_sh), out_shardings=(audio_sh, rep),
                  donate_argnums=(2,) if donate else ())
    gen = jax.jit(functools.partial(_sharded_gen_step, trainer, mesh, rules),
                  in_shardings=(state_sh, batch_sh, rep, audio_sh), out_shardings=(state_sh, rep),
                  donate_argnums=donate_argnums)
    return step_lib.SplitStep(disc, adv, gen)
  fn = functools.partial(_sharded_step, trainer, mesh, stage, rules)
  return jax.jit(fn, in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, rep),
                 donate_argnums=donate_argnums)


# ---- multi-process -------------------------------------------------------------------------

def _distributed_initialized() -> bool:
  if hasattr(jax.distributed, "is_initialized"):
    return bool(jax.distributed.is_initialized())
  from jax._src import distributed  # jax < 0.5
  return distributed.global_state.client is not None


def maybe_initialize_distributed(cfg=None) -> bool:
  """jax.distributed.initialize from cfg.distributed.{coordinator_address, num_processes,
  process_id} (cfg: a recipe or TrainConfig) or the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
  JAX_PROCESS_ID environment; on a TPU pod (several worker hostnames) with no settings, JAX
  detects everything itself. Returns True when running multi-process. Call it before anything touches a device."""
  if _distributed_initialized():
    return True
  d = train_config.parse(cfg).distributed if cfg is not None else train_config.DistributedConfig()
  addr = d.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
  num = d.num_processes or os.environ.get("JAX_NUM_PROCESSES")
  pid = os.environ.get("JAX_PROCESS_ID") if d.process_id is None else d.process_id
  # Cross-process collectives on CPU need gloo; the flag only affects the CPU client.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if addr:
    if not num or pid is None:
      raise ConfigError(f"distributed.coordinator_address={addr!r} needs num_processes and process_id")
    num, pid = int(num), int(pid)
    if not 0 <= pid < num:
      raise ConfigError(f"distributed.process_id={pid} is outside 0..{num - 1}")
    if num == 1:
      return False
    jax.distributed.initialize(coordinator_address=addr, num_processes=num, process_id=pid)
    return True
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()  # TPU pod / multislice: auto-detected
    return True
  return False


def process_rows(global_batch: int) -> slice:
  """The rows of a global batch that this process feeds (contiguous, equal shares)."""
  n, i = jax.process_count(), jax.process_index()
  if global_batch % n:
    raise ConfigError(f"batch_size={global_batch} is not divisible by the {n} processes")
  per = global_batch // n
  return slice(i * per, (i + 1) * per)


def local_batch(global_batch: dict) -> dict:
  """This process's share of a host-side global batch (every process built the same one)."""
  rows = process_rows(len(next(iter(global_batch.values()))))
  return {k: np.asarray(v)[rows] for k, v in global_batch.items()}


def check_batch_divides(batch_size: int, mesh: Mesh, rules=sh.DEFAULT_RULES) -> None:
  """ConfigError unless the batch splits evenly over the mesh's batch axes."""
  target = dict(rules)["batch"]
  axes = (target,) if isinstance(target, str) else tuple(target)
  n = int(np.prod([mesh.shape[a] for a in axes]))
  if batch_size % n:
    raise ConfigError(f"batch_size={batch_size} is not divisible by the {n}-way batch sharding "
                      f"({' x '.join(f'{a}={mesh.shape[a]}' for a in axes)})")
