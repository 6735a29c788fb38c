"""Weights in and out of the reference layout: bit-exact, sharded, legacy names, released manifest."""
import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from cat_jax import CAT, CATConfig, CheckpointError
from cat_jax import convert
from cat_jax.codec import abstract_model, param_shapes
from tests.conftest import GOLDEN_TINY, RELEASED


def test_export_reproduces_golden_safetensors_bit_for_bit(tiny_model, tmp_path):
  tiny_model.save_pretrained(tmp_path)
  ref = load_file(GOLDEN_TINY / "model.safetensors")
  out = load_file(tmp_path / "model.safetensors")
  assert sorted(out) == sorted(ref)
  for name, t in ref.items():
    assert out[name].dtype == t.dtype and out[name].shape == t.shape, name
    assert out[name].tobytes() == t.tobytes(), name
  with open(tmp_path / "config.json") as f:
    assert CATConfig.from_dict(json.load(f)) == tiny_model.config


def test_sharded_export_reimports(tiny_model, tmp_path, golden):
  files = tiny_model.save_pretrained(tmp_path, max_shard_size=200_000)
  shards = [f for f in files if f.endswith(".safetensors")]
  assert len(shards) > 1 and convert.INDEX in files
  index = json.loads((tmp_path / convert.INDEX).read_text())
  assert set(index["weight_map"].values()) == set(shards)
  again = CAT.from_pretrained(tmp_path)
  ref, out = tiny_model.state_dict(), again.state_dict()
  assert all(ref[k].tobytes() == out[k].tobytes() for k in ref)
  # A re-export over the same directory replaces the shards instead of mixing with them.
  again.save_pretrained(tmp_path)
  assert not (tmp_path / convert.INDEX).exists()
  assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_legacy_attention_names_load(tmp_path, tiny_config_dict):
  tensors = load_file(GOLDEN_TINY / "model.safetensors")
  legacy = {}
  for k, v in tensors.items():
    k = k.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
    k = k.replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight")
    legacy[k] = v
  assert any("in_proj_weight" in k for k in legacy)
  save_file(legacy, str(tmp_path / "model.safetensors"))
  (tmp_path / "config.json").write_text(json.dumps(tiny_config_dict))
  m = CAT.from_pretrained(tmp_path)
  out = m.state_dict()
  assert all(out[k].tobytes() == tensors[k].tobytes() for k in tensors)


def test_missing_and_misshapen_tensors_are_named(tmp_path, tiny_config_dict):
  tensors = load_file(GOLDEN_TINY / "model.safetensors")
  (tmp_path / "config.json").write_text(json.dumps(tiny_config_dict))
  broken = dict(tensors)
  broken.pop("quantizer.quantizers.3.codebook.weight")
  save_file(broken, str(tmp_path / "model.safetensors"))
  with pytest.raises(CheckpointError, match="quantizers.3.codebook"):
    CAT.from_pretrained(tmp_path)
  broken = dict(tensors)
  broken["encoder.1.output_proj.weight"] = np.zeros((3, 3), np.float32)
  save_file(broken, str(tmp_path / "model.safetensors"))
  with pytest.raises(CheckpointError, match="encoder.1.output_proj.weight"):
    CAT.from_pretrained(tmp_path)
  (tmp_path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
  with pytest.raises(CheckpointError, match="cannot read"):
    CAT.from_pretrained(tmp_path)
  with pytest.raises(CheckpointError, match="not found"):
    CAT.from_pretrained(tmp_path / "nope")


def test_manifest_matches_golden_tiny(tiny_model):
  lines = (GOLDEN_TINY / "MANIFEST.txt").read_text().strip().splitlines()
  expected = [(l.split("\t")[0], tuple(json.loads(l.split("\t")[1]))) for l in lines]
  assert convert.manifest(tiny_model.config) == expected


def test_released_model_builds_abstractly_and_matches_manifest():
  cfg = CATConfig.from_json(RELEASED / "config.json")
  _, abstract = abstract_model(cfg)  # ShapeDtypeStructs only: no 7 GB allocation
  shapes = param_shapes(abstract)
  total = sum(int(np.prod(s)) for s in shapes.values())
  assert total == 1_774_566_400
  lines = (RELEASED / "MANIFEST.txt").read_text().strip().splitlines()
  expected = {l.split("\t")[0]: tuple(json.loads(l.split("\t")[1])) for l in lines}
  table = convert.name_table(cfg)
  assert {e.name: e.torch_shape for e in table} == expected
  assert len(table) == 1600
  # Every torch shape maps onto the cat_jax parameter it lands in.
  for e in table:
    full = shapes[e.path]
    per = full if e.index is None else full[1:]
    assert int(np.prod(per)) == int(np.prod(e.torch_shape)), e.name


@pytest.mark.parametrize("bad, message", [("nan", "holds 1 NaN or Inf"), ("inf", "holds 1 NaN or Inf"),
                                          ("int", "holds int32 values")])
def test_non_finite_or_integer_weights_are_refused_by_name(tmp_path, tiny_config_dict, bad, message):
  tensors = dict(load_file(GOLDEN_TINY / "model.safetensors"))
  name = "decoder.2.output_proj.weight"
  w = tensors[name].copy()
  if bad == "int":
    w = w.astype(np.int32)
  else:
    w.flat[3] = np.nan if bad == "nan" else np.inf
  tensors[name] = w
  (tmp_path / "config.json").write_text(json.dumps(tiny_config_dict))
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(CheckpointError, match=f"tensor {name} {message}"):
    CAT.from_pretrained(tmp_path)
  from cat_jax.cli import main
  assert main(["decode", "x.npz", str(tmp_path / "o.wav"), "--model", str(tmp_path)]) == 2


def test_non_finite_orbax_params_are_refused(tmp_path, tiny_model):
  from flax import nnx
  from cat_jax.checkpoint import load_params, save_params
  pure = nnx.to_pure_dict(tiny_model.params)
  book = np.array(pure["quantizer"]["quantizers"]["codebook"])
  book[0, 0] = np.inf
  pure["quantizer"]["quantizers"]["codebook"] = book
  save_params(tmp_path / "p", tiny_model.config, pure)
  with pytest.raises(CheckpointError, match=r"\['quantizers'\]\['codebook'\] holds \d+ NaN or Inf"):
    load_params(tmp_path / "p")


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/abs.safetensors", "sub/../../x.safetensors"])
def test_sharded_index_cannot_point_outside_the_model_folder(tmp_path, tiny_config_dict, shard):
  from cat_jax.convert import read_safetensors_dir
  model = tmp_path / "model"
  model.mkdir()
  (model / "config.json").write_text(json.dumps(tiny_config_dict))
  save_file(dict(load_file(GOLDEN_TINY / "model.safetensors")), str(tmp_path / "outside.safetensors"))
  names = list(load_file(GOLDEN_TINY / "model.safetensors"))
  (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))
  for load in (CAT.from_pretrained, read_safetensors_dir):
    with pytest.raises(CheckpointError, match="names a shard outside the model folder"):
      load(str(model))
