"""A training run's codec read back as a `CAT` (the run's Trainer rebuilt from its saved config,
the checkpoint restored onto it) and exported to the reference layout with a model card
(`cat-jax export`)."""
from __future__ import annotations

import os

import jax

from cat_jax.codec import CAT, abstract_model
from cat_jax.errors import CheckpointError
from cat_jax.train import state as state_lib
from cat_jax.train.checkpoints import TrainCheckpointer, kept_steps, read_run_config


def restore_codec(workdir: str, step: int | None = None, ema: bool = False):
  """(`CAT` with the codec (or EMA) weights of a training checkpoint, its step): `step` exactly
  (missing or unreadable: a CheckpointError), or the newest readable kept checkpoint (an
  unreadable newer one is reported in one line). `cat_jax.loader.load_codec` reads runs through this."""
  if step is not None:
    trainer, state, s = _restore_step(workdir, step)
  else:
    steps = kept_steps(workdir)
    for s in reversed(steps):
      try:
        trainer, state, s = _restore_step(workdir, s)
        break
      except CheckpointError as e:
        if s == steps[0]:
          raise CheckpointError(f"no readable checkpoint in {workdir} (tried steps {steps[::-1]}); "
                                f"the oldest: {e}") from None
        print(f"[checkpoint] {e}; trying an older one", flush=True)
  params = state.ema if ema else state.codec
  if params is None:
    raise CheckpointError(f"the run in {workdir} kept no EMA weights (optim.ema_decay was 0)")
  return CAT(trainer.model_config, abstract_model(trainer.model_config)[0], params), s


def _restore_step(workdir: str, step: int):
  """(Trainer of the run's saved config, train state, step) of checkpoint `step` exactly."""
  cfg, s = read_run_config(workdir, step)
  trainer = state_lib.build_trainer(cfg)
  abstract = jax.eval_shape(lambda k: state_lib.init_state(trainer, k), jax.random.key(0))
  ckpt = TrainCheckpointer(workdir, async_save=False, create=False)
  try:
    s, state, _, _ = ckpt.restore(abstract, s)
  finally:
    ckpt.close()
  return trainer, state, s


MODEL_CARD = """# {name}

A CAT (Causal Audio Tokenizer with Transformer, MOSS-Audio-Tokenizer architecture) codec trained
with cat_jax and exported to the reference PyTorch / Hugging Face layout (`config.json` +
safetensors, the reference's tensor names; loads with `strict=True`).

- sample rate {sr} Hz, {channels} channel(s), {frame_rate:g} Hz frames
- {nq} codebooks of {cb} entries: {bps_min:g} to {bps_max:g} bit/s (any prefix of the codebooks decodes)
- {params:,} parameters; training step {step}{ema}

PyTorch without remote code: `from cat_jax.torch_model import CATTorch; CATTorch.from_pretrained(DIR)`.
JAX: `from cat_jax import CAT; CAT.from_pretrained(DIR)`.
"""


def export_workdir(workdir: str, out: str, step: int | None = None, ema: bool = False,
                   max_shard_bytes: int | None = 5 * 2**30) -> tuple[list[str], int]:
  """Training checkpoint -> reference layout directory with a short model card. Returns the files
  written and the step really exported (`step`, or the newest readable one)."""
  model, s = restore_codec(workdir, step, ema)
  files = model.save_pretrained(out, max_shard_size=max_shard_bytes)
  c = model.config
  with open(os.path.join(out, "README.md"), "w") as f:
    f.write(MODEL_CARD.format(name=os.path.basename(os.path.abspath(out)), sr=c.sampling_rate,
                              channels=c.channels, frame_rate=c.frame_rate, nq=c.num_quantizers,
                              cb=c.codebook_size, bps_min=c.bits_per_second(1), bps_max=c.bits_per_second(),
                              params=model.num_params, step=s, ema=" (EMA weights)" if ema else ""))
  return files + ["README.md"], s
