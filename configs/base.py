"""A ~100 M-parameter CAT (the authors' layout at reduced width, TRAINING.md scaling study) with
the paper's losses and two-stage schedule at a smaller batch. `get_config('runlocal')` shrinks the run."""
import os

import ml_collections

from cat_jax.train import recipes

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "corpus")


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  # Same patch layout as the release (CAT_SPEC.md); width 512, layers 3/3/3/8 each side (ours): ~108 M.
  c.model = recipes.codec_architecture(
      patch_sizes=(240, 2, 2, 2), context_seconds=10,
      encoder=[(512, 3, 8, 2048, 256), (512, 3, 8, 2048, 256), (512, 3, 8, 2048, 256), (512, 8, 8, 2048, 512)],
      decoder=[(512, 8, 8, 2048, 512), (512, 3, 8, 2048, 512), (512, 3, 8, 2048, 512), (512, 3, 8, 2048, 240)],
      quantizer={"input_dim": 512, "rvq_dim": 512, "output_dim": 512, "num_quantizers": 32,  # TRAINING.md: 32 x 1024
                 "codebook_size": 1024, "codebook_dim": 8, "quantizer_type": "rlfq"})
  c.loss = recipes.loss_config()  # TRAINING.md weights
  c.optim = recipes.optim_config(lr=1e-4, warmup_steps=1000)  # TRAINING.md defaults; warm-up is ours
  c.disc = recipes.disc_config()  # TRAINING.md defaults table
  c.lm = recipes.lm_config(d_model=512, num_layers=8, num_heads=8, dim_feedforward=2048)  # ~25 M (ours)
  c.quantizer_dropout = 1.0  # TRAINING.md
  c.batch_size = 64  # the stage-1 batch
  c.schedule = ml_collections.ConfigDict({
      "stage1_steps": 200_000, "stage2_steps": 200_000,  # two stages as in TRAINING.md, shorter (ours)
      "stage1_batch_size": c.get_ref("batch_size"), "stage2_batch_size": 32})  # batch halves for stage 2 (paper)
  c.seed = 0
  c.num_steps = c.schedule.stage1_steps + c.schedule.stage2_steps
  c.segment_seconds = 5.12  # 64 frames (ours; TRAINING.md: transformers like longer segments)
  c.checkpoint_every = 5000
  c.eval_every = 2000
  # The bundled corpus (built offline on first use) so the recipe runs as written; point it at your
  # data: tfds:NAME[:SPLIT] (with data.data_dir) or arrayrecord:GLOB (`cat-jax prepare`).
  c.data = ml_collections.ConfigDict({"source": f"corpus:{CORPUS}/manifest.jsonl"})
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.init_from = ml_collections.config_dict.placeholder(str)  # a str or None: --config.init_from=DIR works
  c.trainable = "all"
  c.remat = False
  c.compute_dtype = "bfloat16"
  if arg == "runlocal":
    c.batch_size = c.schedule.stage2_batch_size = 2
    c.schedule.stage1_steps, c.schedule.stage2_steps = 5, 5
    c.num_steps, c.segment_seconds, c.checkpoint_every, c.eval_every = 10, 1.92, 5, 5
  elif arg:
    raise ValueError(f"configs/base.py: unknown argument {arg!r} (use 'runlocal' or nothing)")
  return c
