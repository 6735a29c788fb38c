"""Schedules, freezing and EMA."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cat_jax.errors import ConfigError
from cat_jax.train import optimizer as opt


def _cfg(**kw):
  base = {"lr": 1e-2, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "weight_decay": 0.01, "clip": 10.0, "warmup_steps": 0,
          "decay": "exponential", "decay_rate": 0.9, "decay_steps": 0, "min_lr_ratio": 0.0}
  base.update(kw)
  return opt.OptimizerConfig(**base)


def test_schedules():
  s = opt.make_schedule(_cfg(warmup_steps=10))
  assert float(s(0)) == 0.0 and float(s(5)) == pytest.approx(5e-3)
  assert float(s(10)) == pytest.approx(1e-2) and float(s(12)) == pytest.approx(1e-2 * 0.81)
  c = opt.make_schedule(_cfg(decay="cosine", decay_steps=110, warmup_steps=10, min_lr_ratio=0.1))
  assert float(c(60)) == pytest.approx(1e-2 * (0.1 + 0.9 * 0.5), rel=1e-5) and float(c(110)) == pytest.approx(1e-3)
  with pytest.raises(ConfigError):
    opt.make_schedule(_cfg(decay="linear"))


def test_freezing_gives_exactly_zero_updates():
  params = {"codec": {"encoder": {"w": jnp.ones(3)}, "quantizer": {"w": jnp.ones(2)}, "decoder": {"w": jnp.ones(4)}},
            "lm": {"w": jnp.ones(2)}}
  grads = jax.tree.map(lambda p: p * 0.5, params)
  tx = opt.make_optimizer(_cfg(), opt.trainable_label_fn("decoder"))
  upd, _ = tx.update(grads, tx.init(params), params)
  assert float(jnp.abs(upd["codec"]["encoder"]["w"]).max()) == 0.0
  assert float(jnp.abs(upd["codec"]["quantizer"]["w"]).max()) == 0.0 and float(jnp.abs(upd["lm"]["w"]).max()) == 0.0
  np.testing.assert_allclose(np.asarray(upd["codec"]["decoder"]["w"]), -1e-2 * (1 + 0.01), rtol=1e-4)  # adam step + wd
  assert opt.parse_trainable("all") == frozenset(opt.PARTS)
  assert opt.parse_trainable("encoder+quantizer") == {"encoder", "quantizer"}
  with pytest.raises(ConfigError):
    opt.parse_trainable("decoder+heads")


def test_clipping_and_ema():
  tx = opt.make_optimizer(_cfg(clip=1.0, b1=0.0, weight_decay=0.0))
  p = {"w": jnp.zeros(2)}
  g = {"w": jnp.array([300.0, 400.0])}
  upd, _ = tx.update(g, tx.init(p), p)  # clipped to norm 1 before Adam: Adam's step is then lr * sign
  np.testing.assert_allclose(np.asarray(upd["w"]), [-1e-2, -1e-2], rtol=1e-3)
  e = opt.ema_update({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 0.0])}, 0.75)
  np.testing.assert_allclose(np.asarray(e["w"]), [1.5, 1.5])
