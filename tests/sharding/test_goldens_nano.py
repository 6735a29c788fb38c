"""Sharding goldens of the Nano recipe (configs/nano.py, v2): the square projections v2 keeps on
every stage (encoder.{i}.input_proj with input_dimension == d_model, ...) follow the same
logical-axis rules as v1's projections. Abstract only."""
import jax
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from cat_jax import sharding
from cat_jax.train import parallel
from cat_jax.train import state as state_lib
from tests.sharding.test_goldens import _name
from tests.train.conftest import load_config

GOLDEN = {
    "codec/encoder/3/input_proj/kernel": P(None, "fsdp"),  # (256, 256): square, v2 only
    "codec/encoder/1/output_proj/kernel": P("fsdp", None),
    "codec/decoder/7/output_proj/kernel": P("fsdp", None),  # (256, 240)
    "codec/encoder/1/transformer/layers/linear1/kernel": P(None, "fsdp", "tensor"),  # ffn.0
    "codec/encoder/1/transformer/layers/self_attn/in_proj/kernel": P(None, "fsdp", None, "tensor", None),
}


@pytest.fixture(scope="module")
def nano_specs():
  trainer = state_lib.build_trainer(load_config("nano"))
  abstract = parallel.abstract_state(trainer)
  mesh = AbstractMesh((2, 2, 2), sharding.MESH_AXES)
  flat = jax.tree_util.tree_flatten_with_path(sharding.tree_shardings(abstract, mesh))[0]
  return {_name(p): s.spec for p, s in flat}


def test_nano_param_specs_match_goldens(nano_specs):
  assert {k: nano_specs.get(k) for k in GOLDEN} == GOLDEN
