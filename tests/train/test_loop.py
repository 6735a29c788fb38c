"""The training loop end to end: train, checkpoint, resume, evaluate, export, re-import; and
with real processes: SIGTERM and kill -9 resumes give the same parameters as one straight run."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from cat_jax import CAT
from cat_jax.checkpoint import params_equal
from cat_jax.train.export import restore_codec

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  from cat_jax.data.corpus import build_corpus
  out = tmp_path_factory.mktemp("corpus")
  build_corpus(out, seconds_of_speech=8, music_pieces=1, seed=0, recorded_max_files=3)
  return out


def _ci_config(corpus, **overrides):
  sys.path.insert(0, str(ROOT))
  from configs import tiny
  cfg = tiny.get_config("ci")
  cfg.data.source = f"folder:{corpus}"
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


def test_evaluation_data_is_not_gain_augmented(monkeypatch):
  """Training batches get data.gain_db; the held-out evaluation batch (augment=False) does not."""
  from cat_jax.data import pipeline
  from cat_jax.train import loop
  seen = []
  monkeypatch.setattr(pipeline, "make_iterator", lambda source, **kw: seen.append(kw["gain_db"]))
  cfg = _ci_config("/nonexistent")
  cfg.data.gain_db = (-6.0, 6.0)
  loop.make_data(cfg)
  loop.make_data(cfg, augment=False)
  assert seen == [(-6.0, 6.0), None]


@pytest.mark.integration
def test_train_checkpoint_resume_eval_export(corpus, tmp_path, capsys):
  from cat_jax.eval.evaluate import evaluate
  from cat_jax.train import loop
  wd = tmp_path / "run"
  res = loop.train(_ci_config(corpus), str(wd), log_every=1)
  assert res.step == 4 and not res.preempted
  assert sorted(int(d) for d in os.listdir(wd / "checkpoints") if d.isdigit()) == [2, 4]
  rows = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  train_rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  for key in ("loss", "mel", "commit", "codebook", "sem", "grad_norm/gen", "lr/gen", "codebook_usage/0"):
    assert all(np.isfinite(r[key]) for r in train_rows), key
  evals = [r for r in rows if "eval/mel" in r]
  assert [r["step"] for r in evals] == [2, 4] and "eval/si_sdr@1" in evals[0]
  for key in ("stoi", "pesq_wb", "mel_loss", "stft_dist", "si_sdr", "sdr"):  # the paper's metrics, per count
    assert f"eval/paper/{key}@1" in evals[0] and f"eval/paper/{key}@8" in evals[0], key
  assert np.isfinite(evals[0]["eval/paper/mel_loss@8"])
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(wd / "tensorboard"))

  res2 = loop.train(_ci_config(corpus, num_steps=6), str(wd), log_every=1)
  assert res2.step == 6
  assert "resumed from step 4" in capsys.readouterr().out

  model, step = restore_codec(str(wd))
  assert step == 6
  from cat_jax.cli import main
  assert main(["export", "--checkpoint", str(wd), "--out", str(tmp_path / "export"),
               "--max-shard-bytes", "300000"]) == 0
  files = os.listdir(tmp_path / "export")
  assert "README.md" in files and "model.safetensors.index.json" in files
  again = CAT.from_pretrained(tmp_path / "export")
  assert params_equal(again.params, model.params)
  codes = np.random.default_rng(0).integers(0, 64, (8, 1, 5))
  np.testing.assert_array_equal(again.decode(codes).audio, model.decode(codes).audio)

  clip = np.random.default_rng(1).normal(size=(1, 12000)).astype(np.float32) * 0.1
  table = evaluate(again, [clip], (1, 8))
  assert [r["codebooks"] for r in table] == [1, 8] and all(np.isfinite(r["mel_loss"]) for r in table)


def _train_cmd(corpus, wd, steps, every):
  return [sys.executable, str(ROOT / "train.py"), "--config", f"{ROOT}/configs/tiny.py:ci", f"--workdir={wd}",
          f"--config.data.source=folder:{corpus}", f"--config.num_steps={steps}",
          f"--config.checkpoint_every={every}", "--config.eval_every=0", "--log_every=5"]


def _env(cache):
  env = dict(os.environ)
  env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def _run_until_checkpoint(cmd, env, ckpt_dir, step, sig):
  """Starts a run, waits for checkpoint `step` to be committed, then sends `sig`."""
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  while not (ckpt_dir / str(step)).exists():
    assert proc.poll() is None, proc.stdout.read()
    assert time.time() < deadline
    time.sleep(0.02)
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=300)
  return proc.returncode, out


@pytest.mark.integration
@pytest.mark.parametrize("sig", [signal.SIGKILL,
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])  # CI time: 15 minutes
def test_resume_after_a_signal_is_exact(corpus, tmp_path, sig):
  """N steps straight == N/2 + SIGTERM (saves, exits 0) or kill -9 + rerun: same parameters."""
  env = _env(tmp_path / "jax_cache")
  n, half = 30, 15
  straight = tmp_path / "straight"
  done = subprocess.run(_train_cmd(corpus, straight, n, half), env=env, capture_output=True, text=True, timeout=900)
  assert done.returncode == 0, done.stdout + done.stderr
  ref, _ = restore_codec(str(straight))

  wd = tmp_path / "signalled"
  rc, out = _run_until_checkpoint(_train_cmd(corpus, wd, n, half), env, wd / "checkpoints", half, sig)
  if sig == signal.SIGTERM:
    assert rc == 0 and "SIGTERM: saved step" in out, out
  else:
    assert rc == -signal.SIGKILL
  again = subprocess.run(_train_cmd(corpus, wd, n, half), env=env, capture_output=True, text=True, timeout=900)
  assert again.returncode == 0 and "resumed from step" in again.stdout, again.stdout + again.stderr
  got, step = restore_codec(str(wd))
  assert step == n and params_equal(got.params, ref.params)
  if sig == signal.SIGKILL:
    assert "taking over" in again.stdout  # the killed run's lock (its pid is gone)
    logged = [json.loads(line)["step"] for line in (wd / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(5, n + 1, 5))  # each step once: the killed run's rows past 15 were cut back


RESHARD = r"""
import os, sys
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
sys.path.insert(0, sys.argv[2])
import jax, numpy as np
from configs import tiny
from cat_jax import sharding
from cat_jax.train import parallel
from cat_jax.train.checkpoints import TrainCheckpointer
from cat_jax.train import state as state_lib
cfg = tiny.get_config("ci")
trainer = state_lib.build_trainer(cfg)
mesh_a = sharding.make_mesh(8, 1, 1)
state = parallel.init_sharded_state(trainer, mesh_a, jax.random.key(3))
ck = TrainCheckpointer(sys.argv[1])
ck.save(7, state, {"step": 7}, {"pos": 7}, wait=True)
ck.close()
mesh_b = sharding.make_mesh(1, 2, 2, devices=jax.devices()[:4])
ck = TrainCheckpointer(sys.argv[1])
step, back, meta, data = ck.restore(parallel.sharded_abstract_state(trainer, mesh_b))
assert step == 7 and data == {"pos": 7}, (step, data)
def host(x):
  return np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
