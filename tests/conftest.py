"""Shared fixtures: golden vectors from the reference, tiny configs."""
import atexit
import os
import pathlib
import shutil
import tempfile

import numpy as np
import pytest

# Tests run tiny models: XLA:CPU's expensive LLVM passes cost far more compile time than they save
# at run time. Set before any test imports jax; subprocesses inherit it.
_FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if _FAST_XLA not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FAST_XLA).strip()

# Many tests (and the subprocesses and notebook kernels they start) compile the same tiny programs
# from fresh jit wrappers: one persistent compilation cache per test session turns those into loads.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _CACHE = tempfile.mkdtemp(prefix="cat_jax_test_xla_cache_")
  atexit.register(shutil.rmtree, _CACHE, True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN_TINY = DATA / "golden_tiny"
GOLDEN_V2 = DATA / "golden_v2_tiny"
RELEASED = DATA / "released"


@pytest.fixture(scope="session")
def golden_dir():
  return GOLDEN_TINY


def _cases(folder) -> dict:
  """A golden folder's cases.npz as a dict of arrays."""
  with np.load(folder / "cases.npz") as z:
    return {k: z[k] for k in z.files}


def corrupt_checkpoint(step_dir) -> None:
  """Truncates every array file of a training checkpoint step, as a crash mid-copy or a bad disk would."""
  for root, _, files in os.walk(step_dir / "state"):
    for f in files:
      if not f.endswith((".json", "_METADATA")) and "manifest" not in f:
        open(os.path.join(root, f), "wb").close()


@pytest.fixture(scope="session")
def golden():
  return _cases(GOLDEN_TINY)


@pytest.fixture(scope="session")
def tiny_model():
  from cat_jax import CAT
  return CAT.from_pretrained(GOLDEN_TINY)


@pytest.fixture(scope="session")
def g2():
  """golden/v2-tiny: vectors of the v2 reference (48 kHz stereo, channel interleave)."""
  return _cases(GOLDEN_V2)


@pytest.fixture(scope="session")
def v2_model():
  from cat_jax import CAT
  return CAT.from_pretrained(GOLDEN_V2)


@pytest.fixture(scope="session")
def tiny_config_dict():
  import json
  with open(GOLDEN_TINY / "config.json") as f:
    return json.load(f)
