"""The joint train step on a tiny model: gradients, stage separation, skips, metrics."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cat_jax.train import losses
from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib


def _leaves(tree):
  return jax.tree.leaves(tree)


def _changed(a, b):
  """Per-leaf: did any element change?"""
  return [bool(np.any(np.asarray(x) != np.asarray(y))) for x, y in zip(_leaves(a), _leaves(b))]


@pytest.fixture(scope="module")
def setup(fast_cfg, batch_fn):
  global make_batch
  make_batch = batch_fn
  trainer = state_lib.build_trainer(fast_cfg)
  state = state_lib.init_state(trainer, jax.random.key(0))
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # compile time
  s1 = step_lib.make_train_step(trainer, stage=1, donate=False, compiler_options=fast)
  s2 = step_lib.make_train_step(trainer, stage=2, donate=False, compiler_options=fast)
  return trainer, state, s1, s2


@pytest.fixture(scope="module")
def stage1_result(setup):
  trainer, state, s1, _ = setup
  return s1(state, make_batch())


@pytest.fixture(scope="module")
def stage2_result(setup):
  trainer, state, _, s2 = setup
  return s2(state, make_batch())


def test_stage1_updates_every_generator_and_lm_param_not_discs(setup, stage1_result):
  _, state, _, _ = setup
  new, m = stage1_result
  for k in ("loss", "mel", "sem", "commit", "codebook", "grad_norm/gen"):
    assert np.isfinite(float(m[k])), k
  assert float(m["sem"]) > 0 and float(m["mel"]) > 0
  for part in ("encoder", "quantizer", "decoder", "lm"):
    assert float(m[f"grad_norm/{part}"]) > 0, part
  # weight decay is 0 in the fast config: a changed leaf means a non-zero gradient for it
  for name in ("encoder", "quantizer", "decoder"):
    ch = _changed(state.codec[name], new.codec[name])
    assert all(ch), f"{name}: {ch.count(False)} of {len(ch)} leaves got no update"
  assert all(_changed(state.lm, new.lm))
  assert not any(_changed(state.disc, new.disc)) and not any(_changed(state.disc_opt, new.disc_opt))
  assert int(new.step) == 1 and int(m["skipped"]) == 0 and int(m["adversarial"]) == 0
  expected = (float(m["mel"]) * 15 + float(m["sem"]) * 20 + float(m["commit"]) * 0.25 + float(m["codebook"]))
  assert float(m["loss"]) == pytest.approx(expected, rel=1e-5)
  assert m["codebook_usage"].shape == (4,) and m["codebook_perplexity"].shape == (4,)
  assert np.all(np.asarray(m["codebook_perplexity"]) >= 1.0)


@pytest.mark.slow  # compiles the adversarial step: ~2.5 min on the shared 2-core CPU
def test_stage2_updates_discs_and_generator(setup, stage2_result):
  _, state, _, _ = setup
  new, m = stage2_result
  assert int(m["adversarial"]) == 1
  for k in ("disc_loss", "adv", "feat", "grad_norm/disc", "loss"):
    assert np.isfinite(float(m[k])) and float(m[k]) > 0, k
  assert all(_changed(state.disc, new.disc))
  assert all(_changed(state.codec["decoder"], new.codec["decoder"]))
  assert float(m["lr/disc"]) == pytest.approx(1e-3)


@pytest.mark.slow  # compiles the adversarial step: ~2.5 min on the shared 2-core CPU
def test_generator_update_leaves_discs_as_the_disc_step_left_them(setup, stage2_result):
  trainer, state, _, _ = setup
  new, _ = stage2_result
  b = make_batch()
  x = jnp.asarray(b["audio"]) * (np.arange(b["audio"].shape[1])[None, :, None] < b["lengths"][:, None, None])

  @jax.jit
  def disc_only(state):
    y = nnx.merge(trainer.codec_def, state.codec)(x, jnp.asarray(b["lengths"])).audio
    return step_lib.discriminator_update(trainer, state.disc, state.disc_opt, x, y * (x != 0))[0]

  ref = disc_only(state)
  for a, r in zip(_leaves(new.disc), _leaves(ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), rtol=1e-5, atol=1e-6)  # Adam amplifies float noise in tiny grads


@pytest.mark.slow  # compiles the adversarial step: ~2.5 min on the shared 2-core CPU
def test_disc_update_leaves_generator_unchanged(setup):
  """Out-of-vocabulary text makes only the generator loss NaN: the generator update is skipped
  (params unchanged) while the discriminators still take their step."""
  _, state, _, s2 = setup
  b = make_batch()
  b["text"][0, 1] = 10_000
  new, m = s2(state, b)
  assert not np.isfinite(float(m["loss"])) and np.isfinite(float(m["disc_loss"]))
  assert int(m["skipped"]) == 1 and int(new.skipped) == 1
  assert not any(_changed(state.codec, new.codec)) and not any(_changed(state.lm, new.lm))
  assert not any(_changed(state.gen_opt, new.gen_opt))
  assert all(_changed(state.disc, new.disc))


def test_discriminator_update_reaches_every_disc_param(setup, batch_fn):
  """Only discriminator params are inputs and outputs of the disc update; each gets a gradient."""
  trainer, state, _, _ = setup
  b = batch_fn()
  x = jnp.asarray(b["audio"])
  y = 0.5 * x + 0.01
  disc, disc_opt, m, ok = jax.jit(lambda d, o: step_lib.discriminator_update(trainer, d, o, x, y))(
      state.disc, state.disc_opt)
  assert bool(ok) and np.isfinite(float(m["disc_loss"])) and float(m["grad_norm/disc"]) > 0
  assert all(_changed(state.disc, disc))  # weight decay 0: a changed leaf had a non-zero gradient
  assert jax.tree.structure(disc_opt) == jax.tree.structure(state.disc_opt)


@pytest.mark.parametrize("channels", [1, 2])
def test_discriminator_loss_over_interleaved_real_and_fake_equals_two_passes(setup, batch_fn, channels):
  """The update scores real and fake rows in one pass; its loss is the two-pass LSGAN loss."""
  trainer, state, _, _ = setup
  x = jnp.asarray(np.repeat(batch_fn()["audio"], channels, axis=-1))
  x = x * jnp.linspace(1.0, 0.5, channels)  # channels differ
  y = 0.5 * x + 0.01
  _, _, m, _ = step_lib.discriminator_update(trainer, state.disc, state.disc_opt, x, y)
  two_pass = losses.lsgan_discriminator_loss(step_lib._disc(trainer, state.disc, x)[0],
                                            step_lib._disc(trainer, state.disc, y)[0])
  np.testing.assert_allclose(float(m["disc_loss"]), float(two_pass), rtol=1e-5)


def test_nonfinite_step_is_skipped(setup):
  _, state, s1, _ = setup
  b = make_batch()
  b["audio"][1, 5, 0] = np.nan
  new, m = s1(state, b)
  assert int(m["skipped"]) == 1 and int(new.skipped) == 1 and int(new.step) == 1
  assert not any(_changed(state.codec, new.codec)) and not any(_changed(state.gen_opt, new.gen_opt))
  new2, m2 = s1(new, make_batch())  # and training goes on afterwards
  assert int(m2["skipped"]) == 0 and int(new2.skipped) == 1 and all(_changed(new.codec["decoder"], new2.codec["decoder"]))


def test_semantic_term_is_zero_without_text(setup):
  _, state, s1, _ = setup
  new, m = s1(state, make_batch(text=False))
  assert float(m["sem"]) == 0.0 and float(m["grad_norm/lm"]) == 0.0
  assert not any(_changed(state.lm, new.lm))


def test_gradients_reach_encoder_through_quantizer(setup):
  """With only a reconstruction loss (no commitment/codebook/semantic terms) the encoder still
  gets a gradient: the straight-through estimator passes it across the codebook lookup."""
  trainer, state, _, _ = setup
  b = make_batch()

  @jax.jit
  def enc_grad(codec):
    def loss(c):
      y = nnx.merge(trainer.codec_def, c)(jnp.asarray(b["audio"]), jnp.asarray(b["lengths"])).audio
      return jnp.mean(jnp.square(y - b["audio"]))
    return jax.grad(loss)(codec)

  g = enc_grad(state.codec)
  norms = [float(jnp.linalg.norm(x)) for x in _leaves(g["encoder"])]
  assert all(np.isfinite(norms)) and min(norms) > 0


def test_quantizer_dropout_prefixes():
  a = np.asarray(step_lib.quantizer_dropout(jax.random.key(1), 4000, 8, 1.0))
  assert a.min() == 1 and a.max() == 8 and abs(np.bincount(a)[1:].mean() - 500) < 1 and np.bincount(a)[1:].min() > 400
  half = np.asarray(step_lib.quantizer_dropout(jax.random.key(1), 4000, 8, 0.5))
  assert 0.5 < np.mean(half == 8) < 0.62
  assert np.all(np.asarray(step_lib.quantizer_dropout(jax.random.key(1), 10, 8, 0.0)) == 8)


def test_stage_switch_bf16_remat_trace(fast_cfg, batch_fn):
  """stage=None traces both stages under lax.cond (their outputs must agree), here with bf16 compute
  and remat; only shapes are evaluated, nothing is compiled."""
  cfg = fast_cfg.copy_and_resolve_references()
  cfg.compute_dtype, cfg.remat = "bfloat16", True
  trainer = state_lib.build_trainer(cfg)
  assert trainer.dtype == jnp.bfloat16
  state = jax.eval_shape(lambda k: state_lib.init_state(trainer, k), jax.random.key(0))
  b = batch_fn()
  new, m = jax.eval_shape(lambda s, b: step_lib.train_step(trainer, s, b), state, b)
  assert jax.tree.structure(new) == jax.tree.structure(state)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(new.codec))  # params stay float32
  assert m["loss"].shape == () and m["codebook_usage"].shape == (4,)


def test_init_from_reference_dir(config_fn, fast_cfg, golden_dir):
  from cat_jax.errors import CheckpointError
  from cat_jax.loader import load_codec
  cfg = config_fn("tiny")
  mc = state_lib.model_config(cfg)
  params = load_codec(golden_dir, expect=mc).params
  trainer = state_lib.build_trainer(cfg)
  st = jax.eval_shape(lambda: state_lib.init_state(trainer, jax.random.key(0)))
  assert jax.tree.structure(st.codec) == jax.tree.structure(params)
  with pytest.raises(CheckpointError):
    load_codec(golden_dir, expect=state_lib.model_config(fast_cfg))
