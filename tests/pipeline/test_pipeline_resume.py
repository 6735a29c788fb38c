"""Determinism: resume from a saved state continues batch for batch; worker count does not change batches."""
import json

import numpy as np
import pytest

from cat_jax.data import make_iterator
from conftest import assert_batches_equal, batches

KW = dict(sample_rate=24000, channels=1, segment_samples=12000, batch_size=3, seed=7, max_text_len=64,
          gain_db=(-6.0, 3.0))


def test_resume_equals_uninterrupted(small_folder):
  ref = batches(make_iterator("folder:" + small_folder, **KW), 7)  # crosses two epoch boundaries
  it = make_iterator("folder:" + small_folder, **KW)
  assert_batches_equal(batches(it, 3), ref[:3])
  state = json.loads(json.dumps(it.get_state()))  # the state survives JSON (grain checkpoints)
  assert state["stats"]["good"] == 9
  resumed = make_iterator("folder:" + small_folder, **KW)
  resumed.set_state(state)
  assert resumed.stats.good == 9
  assert_batches_equal(batches(resumed, 4), ref[3:])
  other = batches(make_iterator("folder:" + small_folder, **{**KW, "seed": 8}), 1)
  assert not np.array_equal(other[0]["audio"], ref[0]["audio"])


def test_workers_same_batches(small_folder):
  ref = batches(make_iterator("folder:" + small_folder, **KW), 3)
  it = make_iterator("folder:" + small_folder, num_workers=2, **KW)
  try:
    assert_batches_equal(batches(it, 3), ref)
    assert it.get_state()["stats"]["good"] == 9
  finally:
    it.close()


@pytest.mark.slow  # starts two pools of worker processes (about 30 s on the shared 2-core machine)
def test_workers_resume(small_folder):
  ref = batches(make_iterator("folder:" + small_folder, **KW), 5)
  it = make_iterator("folder:" + small_folder, num_workers=2, **KW)
  try:
    assert_batches_equal(batches(it, 3), ref[:3])
    state = json.loads(json.dumps(it.get_state()))
  finally:
    it.close()
  resumed = make_iterator("folder:" + small_folder, num_workers=2, **KW)
  try:
    resumed.set_state(state)
    assert_batches_equal(batches(resumed, 2), ref[3:5])
  finally:
    resumed.close()
