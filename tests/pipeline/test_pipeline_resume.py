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


def test_resize_keeps_the_example_stream(small_folder):
  """The loop switches to the stage-2 batch with resize(): the examples run on in the same order,
  and a resume after the switch (a fresh iterator at the new batch + the saved state) continues exactly."""
  def flat(bs):
    return {k: np.concatenate([b[k] for b in bs]) for k in bs[0]}
  ref = flat(batches(make_iterator("folder:" + small_folder, **KW), 4))  # 12 examples, in batches of 3
  it = make_iterator("folder:" + small_folder, **KW)
  first = batches(it, 2)
  it.resize(2)
  state = json.loads(json.dumps(it.get_state()))
  after = batches(it, 3)
  assert [b["audio"].shape[0] for b in after] == [2, 2, 2]
  assert_batches_equal([flat(first + after)], [ref])
  resumed = make_iterator("folder:" + small_folder, **{**KW, "batch_size": 2})
  resumed.set_state(state)
  assert_batches_equal(batches(resumed, 3), after)
