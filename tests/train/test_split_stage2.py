"""Stage 2 as three programs (step.SplitStep: the discriminator update, the adversarial losses'
audio gradient, then the generator update) gives the single adversarial program's result:
parameters, both optimiser states, EMA, code usage, the rng stream and every metric."""
import jax
import numpy as np
import pytest

from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # compile time


def _small_cfg(fast_cfg):
  """fast_config with one sub-discriminator of each kind and one mel scale (compile time), and
  quantizer dropout, dead-code restarts and EMA on: every use of the iteration's key is exercised."""
  import ml_collections
  c = fast_cfg.copy_and_resolve_references()
  c.disc.periods = [2]
  c.disc.period_channels = (4, 8, 8, 8, 8)
  c.disc.stft_channels = 4
  c.disc.bands = [0.0, 1.0]
  c.loss.mel.windows = [256]
  c.loss.mel.n_mels = [40]
  c.quantizer_dropout = 1.0
  c.codebook_restart = ml_collections.ConfigDict({"decay": 0.5, "threshold": 0.6})  # unused rows restart
  c.optim.ema_decay = 0.9
  # Adam's default eps (1e-8) turns float rounding in a near-zero gradient element into a whole
  # lr-sized step (the two paths' gradients agree to ~1e-7, single elements of the updated params
  # then differ by ~1e-5); eps 1e-4 bounds that amplification at lr / eps, so the 1e-5 bound
  # below measures the programs, not Adam's sign-like first step.
  c.optim.gen.eps = c.optim.disc.eps = 1e-4
  return c


@pytest.fixture(scope="module")
def setup(fast_cfg):
  trainer = state_lib.build_trainer(_small_cfg(fast_cfg))
  assert trainer.config.stage2_programs == 3  # the default the training loop uses
  state = jax.jit(lambda k: state_lib.init_state(trainer, k), compiler_options=FAST)(jax.random.key(0))  # eager init: slower
  one = step_lib.make_train_step(trainer, stage=2, donate=False, compiler_options=FAST, split=False)
  split = step_lib.make_train_step(trainer, stage=2, donate=False, compiler_options=FAST)
  return trainer, state, one, split


def _assert_trees_close(a, b, what):
  la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
  assert jax.tree.structure(a) == jax.tree.structure(b), what
  for (path, x), (_, y) in zip(la, lb):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5,
                               err_msg=f"{what}{jax.tree_util.keystr(path)}")


def test_split_program_kinds(setup):
  trainer, _, one, split = setup
  assert isinstance(split, step_lib.SplitStep) and not isinstance(one, step_lib.SplitStep)
  assert not step_lib.split_applies(trainer, 1) and not step_lib.split_applies(trainer, None)
  assert step_lib.split_applies(trainer, 2) and not step_lib.split_applies(trainer, 2, split=False)


def test_three_programs_equal_one(setup, batch_fn):
  """Two iterations (the second from each path's own state): the same state and metrics."""
  trainer, state, one, split = setup
  b1, b2 = batch_fn(seed=0), batch_fn(seed=1)
  s_one, m_one = one(state, b1)
  mid, d_mets, y = split.disc(state, b1)  # program 1 alone: only the discriminators move
  for part in ("codec", "lm", "gen_opt", "ema", "rng", "step", "skipped", "code_usage"):
    _assert_trees_close(getattr(state, part), getattr(mid, part), f"disc program changed {part}")
  assert int(d_mets["disc_skipped"]) == 0
  assert y.shape == b1["audio"].shape and float(np.abs(np.asarray(y)).max()) > 0
  g, a_mets = split.adv(mid.disc, b1, y)
  assert sorted(a_mets) == ["adv", "feat"] and g.shape == y.shape
  assert float(np.abs(np.asarray(g)).max()) > 0
  s_two, m_two = split.gen(mid, b1, {**d_mets, **a_mets}, g)
  assert int(m_one["codebook_restarts"]) > 0 and float(m_one["active_mean"]) < 4  # the key was used
  for part in ("codec", "lm", "disc", "gen_opt", "disc_opt", "ema", "rng", "step", "skipped", "code_usage"):
    _assert_trees_close(getattr(s_one, part), getattr(s_two, part), f"step 1 {part}")
  assert sorted(m_one) == sorted(m_two)
  _assert_trees_close(m_one, m_two, "step 1 metrics")
  s_one2, m_one2 = one(s_one, b2)
  s_two2, m_two2 = split(s_two, b2)  # SplitStep.__call__: all three programs
  _assert_trees_close(s_one2, s_two2, "step 2 state")
  _assert_trees_close(m_one2, m_two2, "step 2 metrics")
  assert int(s_two2.step) == 2 and float(m_two2["disc_loss"]) > 0 and float(m_two2["feat"]) > 0
