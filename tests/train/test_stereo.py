"""The trainer on a 48 kHz stereo v2 model (configs/nano.py 'ci'): one stage-1 and one stage-2 step,
finite losses, gradients reaching every part, codes and audio stereo; the full recipe builds
abstractly with its parameter count."""
import jax
import numpy as np
import pytest

from cat_jax.config import CATConfig
from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib
from tests.conftest import DATA
from tests.train.conftest import load_config


def _stereo_batch(b=2, frames=3):
  t = frames * 3840
  n = np.arange(t) / 48000
  rng = np.random.default_rng(0)
  audio = np.zeros((b, t, 2), np.float32)
  for i in range(b):
    sig = sum(np.sin(2 * np.pi * (110 + 50 * i) * k * n) / k for k in range(1, 6)) * 0.2
    audio[i, :, 0] = sig + 0.01 * rng.normal(size=t)
    audio[i, :, 1] = 0.6 * np.roll(sig, 96)  # right: delayed and quieter (panned)
  lengths = np.array([t] + [t - 2000] * (b - 1), np.int32)
  return {"audio": audio, "lengths": lengths, "text": np.zeros((b, 8), np.int32),
          "text_lengths": np.zeros((b,), np.int32)}


@pytest.fixture(scope="module")
def setup():
  c = load_config("nano", "ci")
  c.disc.periods = [2, 3]
  c.disc.fft_sizes = [512]
  c.disc.bands = [0.0, 0.25, 1.0]
  c.loss.mel.windows = [64, 256, 1024]
  c.loss.mel.n_mels = [10, 40, 160]
  c.optim.gen.weight_decay = c.optim.disc.weight_decay = 0.0
  c.quantizer_dropout = 0.0
  trainer = state_lib.build_trainer(c)
  state = state_lib.init_state(trainer, jax.random.key(0))
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  s1 = step_lib.make_train_step(trainer, stage=1, donate=False, compiler_options=fast)
  s2 = step_lib.make_train_step(trainer, stage=2, donate=False, compiler_options=fast)
  return trainer, state, s1, s2


def _changed(a, b):
  return [bool(np.any(np.asarray(x) != np.asarray(y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))]


def test_stage1_step_on_stereo(setup):
  trainer, state, s1, _ = setup
  assert trainer.model_config.channels == 2 and trainer.model_config.interleaved
  new, m = s1(state, _stereo_batch())
  for k in ("loss", "mel", "commit", "codebook", "grad_norm/gen"):
    assert np.isfinite(float(m[k])), k
  assert float(m["mel"]) > 0 and int(m["skipped"]) == 0
  for name in ("encoder", "quantizer", "decoder"):  # weight decay 0: a changed leaf had a gradient
    ch = _changed(state.codec[name], new.codec[name])
    assert all(ch), f"{name}: {ch.count(False)} of {len(ch)} leaves got no update"


def test_stage2_step_on_stereo(setup):
  trainer, state, _, s2 = setup
  new, m = s2(state, _stereo_batch())
  assert int(m["adversarial"]) == 1
  for k in ("disc_loss", "adv", "feat", "loss"):
    assert np.isfinite(float(m[k])) and float(m[k]) > 0, k
  assert all(_changed(state.disc, new.disc))
  assert all(_changed(state.codec["decoder"], new.codec["decoder"]))


def test_stereo_codes_and_audio_of_the_ci_model():
  from cat_jax import CAT
  m = CAT.from_config(load_config("nano", "ci").model.to_dict())
  x = _stereo_batch(1)["audio"].transpose(0, 2, 1)  # (1, 2, T)
  enc = m.encode(x)
  assert enc.audio_codes.shape == (16, 1, 3)
  dec = m.decode(enc.audio_codes)
  assert dec.audio.shape == (1, 2, 3 * 3840)


def test_nano_recipe_builds_abstractly():
  from cat_jax.codec import abstract_model
  cfg = CATConfig.from_dict(load_config("nano").model.to_dict())
  assert cfg.v2 and cfg.channels == 2 and cfg.sampling_rate == 48000 and cfg.frame_rate == 12.5
  assert cfg.num_quantizers == 16 and cfg.codebook_size == 1024 and cfg.bits_per_second() == 2000
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract_model(cfg)[1]))
  assert n == 21_307_136  # about 21.3 M (the docstring of configs/nano.py)


def test_finetune_decoder_from_a_v2_directory():
  """configs/finetune_decoder.py:dir=DIR takes a released-layout v2 directory (here golden/v2-tiny,
  Nano-style) as model and init_from; its weights load into the trainer's state."""
  from cat_jax.loader import load_codec
  from cat_jax.train import train_config
  v2_dir = str(DATA / "golden_v2_tiny")
  c = load_config("finetune_decoder", f"dir={v2_dir}")
  assert c.init_from == v2_dir and c.trainable == "decoder" and c.schedule.stage1_steps == 0
  tc = train_config.parse(c)
  assert tc.model.v2 and tc.model.channels == 2 and tc.model == CATConfig.from_json(v2_dir)
  params = load_codec(v2_dir, expect=tc.model).params
  trainer = state_lib.build_trainer(c)
  st = jax.eval_shape(lambda: state_lib.init_state(trainer, jax.random.key(0)))
  assert jax.tree.structure(st.codec) == jax.tree.structure(params)
  assert load_config("finetune_decoder", "nano").model.to_dict() == load_config("nano").model.to_dict()
