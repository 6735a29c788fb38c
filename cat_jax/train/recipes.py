"""Builders shared by configs/*.py: the model block (`codec_architecture`, from cat_jax.config)
and the default loss/optimiser/discriminator blocks (values cited from TRAINING.md)."""
from __future__ import annotations

import ml_collections

from cat_jax.config import codec_architecture  # noqa: F401  (configs call recipes.codec_architecture)

def loss_config() -> ml_collections.ConfigDict:
  """TRAINING.md, authors' recipe (MOSS-TTS report sec. 3): L = 20 sem + 15 rec + 0.25 commit
  + 1.0 codebook + 1.0 adv + 2.0 feat; mel scales from the DAC 24 kHz defaults table."""
  return ml_collections.ConfigDict({
      "sem": 20.0, "rec": 15.0, "commit": 0.25, "codebook": 1.0, "adv": 1.0, "feat": 2.0,
      "stft": 0.0,  # not in the authors' loss; DAC's multi-scale STFT distance, logged at eval
      "mel": {"windows": [32, 64, 128, 256, 512, 1024, 2048],  # 2^5..2^11, hop window/4
              "n_mels": [5, 10, 20, 40, 80, 160, 320],  # defaults table (DAC)
              "clamp_eps": 1e-5, "power": 1.0, "mag_weight": 0.0, "log_weight": 1.0,  # log10(clamp(mel, 1e-5))
              "normalized": True},  # "normalised STFT" (authors' recipe)
  })


def optim_config(lr: float = 1e-4, warmup_steps: int = 0) -> ml_collections.ConfigDict:
  """TRAINING.md defaults table: AdamW betas (0.8, 0.99), lr 1e-4, exponential decay 0.999996/step,
  weight decay 0.01, clip 1e3 (generator) / 10 (discriminators); EMA off (not in the paper)."""
  def one(clip):
    return {"lr": lr, "b1": 0.8, "b2": 0.99, "eps": 1e-8, "weight_decay": 0.01, "clip": clip,
            "warmup_steps": warmup_steps, "decay": "exponential", "decay_rate": 0.999996, "decay_steps": 0,
            "min_lr_ratio": 0.0}
  return ml_collections.ConfigDict({"gen": one(1e3), "disc": one(10.0), "ema_decay": 0.0})


def disc_config(period_channels=(32, 128, 512, 1024, 1024), stft_channels: int = 32) -> ml_collections.ConfigDict:
  """TRAINING.md defaults table: MPD periods 2, 3, 5, 7, 11; complex-STFT discriminator at FFT
  2048/1024/512 with bands at 0/0.1/0.25/0.5/0.75/1.0 of Nyquist (HiFi-GAN / DAC widths)."""
  return ml_collections.ConfigDict({
      "periods": [2, 3, 5, 7, 11], "period_channels": list(period_channels),
      "fft_sizes": [2048, 1024, 512], "bands": [0.0, 0.1, 0.25, 0.5, 0.75, 1.0], "stft_channels": stft_channels})


def lm_config(d_model: int, num_layers: int, num_heads: int, dim_feedforward: int) -> ml_collections.ConfigDict:
  """Semantic-alignment LM (TRAINING.md L_sem): byte-level vocab of 264 (cat_jax/data/text.py)."""
  return ml_collections.ConfigDict({"d_model": d_model, "num_layers": num_layers, "num_heads": num_heads,
                                    "dim_feedforward": dim_feedforward, "vocab_size": 264, "gating": "none",
                                    "norm": "layer_norm"})
