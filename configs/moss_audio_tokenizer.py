"""The released MOSS-Audio-Tokenizer (1.6 B, tests/data/released/config.json) with the authors'
schedule (TRAINING.md, MOSS-TTS report sec. 3). `get_config('runlocal')` shrinks the run, not the model."""
import os

import ml_collections

from cat_jax.train import recipes

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "corpus")


def get_config(arg=None):
  c = ml_collections.ConfigDict()
  # CAT_SPEC.md / TRAINING.md: patch 240/2/2/2; widths 768/768/768/1280; 12/12/12/32 layers; 10 s window.
  c.model = recipes.codec_architecture(
      patch_sizes=(240, 2, 2, 2), context_seconds=10,
      encoder=[(768, 12, 12, 3072, 384), (768, 12, 12, 3072, 384), (768, 12, 12, 3072, 640),
               (1280, 32, 20, 5120, 768)],
      decoder=[(1280, 32, 20, 5120, 1280), (768, 12, 12, 3072, 768), (768, 12, 12, 3072, 768),
               (768, 12, 12, 3072, 240)],
      quantizer={"input_dim": 768, "rvq_dim": 512, "output_dim": 768, "num_quantizers": 32,  # 32 x 1024, 8-dim
                 "codebook_size": 1024, "codebook_dim": 8, "quantizer_type": "rlfq"})
  c.loss = recipes.loss_config()  # TRAINING.md: L = 20 sem + 15 rec + 0.25 commit + 1 codebook + 1 adv + 2 feat
  c.optim = recipes.optim_config(lr=1e-4)  # TRAINING.md defaults table (paper silent)
  c.disc = recipes.disc_config()  # TRAINING.md defaults table (HiFi-GAN MPD + DAC MRD widths)
  # TRAINING.md: a 0.5 B decoder-only LM (identity not published): 24 x 1280 -> about 0.47 B.
  c.lm = recipes.lm_config(d_model=1280, num_layers=24, num_heads=20, dim_feedforward=5120)
  c.quantizer_dropout = 1.0  # TRAINING.md: probability 1.0
  c.batch_size = 1536  # the stage-1 batch
  c.schedule = ml_collections.ConfigDict({
      "stage1_steps": 520_000, "stage2_steps": 500_000,  # TRAINING.md: 520k pre-training, 500k adversarial
      "stage1_batch_size": c.get_ref("batch_size"), "stage2_batch_size": 768})  # TRAINING.md: batch 1536, then 768
  c.seed = 0
  c.num_steps = c.schedule.stage1_steps + c.schedule.stage2_steps
  c.segment_seconds = 11.68  # TRAINING.md: about 5 h per batch of 1536 -> ~11.7 s (146 frames)
  c.checkpoint_every = 5000
  c.eval_every = 5000
  # The bundled corpus (built offline on first use) so the recipe runs as written; point it at your
  # data: tfds:NAME[:SPLIT] (with data.data_dir) or arrayrecord:GLOB (`cat-jax prepare`).
  c.data = ml_collections.ConfigDict({"source": f"corpus:{CORPUS}/manifest.jsonl"})
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 8, "tensor": 1})
  c.init_from = ml_collections.config_dict.placeholder(str)  # a str or None: --config.init_from=DIR works
  c.trainable = "all"
  c.remat = True
  c.compute_dtype = "bfloat16"  # TRAINING.md: bf16 AdamW (third-party reading); params stay float32
  if arg == "runlocal":
    c.batch_size = c.schedule.stage2_batch_size = 2
    c.schedule.stage1_steps, c.schedule.stage2_steps = 5, 5
    c.num_steps, c.segment_seconds, c.checkpoint_every, c.eval_every = 10, 1.92, 5, 5
  elif arg:
    raise ValueError(f"configs/moss_audio_tokenizer.py: unknown argument {arg!r} (use 'runlocal' or nothing)")
  return c
