"""The v2 name table (CAT_SPEC_V2.md section 4): manifest equals golden/v2-tiny's, import then export
writes the same safetensors bit for bit, v1-era names load through v2's renames."""
import numpy as np
import pytest

from cat_jax import CAT, CATConfig, convert
from cat_jax.errors import CheckpointError
from tests.conftest import DATA

V2 = DATA / "golden_v2_tiny"


@pytest.fixture(scope="module")
def v2_config():
  return CATConfig.from_json(V2)


def test_manifest_matches_the_reference(v2_config):
  rows = [line.split("\t") for line in (V2 / "MANIFEST.txt").read_text().splitlines() if line.strip()]
  want = {name: tuple(int(d) for d in shape.strip("[]").split(",")) for name, shape, _ in rows}
  got = dict(convert.manifest(v2_config))
  assert got == want
  for name in ("encoder.3.input_proj.weight", "encoder.5.input_proj.weight",
               "decoder.3.output_proj.weight", "decoder.5.output_proj.weight"):  # the square ones
    assert got[name][0] == got[name][1]


def test_import_then_export_is_bit_exact(v2_config, tmp_path):
  model = CAT.from_pretrained(V2)
  model.save_pretrained(tmp_path)
  assert (tmp_path / "model.safetensors").read_bytes() == (V2 / "model.safetensors").read_bytes()
  assert CATConfig.from_json(tmp_path) == v2_config
  assert (tmp_path / "config.json").exists()


def test_v1_era_names_load_through_v2_renames(v2_config):
  tensors = convert.read_safetensors_dir(str(V2))
  old = {}
  for name, w in tensors.items():
    name = (name.replace("self_attn.in_proj.weight", "self_attn.in_projs.0.weight")
            .replace("self_attn.out_proj.weight", "self_attn.out_projs.0.weight")
            .replace("ffn.0.weight", "linear1.weight").replace("ffn.2.weight", "linear2.weight"))
    old[name] = w
  shapes = {e.path: None for e in convert.name_table(v2_config)}
  from cat_jax.codec import abstract_model, param_shapes
  shapes = param_shapes(abstract_model(v2_config)[1])
  a = convert.torch_to_params(v2_config, tensors, shapes)
  b = convert.torch_to_params(v2_config, old, shapes)
  out_a, out_b = convert.params_to_torch(v2_config, a), convert.params_to_torch(v2_config, b)
  assert out_a.keys() == out_b.keys() == tensors.keys()
  for k in out_a:
    np.testing.assert_array_equal(out_a[k], out_b[k])


def test_a_v1_checkpoint_for_a_v2_config_names_the_gap(v2_config):
  tensors = convert.read_safetensors_dir(str(V2))
  tensors.pop("encoder.3.input_proj.weight")  # what a v1 export of equal widths would lack
  with pytest.raises(CheckpointError, match="1 missing tensor.*encoder.3.input_proj.weight"):
    CAT.from_torch_state_dict(v2_config, tensors)
