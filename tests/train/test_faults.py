"""Faults a run survives without losing or mislabelling anything: a corrupt newest checkpoint is
moved aside and the run finishes (equal to an uninterrupted run), export never labels another
step's weights, one live run per WORKDIR, metrics.jsonl cut back to the restored step, readers
never create folders."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from cat_jax.checkpoint import params_equal
from cat_jax.errors import CheckpointError
from cat_jax.train.export import restore_codec
from cat_jax.train.logger import cut_back
from cat_jax.train.workdir_lock import LOCK, WorkdirLock, WorkdirLocked
from tests.conftest import corrupt_checkpoint

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
  """A folder of six short synthetic clips (harmonics and noise): enough for a tiny run."""
  from cat_jax.audio import write_audio
  out = tmp_path_factory.mktemp("clips")
  rng = np.random.default_rng(0)
  n = np.arange(24000) / 24000
  for i in range(6):
    x = sum(np.sin(2 * np.pi * (110 + 30 * i) * k * n) / k for k in range(1, 5)) * 0.2 + 0.01 * rng.normal(size=n.size)
    write_audio(out / f"c{i}.wav", x[None].astype(np.float32), 24000)
  return out


def _cfg(clips, **overrides):
  sys.path.insert(0, str(ROOT))
  from configs import tiny
  cfg = tiny.get_config("ci")
  cfg.data.source = f"folder:{clips}"
  cfg.eval_every = 0
  for k, v in overrides.items():
    cfg[k] = v
  return cfg


@pytest.mark.integration
@pytest.mark.slow  # CI time (the default suite stays under 15 minutes); tests/test_checkpoint.py covers the skip
def test_corrupt_newest_checkpoint_is_moved_aside_and_the_run_finishes(clips, tmp_path, capsys):
  from cat_jax.cli import main
  from cat_jax.train import loop
  straight = tmp_path / "straight"
  loop.train(_cfg(clips), str(straight), log_every=1)
  ref, _ = restore_codec(str(straight))

  wd = tmp_path / "run"
  loop.train(_cfg(clips), str(wd), log_every=1)
  corrupt_checkpoint(wd / "checkpoints" / "4")
  capsys.readouterr()
  # export never labels another step's weights: --step 4 is refused, the newest readable is step 2
  assert main(["export", "--checkpoint", str(wd), "--out", str(tmp_path / "e4"), "--step", "4"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "step 4" in err and "unreadable" in err, err
  assert not (tmp_path / "e4").exists()
  assert main(["export", "--checkpoint", str(wd), "--out", str(tmp_path / "e"), "--step", "9"]) == 2
  assert "no checkpoint for step 9" in capsys.readouterr().err and not (tmp_path / "e").exists()
  assert main(["export", "--checkpoint", str(wd), "--out", str(tmp_path / "e")]) == 0
  assert "step 4" in capsys.readouterr().out
  assert "training step 2" in (tmp_path / "e" / "README.md").read_text()

  res = loop.train(_cfg(clips), str(wd), log_every=1)  # resumes from 2, saves 4 again
  out = capsys.readouterr().out
  assert res.step == 4 and "resumed from step 2" in out
  moved = [line for line in out.splitlines() if "unreadable" in line]
  assert len(moved) == 1 and "moved it to" in moved[0], out
  aside = os.listdir(wd / "corrupt")
  assert len(aside) == 1 and aside[0].startswith("step_4.")  # kept for inspection
  got, step = restore_codec(str(wd))
  assert step == 4 and params_equal(got.params, ref.params)
  rows = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]  # steps 3-4 of the first run were cut back
  assert not (wd / LOCK).exists()  # released

  # a lock left by a run that died (kill -9) is taken over with a message
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (wd / LOCK).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}))
  res = loop.train(_cfg(clips, num_steps=5), str(wd), log_every=1)
  assert res.step == 5 and f"taking over {wd / LOCK} from a run that is gone (pid {dead.pid}" in capsys.readouterr().out
  assert not (wd / LOCK).exists()


@pytest.mark.integration
def test_a_second_run_on_a_locked_workdir_exits_2_naming_the_owner(clips, tmp_path):
  wd = tmp_path / "run"
  owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
  try:
    wd.mkdir()
    (wd / LOCK).write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname(),
                                       "started": "2026-01-01 00:00:00 UTC"}))
    cmd = [sys.executable, str(ROOT / "train.py"), "--config", f"{ROOT}/configs/tiny.py:ci", f"--workdir={wd}",
           f"--config.data.source=folder:{clips}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  finally:
    owner.kill()
    owner.wait()
  assert done.returncode == 2, done.stdout + done.stderr
  lines = done.stderr.strip().splitlines()
  assert len(lines) == 1 and f"pid {owner.pid} on {socket.gethostname()}" in lines[0], done.stderr
  assert "in use by another run" in lines[0]
  assert not (wd / "checkpoints").exists()  # refused before any work


def test_workdir_lock_in_process(tmp_path):
  a = WorkdirLock(str(tmp_path))
  with a:
    owner = json.loads((tmp_path / LOCK).read_text())
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname() and owner["started"]
    with pytest.raises(WorkdirLocked, match=f"pid {os.getpid()}"):
      WorkdirLock(str(tmp_path)).acquire()
  assert not (tmp_path / LOCK).exists()
  (tmp_path / LOCK).write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "started": "x"}))
  with pytest.raises(WorkdirLocked, match="on elsewhere"):  # another host: cannot tell, so refuse
    WorkdirLock(str(tmp_path)).acquire()


def test_metrics_cut_back_to_the_restored_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": s, "loss": 1.0} for s in range(1, 21)] + [{"step": 10, "eval/mel": 2.0}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 21, "lo')  # torn by kill -9
  assert cut_back(str(path), 10) == 11
  kept = [json.loads(line) for line in path.read_text().splitlines()]
  assert [r["step"] for r in kept] == list(range(1, 11)) + [10] and "eval/mel" in kept[-1]
  assert cut_back(str(path), 10) == 0


def test_readers_never_create_folders(tmp_path, capsys):
  from cat_jax.cli import main
  typo = tmp_path / "typo_dir"
  with pytest.raises(CheckpointError, match="no training checkpoint"):
    restore_codec(str(typo))
  assert main(["export", "--checkpoint", str(typo), "--out", str(tmp_path / "out")]) == 2
  (tmp_path / "a.wav").write_bytes(b"")
  assert main(["eval", "--checkpoint", str(typo), "--data", str(tmp_path / "a.wav")]) == 2
  assert "no training checkpoint" in capsys.readouterr().err
  assert not typo.exists() and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fault_injection_bench(tmp_path):
  """bench/faults.py, short: kill -9 during a step, a save and an eval, resume, same params."""
  done = subprocess.run([sys.executable, str(ROOT / "bench" / "faults.py"), "--kills", "3", "--steps", "8",
                         "--dir", str(tmp_path)], capture_output=True, text=True, timeout=1800)
  assert done.returncode == 0 and "params equal to the straight run: True" in done.stdout, done.stdout + done.stderr
