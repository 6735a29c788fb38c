"""TrainState (a pytree of arrays only) and the Trainer (static parts: graphdefs, optimisers, config).

Modules are built once under `nnx.eval_shape` for their graphdefs; `init_state` is a pure
function of a PRNG key (jit it, with out_shardings when sharded) so large models are born on device.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from cat_jax.config import CATConfig
from cat_jax.model.cat import CATModel
from cat_jax.train import optimizer as opt_lib
from cat_jax.train import train_config
from cat_jax.train.discriminators import Discriminators
from cat_jax.train.semantic_lm import SemanticLM
from cat_jax.train.train_config import TrainConfig

DTYPES = {"float32": None, "bfloat16": jnp.bfloat16}  # compute_dtype -> the dtype handed to the model


@struct.dataclass
class TrainState:
  step: jax.Array  # () int32, batches seen
  codec: Any  # nnx.State of CATModel (float32)
  lm: Any  # nnx.State of SemanticLM
  disc: Any  # nnx.State of Discriminators
  gen_opt: Any  # optax state over {'codec': codec, 'lm': lm}
  disc_opt: Any  # optax state over disc
  ema: Any  # nnx.State like codec, or None when EMA is off
  rng: jax.Array  # PRNG key for quantizer dropout
  skipped: jax.Array  # () int32, updates skipped for non-finite loss/gradients
  code_usage: jax.Array  # (n_q, K) float32 moving average of each codebook row's share (codebook_restart.py)

  @property
  def gen_params(self) -> dict:
    return {"codec": self.codec, "lm": self.lm}


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
  """Everything static about a run; `train_step`/`eval_step` close over it."""
  config: TrainConfig
  model_config: CATConfig
  codec_def: Any
  lm_def: Any
  disc_def: Any
  gen_tx: optax.GradientTransformation
  disc_tx: optax.GradientTransformation
  gen_schedule: Callable
  disc_schedule: Callable
  dtype: Any  # compute dtype passed to the model (None = float32)


def model_config(cfg) -> CATConfig:
  """The CATConfig of a TrainConfig, or of a recipe's `model` block alone (the reference config.json schema)."""
  if isinstance(cfg, TrainConfig):
    return cfg.model
  raw = cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model)
  return CATConfig.from_dict(raw)


def _modules(cfg: TrainConfig, key):
  k1, k2, k3 = jax.random.split(key, 3)
  codec = CATModel(cfg.model, key=k1, remat=cfg.remat, scan_layers=cfg.scan_layers)
  lm = SemanticLM(cfg.model.quantizer.output_dim, key=k2, remat=cfg.remat, scan_layers=cfg.scan_layers,
                  **dataclasses.asdict(cfg.lm))
  d = cfg.disc
  disc = Discriminators(key=k3, periods=d.periods, period_channels=d.period_channels, fft_sizes=d.fft_sizes,
                        bands=d.bands, stft_channels=d.stft_channels)
  return codec, lm, disc


def build_trainer(cfg) -> Trainer:
  """Parses the config (a recipe ConfigDict or a TrainConfig), derives graphdefs without allocating
  weights, builds both optimisers."""
  cfg = train_config.parse(cfg)
  codec, lm, disc = nnx.eval_shape(lambda: _modules(cfg, jax.random.key(0)))
  gen_tx = opt_lib.make_optimizer(cfg.optim.gen, opt_lib.trainable_label_fn(cfg.trainable))
  disc_tx = opt_lib.make_optimizer(cfg.optim.disc)
  return Trainer(cfg, cfg.model, nnx.graphdef(codec), nnx.graphdef(lm), nnx.graphdef(disc), gen_tx, disc_tx,
                 opt_lib.make_schedule(cfg.optim.gen), opt_lib.make_schedule(cfg.optim.disc),
                 DTYPES[cfg.compute_dtype])


def init_state(trainer: Trainer, key: jax.Array, codec_params: Any = None) -> TrainState:
  """Fresh state; `codec_params` (an nnx.State of CATModel, e.g. CAT.from_pretrained(...).params)
  replaces the random codec weights (fine-tuning from `init_from`)."""
  k_init, k_rng = jax.random.split(key)
  codec, lm, disc = _modules(trainer.config, k_init)
  codec, lm, disc = nnx.state(codec, nnx.Param), nnx.state(lm, nnx.Param), nnx.state(disc, nnx.Param)
  if codec_params is not None:
    codec = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), codec_params)
  ema_on = trainer.config.optim.ema_decay > 0
  return TrainState(
      step=jnp.zeros((), jnp.int32), codec=codec, lm=lm, disc=disc,
      gen_opt=trainer.gen_tx.init({"codec": codec, "lm": lm}), disc_opt=trainer.disc_tx.init(disc),
      ema=jax.tree.map(jnp.copy, codec) if ema_on else None, rng=k_rng, skipped=jnp.zeros((), jnp.int32),
      code_usage=jnp.ones((trainer.model_config.num_quantizers, trainer.model_config.codebook_size), jnp.float32))


def num_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))
