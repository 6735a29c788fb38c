"""Subprocess body for the sharding tests: runs a few train steps of a shrunken tiny config on
one device, on several meshes, or as one of several processes, and saves losses and parameters.

Run as `python sharding_worker.py MODE OUT [args]`; XLA_FLAGS / JAX_PLATFORMS are set by the caller
before jax is imported (the device count is fixed at import).
"""
import importlib.util
import json
import pathlib
import sys

import numpy as np

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"
STEPS = 2
BATCH = 8
FRAMES = 2


def small_config():
  """configs/tiny.py shrunk for compile time (which dominates on CPU): two patch stages of one
  layer, 4 small codebooks, one mel scale, a 1-layer LM."""
  from cat_jax.train import recipes
  spec = importlib.util.spec_from_file_location("cat_configs_tiny", CONFIGS / "tiny.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.model = recipes.codec_architecture(
      patch_sizes=(240, 8), context_seconds=0.32,
      encoder=[(32, 1, 2, 64, 32), (32, 1, 2, 64, 32)], decoder=[(32, 1, 2, 64, 64), (32, 1, 2, 64, 240)],
      quantizer={"input_dim": 32, "rvq_dim": 16, "output_dim": 32, "num_quantizers": 4, "codebook_size": 16,
                 "codebook_dim": 4, "quantizer_type": "rlfq"})
  c.disc.periods = [2]
  c.disc.fft_sizes = [512]
  c.disc.bands = [0.0, 1.0]
  c.loss.mel.windows = [256]
  c.loss.mel.n_mels = [20]
  c.lm.num_layers = 1
  c.optim.gen.warmup_steps = c.optim.disc.warmup_steps = 0
  c.optim.gen.flatten = c.optim.disc.flatten = False  # keep per-parameter moments: they are sharded too
  c.optim.gen.lr = 1e-4  # small steps: Adam amplifies reduction-order noise on near-zero gradients
  c.quantizer_dropout = 0.5  # exercises the per-example PRNG draw under sharding
  c.batch_size = BATCH
  return c


def make_batch(b=BATCH, frames=FRAMES, seed=0):
  """Harmonic tones plus noise, with varied lengths and byte-level text."""
  t = frames * 1920
  n = np.arange(t) / 24000
  rng = np.random.default_rng(seed)
  audio = np.zeros((b, t, 1), np.float32)
  for i in range(b):
    f0 = 100 + 30 * i
    audio[i, :, 0] = sum(np.sin(2 * np.pi * f0 * k * n) / k for k in range(1, 5)) * 0.2 + 0.01 * rng.normal(size=t)
  lengths = np.array([t - 300 * (i % 3) for i in range(b)], np.int32)
  text = np.zeros((b, 8), np.int32)
  tl = np.zeros((b,), np.int32)
  for i in range(b):
    ids = [3] + [c + 8 for c in f"a{i}".encode()] + [2]
    text[i, :len(ids)] = ids
    tl[i] = len(ids)
  return {"audio": audio, "lengths": lengths, "text": text, "text_lengths": tl}


def flat_params(state) -> dict:
  import jax
  from jax.experimental import multihost_utils
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path({"codec": state.codec, "lm": state.lm})[0]:
    if jax.process_count() > 1:
      x = multihost_utils.process_allgather(x, tiled=True)
    out[jax.tree_util.keystr(path)] = np.asarray(x)
  return out


def run(trainer, state, step, batches, place):
  losses = []
  for b in batches:
    state, m = step(state, place(b))
    losses.append(float(m["loss"]))
  return state, np.asarray(losses)


def single(out):
  import jax
  from cat_jax.train import state as state_lib
  from cat_jax.train import step as step_lib
  trainer = state_lib.build_trainer(small_config())
  state = jax.jit(lambda k: state_lib.init_state(trainer, k))(jax.random.key(0))
  step = step_lib.make_train_step(trainer, stage=1)
  batches = [make_batch(seed=s) for s in range(STEPS)]
  state, losses = run(trainer, state, step, batches, lambda b: b)
  np.savez(out, losses=losses, **flat_params(state))


def meshes(out, shapes):
  import jax
  from cat_jax import sharding
  from cat_jax.train import parallel
  from cat_jax.train import state as state_lib
  trainer = state_lib.build_trainer(small_config())
  batches = [make_batch(seed=s) for s in range(STEPS)]
  result = {}
  for shape in shapes:
    mesh = sharding.make_mesh(*shape)
    state = parallel.init_sharded_state(trainer, mesh, jax.random.key(0))
    step = parallel.make_sharded_train_step(trainer, mesh, stage=1)
    with parallel.mesh_context(mesh):
      state, losses = run(trainer, state, step, batches, lambda b: sharding.shard_batch(b, mesh))
    tag = "x".join(map(str, shape))
    k = state.codec["decoder"][0]["transformer"]["layers"]["linear1"]["kernel"][...]
    mu = state.gen_opt.inner_states["train"].inner_state[1][0].mu
    result[tag] = {
        "kernel_spec": [list(a) if isinstance(a, tuple) else a for a in k.sharding.spec],
        "kernel_shape": list(k.shape),
        "kernel_shard_shape": list(k.addressable_shards[0].data.shape),
        "mu_spec": [list(a) if isinstance(a, tuple) else a
                    for a in mu["codec"]["decoder"][0]["transformer"]["layers"]["linear1"]["kernel"][...].sharding.spec],
    }
    np.savez(f"{out}.{tag}.npz", losses=losses, **flat_params(state))
  pathlib.Path(f"{out}.json").write_text(json.dumps(result))


def process(out, addr, pid, nproc):
  import jax
  from cat_jax import sharding
  from cat_jax.train import parallel
  from cat_jax.train import state as state_lib
  from ml_collections import ConfigDict
  cfg = small_config()
  cfg.distributed = ConfigDict({"coordinator_address": addr, "num_processes": nproc, "process_id": pid})
  assert parallel.maybe_initialize_distributed(cfg)
  assert jax.process_count() == nproc and jax.process_index() == pid
  trainer = state_lib.build_trainer(cfg)
  mesh = sharding.make_mesh(-1, 2, 1)  # data spans the processes, fsdp inside each
  state = parallel.init_sharded_state(trainer, mesh, jax.random.key(0))
  step = parallel.make_sharded_train_step(trainer, mesh, stage=1)
  batches = [make_batch(seed=s) for s in range(STEPS)]
  with parallel.mesh_context(mesh):
    state, losses = run(trainer, state, step, batches,
                        lambda b: sharding.shard_batch(parallel.local_batch(b), mesh))
  params = flat_params(state)
  if pid == 0:
    np.savez(out, losses=losses, devices=jax.device_count(), **params)
  jax.distributed.shutdown()


if __name__ == "__main__":
  mode, out = sys.argv[1], sys.argv[2]
  if mode == "single":
    single(out)
  elif mode == "meshes":
    meshes(out, [tuple(int(x) for x in s.split("x")) for s in sys.argv[3].split(",")])
  elif mode == "process":
    process(out, sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
