"""Fault injection: kill -9 a tiny training run at chosen moments (during a step, during a
checkpoint save, during an eval), rerun the same command after each kill, and check that the
run ends with the same parameters as an uninterrupted one and logs each step once.

  .venv/bin/python bench/faults.py [--kills 10] [--steps 12] [--seed 0]

Prints one line per kill (phase, the step it landed at, the step the rerun resumed from) and
the figures: kills per phase, resumes, stale locks taken over, checkpoints moved aside,
wall time; exits 1 if the final parameters or metrics.jsonl differ from the straight run's.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
PHASES = ("step", "save", "eval")


def make_clips(out: str) -> None:
  import numpy as np
  from cat_jax.audio import write_audio
  rng = np.random.default_rng(0)
  n = np.arange(24000) / 24000
  for i in range(6):
    x = sum(np.sin(2 * np.pi * (110 + 30 * i) * k * n) / k for k in range(1, 5)) * 0.2 + 0.01 * rng.normal(size=n.size)
    write_audio(os.path.join(out, f"c{i}.wav"), x[None].astype(np.float32), 24000)


def command(clips: str, wd: str, steps: int, every: int, eval_every: int) -> list[str]:
  return [sys.executable, os.path.join(ROOT, "train.py"), "--config", f"{ROOT}/configs/tiny.py:ci",
          f"--workdir={wd}", f"--config.data.source=folder:{clips}", f"--config.num_steps={steps}",
          f"--config.checkpoint_every={every}", f"--config.eval_every={eval_every}", "--log_every=1"]


def train_rows(wd: str) -> list[dict]:
  path = os.path.join(wd, "metrics.jsonl")
  rows = []
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          rows.append(json.loads(line))
        except ValueError:
          pass
  return rows


def committed(wd: str) -> list[int]:
  d = os.path.join(wd, "checkpoints")
  return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


def saving(wd: str) -> set[int]:
  """Steps whose checkpoint is being written (Orbax's temporary folders, N.orbax-checkpoint-tmp-*)."""
  d = os.path.join(wd, "checkpoints")
  names = os.listdir(d) if os.path.isdir(d) else []
  return {int(x.split(".")[0]) for x in names if "tmp" in x and x.split(".")[0].isdigit()}


def kill_at(cmd, env, wd, phase, eval_every, rng, timeout=900):
  """Runs `cmd` and kill -9s it at `phase` once it has made progress. -> (killed, step, output)."""
  log = tempfile.TemporaryFile("w+")
  proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
  seen = max([r["step"] for r in train_rows(wd) if "loss" in r] or [0])
  last = max(committed(wd) or [0])
  leftover = saving(wd)  # temporary folders a kill mid-save left behind: not this run's save
  deadline = time.time() + timeout
  killed = False
  while proc.poll() is None and time.time() < deadline:
    steps = [r["step"] for r in train_rows(wd) if "loss" in r]
    new = [s for s in steps if s > seen]
    if phase == "step" and new:
      time.sleep(rng.uniform(0.0, 0.3))  # somewhere inside the next step(s)
      killed = True
    elif phase == "save" and any(s > last for s in saving(wd) - leftover):
      killed = True
    elif phase == "eval" and any(s % eval_every == 0 for s in new):  # train row logged; eval runs next
      killed = True
    if killed:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  proc.wait()
  log.seek(0)
  step = max([r["step"] for r in train_rows(wd) if "loss" in r] or [0])
  return killed and proc.returncode == -signal.SIGKILL, step, log.read()


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--kills", type=int, default=10)
  p.add_argument("--steps", type=int, default=12)
  p.add_argument("--every", type=int, default=3, help="checkpoint_every")
  p.add_argument("--eval-every", type=int, default=4)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dir", default=None, help="work folder (default: a temp folder)")
  args = p.parse_args()
  rng = random.Random(args.seed)
  root = args.dir or tempfile.mkdtemp(prefix="cat_jax_faults_")
  clips = os.path.join(root, "clips")
  os.makedirs(clips, exist_ok=True)
  make_clips(clips)
  env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=os.path.join(root, "xla"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  t0 = time.perf_counter()
  straight = os.path.join(root, "straight")
  done = subprocess.run(command(clips, straight, args.steps, args.every, args.eval_every), env=env,
                        capture_output=True, text=True)
  if done.returncode != 0:
    print(done.stdout + done.stderr)
    return 1
  t_straight = time.perf_counter() - t0

  wd = os.path.join(root, "faulted")
  cmd = command(clips, wd, args.steps, args.every, args.eval_every)
  figures = {ph: 0 for ph in PHASES}
  takeovers = moved = resumes = misses = 0
  t1 = time.perf_counter()
  for i in range(args.kills):
    phase = PHASES[i % len(PHASES)]
    before = committed(wd)
    killed, step, out = kill_at(cmd, env, wd, phase, args.eval_every, rng)
    takeovers += "taking over" in out
    moved += out.count("moved it to")
    resumes += "resumed from step" in out
    if not killed:
      misses += 1
      print(f"kill {i + 1:2d}: {phase:4s} missed (the run {'finished' if step >= args.steps else 'stopped'} "
            f"at step {step})", flush=True)
      if step >= args.steps:
        break
      continue
    figures[phase] += 1
    print(f"kill {i + 1:2d}: {phase:4s} at logged step {step:2d} (checkpoints before: {before}, after: "
          f"{committed(wd)})", flush=True)
  final = subprocess.run(cmd, env=env, capture_output=True, text=True)
  out = final.stdout + final.stderr
  takeovers += "taking over" in out
  moved += out.count("moved it to")
  resumes += "resumed from step" in out
  t_faulted = time.perf_counter() - t1
  if final.returncode != 0:
    print(out)
    return 1

  from cat_jax.checkpoint import params_equal
  from cat_jax.train.export import restore_codec
  a, sa = restore_codec(straight)
  b, sb = restore_codec(wd)
  same = sa == sb == args.steps and params_equal(a.params, b.params)
  logged = [r["step"] for r in train_rows(wd) if "loss" in r]
  once = logged == list(range(1, args.steps + 1))
  evals = [r["step"] for r in train_rows(wd) if "eval/mel" in r]
  evals_once = evals == list(range(args.eval_every, args.steps + 1, args.eval_every))
  print(f"kills: {sum(figures.values())} ({', '.join(f'{k} {v}' for k, v in figures.items())}; {misses} missed); "
        f"resumes {resumes}; stale locks taken over {takeovers}; checkpoints moved aside {moved}")
  print(f"straight run {t_straight:.0f} s; faulted run with reruns {t_faulted:.0f} s; workdir {root}")
  print(f"final step {sb}, params equal to the straight run: {same}; metrics.jsonl each step once: {once}; "
        f"each eval once: {evals_once}")
  return 0 if same and once and evals_once else 1


if __name__ == "__main__":
  sys.exit(main())
