"""Runs tests/sharding/sharding_worker.py in subprocesses: the device count is fixed when jax is imported,
and this pytest process has one CPU device."""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")
# Optimisation level 0 halves XLA:CPU compile time; every run uses the same flags, so results compare.
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def worker_env(devices: int) -> dict:
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env["XLA_FLAGS"] = f"{FAST_XLA} --xla_force_host_platform_device_count={devices}"
  env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parents[2]), env.get("PYTHONPATH", "")])
  return env


def run_worker(args, devices: int, timeout: int = 900):
  proc = subprocess.run([sys.executable, str(WORKER), *map(str, args)], env=worker_env(devices),
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-4000:]
  return proc


def start_worker(args, devices: int):
  return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=worker_env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def load(path) -> dict:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def reference(tmp_path_factory):
  """Losses and parameters after the worker's steps on one device."""
  out = tmp_path_factory.mktemp("ref") / "ref.npz"
  run_worker(["single", out], devices=1)
  return load(out)
