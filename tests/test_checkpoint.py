"""Training checkpoints: a corrupt newest checkpoint is reported and skipped; data positions
travel with their step; keep-last-K plus keep-best."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cat_jax.errors import CheckpointError
from cat_jax.train.checkpoints import TrainCheckpointer
from tests.conftest import corrupt_checkpoint


def _state(v):
  return {"w": jnp.full((4, 3), v, jnp.float32), "step": jnp.int32(v)}


def _abstract():
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), _state(0))


def test_corrupt_newest_checkpoint_is_skipped(tmp_path, capsys):
  ck = TrainCheckpointer(str(tmp_path), keep=5, best_metric=None)
  for s in (1, 2):
    ck.save(s, _state(s), {"step": s}, {"pos": s * 10}, wait=True)
  ck.close()
  corrupt_checkpoint(tmp_path / "checkpoints" / "2")
  ck = TrainCheckpointer(str(tmp_path), keep=5, best_metric=None)
  step, state, meta, data = ck.restore(_abstract())
  ck.close()
  assert step == 1 and meta == {"step": 1} and data == {"pos": 10}
  np.testing.assert_array_equal(np.asarray(state["w"]), np.full((4, 3), 1.0))
  assert "step 2" in capsys.readouterr().out


def test_keep_last_and_best(tmp_path):
  ck = TrainCheckpointer(str(tmp_path), keep=2, best_metric="eval/mel")
  mels = {1: 5.0, 2: 1.0, 3: 4.0, 4: 3.0, 5: 6.0}
  for s, m in mels.items():
    ck.save(s, _state(s), {"step": s}, None, metrics={"eval/mel": m}, wait=True)
  assert ck.steps() == [2, 4, 5]  # best (step 2) + the last two
  ck.close()


def test_no_checkpoint_and_missing_step(tmp_path):
  ck = TrainCheckpointer(str(tmp_path))
  assert ck.restore(_abstract()) is None
  ck.save(3, _state(3), {"step": 3}, None, wait=True)
  with pytest.raises(CheckpointError, match="no checkpoint for step 7"):
    ck.restore(_abstract(), step=7)
  ck.close()


def test_unreadable_step_is_refused_exactly_or_moved_aside(tmp_path, capsys):
  ck = TrainCheckpointer(str(tmp_path), keep=5, best_metric=None)
  for s in (1, 2):
    ck.save(s, _state(s), {"step": s}, {"pos": s}, wait=True)
  ck.close()
  corrupt_checkpoint(tmp_path / "checkpoints" / "2")
  ck = TrainCheckpointer(str(tmp_path), keep=5, best_metric=None)
  with pytest.raises(CheckpointError, match="step 2 .* is unreadable"):  # never step 1 instead
    ck.restore(_abstract(), step=2)
  step, *_ = ck.restore(_abstract(), move_aside=True)
  assert step == 1 and ck.steps() == [1]
  (aside,) = os.listdir(tmp_path / "corrupt")
  assert aside.startswith("step_2.") and f"moved it to {tmp_path / 'corrupt' / aside}" in capsys.readouterr().out
  ck.save(2, _state(5), {"step": 2}, None, wait=True)  # the step can be saved again
  assert ck.restore(_abstract())[0] == 2
  ck.close()


def test_no_step_readable_moves_nothing(tmp_path):
  """Every step unreadable (here: another architecture than the run's) is an error, not a fresh start."""
  ck = TrainCheckpointer(str(tmp_path), keep=5, best_metric=None)
  for s in (1, 2):
    ck.save(s, _state(s), {"step": s}, None, wait=True)
  other = {"w": jax.ShapeDtypeStruct((5, 3), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
  with pytest.raises(CheckpointError, match=r"no readable checkpoint .*tried steps \[2, 1\].*new WORKDIR"):
    ck.restore(other, move_aside=True)
  assert ck.steps() == [1, 2] and not (tmp_path / "corrupt").exists()
  ck.close()
