"""Tiny CAT recipe: golden_tiny widths, 2-layer LM; trains for minutes on a CPU.

The loss weights and discriminator layout are the paper's (TRAINING.md); widths, batch,
segment length, learning rate and steps are shrunk for CPU (ours, not the paper's).
"""
import os

import ml_collections

from cat_jax.train import recipes

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "corpus")


def get_config(arg=None):
  """arg 'ci': the same recipe shrunk for tests (1 layer per stage, 0.24 s segments, batch 2)."""
  c = ml_collections.ConfigDict()
  # tests/data/golden_tiny/config.json: patch 240/2/2/2, widths 32..64, 8 codebooks of 64.
  c.model = recipes.codec_architecture(
      patch_sizes=(240, 2, 2, 2), context_seconds=0.32,
      encoder=[(32, 2, 2, 64, 24), (48, 1, 2, 96, 24), (32, 1, 2, 64, 32), (64, 2, 4, 128, 48)],
      decoder=[(64, 2, 4, 128, 64), (32, 1, 2, 64, 48), (48, 1, 2, 96, 48), (32, 2, 2, 64, 240)],
      quantizer={"input_dim": 48, "rvq_dim": 32, "output_dim": 48, "num_quantizers": 8, "codebook_size": 64,
                 "codebook_dim": 8, "quantizer_type": "rlfq"})
  c.loss = recipes.loss_config()  # TRAINING.md: 20/15/0.25/1/1/2
  c.optim = recipes.optim_config(lr=1e-3, warmup_steps=20)  # CPU-scale lr (ours); betas/wd/clip per TRAINING.md
  c.disc = recipes.disc_config(period_channels=(8, 16, 32, 32, 32), stft_channels=8)  # narrow (ours)
  c.lm = recipes.lm_config(d_model=64, num_layers=2, num_heads=4, dim_feedforward=256)
  c.quantizer_dropout = 1.0  # TRAINING.md: quantizer dropout probability 1.0
  c.batch_size = 4
  c.schedule = ml_collections.ConfigDict({
      "stage1_steps": 300, "stage2_steps": 100,  # reconstruction pre-training, then adversarial (TRAINING.md)
      "stage1_batch_size": c.get_ref("batch_size"),  # the same number: batch_size is the stage-1 batch
      "stage2_batch_size": ml_collections.config_dict.placeholder(int)})  # None: batch_size again
  c.seed = 0
  c.num_steps = c.schedule.stage1_steps + c.schedule.stage2_steps
  c.segment_seconds = 0.96  # 12 frames of 80 ms
  c.checkpoint_every = 100
  c.eval_every = 50
  # The bundled corpus (espeak-ng speech, words, sounds, music, recorded speech), built offline on first use.
  c.data = ml_collections.ConfigDict({"source": f"corpus:{CORPUS}/manifest.jsonl"})
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.init_from = ml_collections.config_dict.placeholder(str)  # a str or None: --config.init_from=DIR works
  c.trainable = "all"
  c.remat = False
  c.compute_dtype = "float32"
  c.optim.gen.flatten = c.optim.disc.flatten = True  # one flat vector: fast CPU compiles (optimizer.py)
  if arg == "ci":
    for mods in (c.model.encoder_kwargs, c.model.decoder_kwargs):
      for m in mods:
        if m["module_type"] == "Transformer":
          m["num_layers"] = 1
    c.lm.num_layers = 1
    c.segment_seconds = 0.24
    c.batch_size = 2  # both stages
    c.schedule.stage1_steps, c.schedule.stage2_steps = 1000, 0
    c.num_steps, c.checkpoint_every, c.eval_every = 4, 2, 2
  elif arg:
    raise ValueError(f"configs/tiny.py: unknown argument {arg!r} (use 'ci' or nothing)")
  return c
