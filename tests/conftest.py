"""Shared fixtures: golden vectors from the reference, tiny configs."""
import os
import pathlib

import numpy as np
import pytest

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN_TINY = DATA / "golden_tiny"
RELEASED = DATA / "released"


@pytest.fixture(scope="session")
def golden_dir():
  return GOLDEN_TINY


@pytest.fixture(scope="session")
def golden():
  with np.load(GOLDEN_TINY / "cases.npz") as z:
    return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def tiny_model():
  from cat_jax import CAT
  return CAT.from_pretrained(GOLDEN_TINY)


@pytest.fixture(scope="session")
def tiny_config_dict():
  import json
  with open(GOLDEN_TINY / "config.json") as f:
    return json.load(f)