a, b = jax.tree.leaves(state), jax.tree.leaves(back)
assert len(a) == len(b) and all(np.array_equal(host(x), host(y)) for x, y in zip(a, b))
devs = {d for x in b for d in x.sharding.device_set}
assert devs == set(jax.devices()[:4]), devs
k = back.codec["decoder"][0]["transformer"]["layers"]["linear1"]["kernel"]
assert k.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor"), k.sharding.spec
print("RESHARD_OK")
"""


@pytest.mark.integration
@pytest.mark.slow  # CI time: the default suite stays under 15 minutes on 2 cores
def test_restore_onto_a_different_mesh_and_device_count(tmp_path):
  out = subprocess.run([sys.executable, "-c", RESHARD, str(tmp_path / "ck"), str(ROOT)], capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
  assert "RESHARD_OK" in out.stdout, out.stdout + out.stderr


@pytest.mark.integration
@pytest.mark.slow  # CI time: the default suite stays under 15 minutes on 2 cores
def test_stage2_batch_is_honoured_and_resumes_exactly(corpus, tmp_path):
  """schedule.stage2_batch_size feeds stage 2 (batch 2 -> 1 after 2 steps: 2 + 2 + 1 + 1 clips), and a
  run stopped at the switch and resumed equals the straight run: parameters and data position."""
  from cat_jax.train import loop

  def cfg(num_steps):
    c = _ci_config(corpus, num_steps=num_steps, checkpoint_every=2, eval_every=0)
    c.schedule.stage1_steps, c.schedule.stage2_steps = 2, 2
    c.schedule.stage2_batch_size = 1  # untied from batch_size (2)
    c.loss.adv = c.loss.feat = 0.0  # stage 2 without discriminators: no adversarial compile here
    return c

  def clips_seen(wd, step):
    return json.loads((wd / "data_state" / str(step) / "p0.json").read_text())["stats"]["good"]

  straight = tmp_path / "straight"
  assert loop.train(cfg(4), str(straight), log_every=1).step == 4
  assert (clips_seen(straight, 2), clips_seen(straight, 4)) == (4, 6)
  split = tmp_path / "split"
  loop.train(cfg(2), str(split), log_every=1)
  assert loop.train(cfg(4), str(split), log_every=1).step == 4
  assert clips_seen(split, 4) == 6
  a, _ = restore_codec(str(straight))
  b, _ = restore_codec(str(split))
  assert params_equal(a.params, b.params)
