"""Sharding goldens: the PartitionSpecs of named parameters of the released 1.6 B recipe on a
(data=2, fsdp=2, tensor=2) mesh. A change to the logical-axis rules or to a module's axis
names that silently reshards a weight fails here. Abstract only: no device holds a weight."""
import importlib.util
import pathlib

import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from cat_jax import sharding
from cat_jax.train import parallel
from cat_jax.train import state as state_lib

CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "moss_audio_tokenizer.py"

GOLDEN = {
    "codec/encoder/1/transformer/layers/linear1/kernel": P(None, "fsdp", "tensor"),  # (12, 768, 3072)
    "codec/encoder/1/transformer/layers/linear2/kernel": P(None, "tensor", "fsdp"),
    "codec/encoder/1/transformer/layers/self_attn/in_proj/kernel": P(None, "fsdp", None, "tensor", None),
    "codec/encoder/1/transformer/layers/self_attn/out_proj/kernel": P(None, "tensor", None, "fsdp"),
    "codec/encoder/1/transformer/layers/norm1/weight": P(None, "fsdp"),
    "codec/encoder/7/output_proj/kernel": P("fsdp", None),
    "codec/decoder/0/input_proj/kernel": P(None, "fsdp"),
    "codec/quantizer/input_proj/v": P("fsdp", None),
    "codec/quantizer/quantizers/codebook": P(None, None, None),  # (32, 1024, 8) replicated
    "lm/embed": P("tensor", "fsdp"),
    "lm/head/kernel": P("fsdp", "tensor"),
    "disc/mpd/0/convs/0/kernel": P(None, None, None, "tensor"),  # c_in = 1 stays whole
    "disc/mpd/0/convs/1/kernel": P(None, None, "fsdp", "tensor"),
}


def _name(path) -> str:
  parts = []
  for k in path:
    key = getattr(k, "key", getattr(k, "idx", getattr(k, "name", None)))
    if key != "value":
      parts.append(str(key))
  return "/".join(parts)


@pytest.fixture(scope="module")
def released():
  spec = importlib.util.spec_from_file_location("cat_configs_release", CONFIG)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  trainer = state_lib.build_trainer(mod.get_config())
  abstract = parallel.abstract_state(trainer)
  mesh = AbstractMesh((2, 2, 2), sharding.MESH_AXES)
  flat = jax.tree_util.tree_flatten_with_path(sharding.tree_shardings(abstract, mesh))[0]
  return abstract, {_name(p): s.spec for p, s in flat}


def test_released_param_specs_match_goldens(released):
  _, specs = released
  got = {k: specs.get(k) for k in GOLDEN}
  assert got == GOLDEN


def test_adam_moments_follow_their_params(released):
  _, specs = released
  moments = {k: v for k, v in specs.items() if k.startswith("gen_opt/") and "/mu/" in k}
  assert len(moments) > 100
  for k, v in moments.items():
    param = k.split("/mu/", 1)[1]
    assert v == specs[param], k


def test_released_abstract_state_size(released):
  abstract, specs = released
  assert state_lib.num_params(abstract.codec) > 1.6e9 and state_lib.num_params(abstract.lm) > 0.4e9
  sharded = [k for k, v in specs.items() if k.startswith("codec/") and any(a is not None for a in v)]
  assert len(sharded) >= 0.8 * len([k for k in specs if k.startswith("codec/")])
