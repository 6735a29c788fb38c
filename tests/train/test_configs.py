"""Recipes in configs/: architectures match the reference configs, sizes, weights, required keys."""
import jax
import pytest
from flax import nnx

from cat_jax.config import CATConfig
from cat_jax.model.cat import CATModel
from cat_jax.train import state as state_lib
from cat_jax.train.semantic_lm import SemanticLM

KEYS = ("model", "loss", "optim", "disc", "lm", "schedule", "seed", "num_steps", "batch_size", "segment_seconds",
        "checkpoint_every", "eval_every", "data", "mesh", "init_from", "trainable", "remat", "compute_dtype")


def _count(make):
  return sum(int(x.size) for x in jax.tree.leaves(nnx.state(nnx.eval_shape(make), nnx.Param)))


@pytest.mark.parametrize("name", ["tiny", "base", "moss_audio_tokenizer", "finetune_decoder", "speech_cpu"])
def test_required_keys_and_paper_weights(config_fn, name):
  c = config_fn(name)
  for k in KEYS:
    assert k in c, k
  assert c.data.source and set(c.mesh) == {"data", "fsdp", "tensor"}
  assert (c.loss.rec, c.loss.commit, c.loss.codebook, c.loss.adv, c.loss.feat) == (15.0, 0.25, 1.0, 1.0, 2.0)
  assert c.loss.sem == (0.0 if name == "finetune_decoder" else 20.0)
  assert (c.optim.gen.b1, c.optim.gen.b2, c.optim.gen.clip, c.optim.disc.clip) == (0.8, 0.99, 1e3, 10.0)
  state_lib.model_config(c)  # parses


def test_tiny_and_released_architectures(config_fn, golden_dir):
  assert state_lib.model_config(config_fn("tiny")) == CATConfig.from_json(golden_dir)
  released = CATConfig.from_json(golden_dir.parent / "released")
  assert state_lib.model_config(config_fn("moss_audio_tokenizer")) == released


def test_sizes_and_schedules(config_fn):
  base = config_fn("base")
  n = _count(lambda: CATModel(state_lib.model_config(base), key=jax.random.key(0)))
  assert 80e6 < n < 130e6, n
  moss = config_fn("moss_audio_tokenizer")
  lm = _count(lambda: SemanticLM(768, key=jax.random.key(0), **moss.lm.to_dict()))
  assert 0.4e9 < lm < 0.6e9, lm
  s = moss.schedule
  assert (s.stage1_steps, s.stage1_batch_size, s.stage2_steps, s.stage2_batch_size) == (520_000, 1536, 500_000, 768)
  ft = config_fn("finetune_decoder", "tiny")
  assert ft.trainable == "decoder" and ft.schedule.stage1_steps == 0 and "init_from" in ft
