"""A Nano-sized CAT of the v2 family (CAT_SPEC_V2.md): 48 kHz stereo, channels interleaved into one
96 kHz stream, nine modules a side (patches 240, 2, 2, 2, 4: the encoder ends with a x4 patch),
per-module windows, 16 codebooks of 1024 at 12.5 Hz (2 kbit/s). Widths are ours (the released
Nano's config.json is not public): 256/256/256/384, layers 2/2/2/3, 21.3 M parameters
(tests/train/test_stereo.py counts them). The trainer folds channels into the batch, so every
loss and discriminator sees each channel as its own mono signal; the mono corpus is repeated to
both channels (cat_jax.audio.map_channels) and resampled to 48 kHz.

get_config('ci') is the same recipe shrunk for tests (golden/v2-tiny widths, one layer per stage,
0.24 s segments, batch 2)."""
import os

import ml_collections

from cat_jax.config import v2_architecture
from cat_jax.train import recipes

CORPUS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runs", "corpus")
QUANTIZER = {"input_dim": 512, "rvq_dim": 512, "output_dim": 512, "num_quantizers": 16, "codebook_size": 1024,
             "codebook_dim": 8, "quantizer_type": "rlfq"}


def model(ci: bool = False) -> dict:
  """The v2 config.json dict of the recipe (`ci`: golden/v2-tiny's widths, one layer per stage)."""
  if ci:
    q = {"input_dim": 48, "rvq_dim": 32, "output_dim": 48, "num_quantizers": 16, "codebook_size": 64,
         "codebook_dim": 8, "quantizer_type": "rlfq"}
    return v2_architecture(
        patch_sizes=(240, 2, 2, 2, 4), quantizer=q, context_seconds=0.16,
        encoder=[(32, 1, 2, 64, 16), (32, 1, 2, 64, 24), (48, 1, 4, 96, 24), (64, 1, 4, 128, 12)],
        decoder=[(64, 1, 4, 128, 48), (48, 1, 4, 96, 48), (32, 1, 2, 64, 32), (32, 1, 2, 64, 240)])
  # Windows as the v2 class defaults grow them per stage (CAT_SPEC_V2.md section 2): 1, 2, 4, 8 s
  # encoder-side at 400 .. 50 Hz, mirrored in the decoder.
  return v2_architecture(
      patch_sizes=(240, 2, 2, 2, 4), quantizer=QUANTIZER, context_seconds=10.0,
      encoder_contexts=(1.0, 2.0, 4.0, 8.0), decoder_contexts=(8.0, 4.0, 2.0, 1.0),
      encoder=[(256, 2, 4, 1024, 128), (256, 2, 4, 1024, 128), (256, 2, 4, 1024, 192), (384, 3, 6, 1536, 128)],
      decoder=[(384, 3, 6, 1536, 256), (256, 2, 4, 1024, 256), (256, 2, 4, 1024, 256), (256, 2, 4, 1024, 240)])


def get_config(arg=None):
  if arg not in (None, "ci"):
    raise ValueError(f"configs/nano.py: unknown argument {arg!r} (use 'ci' or nothing)")
  ci = arg == "ci"
  c = ml_collections.ConfigDict()
  c.model = model(ci)
  c.loss = recipes.loss_config()  # TRAINING.md weights
  c.optim = recipes.optim_config(lr=1e-3 if ci else 1e-4, warmup_steps=0 if ci else 1000)
  c.disc = (recipes.disc_config(period_channels=(8, 16, 32, 32, 32), stft_channels=8) if ci
            else recipes.disc_config())
  c.lm = (recipes.lm_config(d_model=64, num_layers=1, num_heads=4, dim_feedforward=256) if ci
          else recipes.lm_config(d_model=384, num_layers=4, num_heads=6, dim_feedforward=1536))
  c.quantizer_dropout = 1.0  # TRAINING.md
  c.batch_size = 2 if ci else 32
  c.schedule = ml_collections.ConfigDict({
      "stage1_steps": 1000 if ci else 200_000, "stage2_steps": 0 if ci else 100_000,
      "stage1_batch_size": c.get_ref("batch_size"),
      "stage2_batch_size": ml_collections.config_dict.placeholder(int) if ci else 16})
  c.seed = 0
  c.num_steps = 4 if ci else c.schedule.stage1_steps + c.schedule.stage2_steps
  c.segment_seconds = 0.24 if ci else 2.56  # whole 80 ms frames
  c.checkpoint_every = 2 if ci else 5000
  c.eval_every = 2 if ci else 2000
  c.data = ml_collections.ConfigDict({"source": f"corpus:{CORPUS}/manifest.jsonl"})  # mono: repeated to stereo
  c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
  c.init_from = ml_collections.config_dict.placeholder(str)
  c.trainable = "all"
  c.remat = False
  c.compute_dtype = "float32" if ci else "bfloat16"
  if ci:
    c.optim.gen.flatten = c.optim.disc.flatten = True  # fast CPU compiles (optimizer.py)
  return c
