"""Tiny training configs and batches for tests/train (kept small: compile time dominates on CPU)."""
import importlib.util
import pathlib

import numpy as np
import pytest

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def load_config(name: str, arg=None):
  spec = importlib.util.spec_from_file_location(f"cat_configs_{name}", CONFIGS / f"{name}.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def fast_config():
  """configs/tiny.py with a two-stage codec, fewer sub-discriminators and mel scales: compile time
  dominates these tests on CPU, and it grows with the number of distinct ops."""
  from cat_jax.train import recipes
  c = load_config("tiny")
  c.model = recipes.codec_architecture(
      patch_sizes=(240, 8), context_seconds=0.32, encoder=[(32, 1, 2, 64, 16), (32, 1, 2, 64, 32)],
      decoder=[(32, 1, 2, 64, 128), (32, 1, 2, 64, 240)],
      quantizer={"input_dim": 32, "rvq_dim": 16, "output_dim": 32, "num_quantizers": 4, "codebook_size": 16,
                 "codebook_dim": 4, "quantizer_type": "rlfq"})
  c.disc.periods = [2, 3]
  c.disc.fft_sizes = [512]
  c.disc.bands = [0.0, 0.25, 1.0]
  c.loss.mel.windows = [64, 256, 1024]
  c.loss.mel.n_mels = [10, 40, 160]
  c.lm.num_layers = 1
  c.optim.gen.weight_decay = c.optim.disc.weight_decay = 0.0  # a changed param then means a non-zero gradient
  c.optim.gen.warmup_steps = c.optim.disc.warmup_steps = 0
  c.quantizer_dropout = 0.0  # every codebook in use, so every codebook gets a gradient
  return c


def make_batch(b=2, frames=4, seed=0, text=True):
  """Two harmonic 'vowels' with a noise burst; example 1 padded; example 0 has text, example 1 none."""
  t = frames * 1920
  n = np.arange(t) / 24000
  rng = np.random.default_rng(seed)
  audio = np.zeros((b, t, 1), np.float32)
  for i in range(b):
    f0 = 120 + 40 * i
    sig = sum(np.sin(2 * np.pi * f0 * k * n) / k for k in range(1, 6)) * 0.2
    audio[i, :, 0] = sig + 0.01 * rng.normal(size=t)
  lengths = np.array([t] + [t - 1000] * (b - 1), np.int32)
  txt = np.zeros((b, 8), np.int32)
  tl = np.zeros((b,), np.int32)
  if text:
    ids = [3] + [c + 8 for c in b"hi yo"] + [2]
    txt[0, :len(ids)] = ids
    tl[0] = len(ids)
  return {"audio": audio, "lengths": lengths, "text": txt, "text_lengths": tl}


@pytest.fixture(scope="session")
def fast_cfg():
  return fast_config()


@pytest.fixture(scope="session")
def batch_fn():
  return make_batch


@pytest.fixture(scope="session")
def config_fn():
  return load_config
