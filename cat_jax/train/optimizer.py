"""Optimisers (TRAINING.md defaults: AdamW, betas (0.8, 0.99), lr 1e-4, exponential decay
0.999996 per step or warm-up + cosine, weight decay 0.01, global-norm clipping 1e3 generator /
10 discriminators), parameter freezing and an EMA of generator parameters.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from cat_jax.train.train_config import PARTS, OptimizerConfig, parse_trainable  # noqa: F401  (re-exported)


def make_schedule(cfg: OptimizerConfig) -> optax.Schedule:
  """Linear warm-up from 0 to `lr` over `warmup_steps`, then 'constant', 'exponential'
  (lr * decay_rate ** steps) or 'cosine' (down to lr * min_lr_ratio at `decay_steps`)."""
  lr, warm = cfg.lr, cfg.warmup_steps
  if cfg.decay == "constant":
    after = optax.constant_schedule(lr)
  elif cfg.decay == "exponential":
    after = optax.exponential_decay(lr, transition_steps=1, decay_rate=cfg.decay_rate)
  else:  # 'cosine' (OptimizerConfig admits no other)
    after = optax.cosine_decay_schedule(lr, max(cfg.decay_steps - warm, 1), cfg.min_lr_ratio)
  if warm <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


def make_optimizer(cfg: OptimizerConfig, label_fn=None) -> optax.GradientTransformation:
  """clip_by_global_norm(cfg.clip) -> AdamW(schedule, b1, b2, eps, weight_decay). With `label_fn`
  (params -> pytree of 'train' / 'freeze'), frozen leaves get exactly zero update and no clipping share."""
  tx = optax.chain(
      optax.clip_by_global_norm(cfg.clip),
      optax.adamw(make_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay))
  if cfg.flatten:
    # One vector instead of one kernel per leaf: XLA:CPU compiles the update in seconds rather than
    # minutes. Same maths; for small models on CPU only (a flat vector does not keep FSDP sharding).
    tx = optax.flatten(tx)
  if label_fn is None:
    return tx
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, label_fn)


def part_of(path) -> str:
  """Which part a leaf of {'codec': codec_state, 'lm': lm_state} belongs to."""
  keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
  if keys[0] == "lm":
    return "lm"
  return str(keys[1])


def trainable_label_fn(trainable: str):
  """A label function for make_optimizer: 'train' for leaves in the trainable parts, else 'freeze'."""
  parts = parse_trainable(trainable)

  def label_fn(params):
    return jax.tree_util.tree_map_with_path(lambda p, _: "train" if part_of(p) in parts else "freeze", params)

  return label_fn


def ema_update(ema: Any, params: Any, decay: float | jax.Array) -> Any:
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf."""
  return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema, params)
