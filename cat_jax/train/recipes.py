"""Builders shared by configs/*.py: the model block (`codec_architecture`, from cat_jax.config)
and the loss/optimiser/discriminator/LM blocks as ConfigDicts at the defaults of
cat_jax/train/train_config.py (where every value and its TRAINING.md source is written once)."""
from __future__ import annotations

import ml_collections

from cat_jax.config import codec_architecture  # noqa: F401  (configs call recipes.codec_architecture)
from cat_jax.train import train_config
from cat_jax.train.train_config import as_config_dict


def loss_config() -> ml_collections.ConfigDict:
  """The loss block at its defaults (train_config.LossConfig: the authors' weights, TRAINING.md)."""
  return as_config_dict(train_config.LossConfig())


def optim_config(lr: float = 1e-4, warmup_steps: int = 0) -> ml_collections.ConfigDict:
  """The optim block at its defaults (train_config.OptimConfig: TRAINING.md's AdamW, clip 1e3
  generator / 10 discriminators), with `lr` and `warmup_steps` for both optimisers."""
  c = as_config_dict(train_config.OptimConfig())
  c.gen.lr = c.disc.lr = lr
  c.gen.warmup_steps = c.disc.warmup_steps = warmup_steps
  return c


def disc_config(period_channels=None, stft_channels: int | None = None) -> ml_collections.ConfigDict:
  """The disc block at its defaults (train_config.DiscConfig: TRAINING.md's MPD + complex-STFT
  discriminators), optionally narrower."""
  c = as_config_dict(train_config.DiscConfig())
  if period_channels is not None:
    c.period_channels = list(period_channels)
  if stft_channels is not None:
    c.stft_channels = stft_channels
  return c


def lm_config(d_model: int, num_layers: int, num_heads: int, dim_feedforward: int) -> ml_collections.ConfigDict:
  """The semantic-LM block (train_config.LMConfig) at these widths."""
  return as_config_dict(train_config.LMConfig(d_model=d_model, num_layers=num_layers, num_heads=num_heads,
                                              dim_feedforward=dim_feedforward))
