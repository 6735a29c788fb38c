"""load_codec: the three layouts, the architecture check naming what differs, and `init_from`'s
one-line errors in the training loop. (A training run's layout end to end: train/test_loop.py.)"""
import dataclasses

import pytest

from cat_jax.checkpoint import params_equal, save_params
from cat_jax.errors import CheckpointError
from cat_jax.loader import layout, load_codec
from tests.conftest import GOLDEN_TINY


def test_reference_orbax_and_run_layouts(tmp_path, tiny_model):
  assert layout(GOLDEN_TINY) == "reference"
  save_params(tmp_path / "orbax", tiny_model.config, tiny_model.params)
  assert layout(tmp_path / "orbax") == "orbax"
  for path in (GOLDEN_TINY, tmp_path / "orbax"):
    model = load_codec(path, expect=tiny_model.config)
    assert model.config == tiny_model.config and params_equal(model.params, tiny_model.params)
  (tmp_path / "run" / "checkpoints").mkdir(parents=True)
  assert layout(tmp_path / "run") == "run"
  with pytest.raises(CheckpointError, match="no training checkpoint in"):
    load_codec(tmp_path / "run")


def test_missing_directory_and_run_options_elsewhere(tmp_path):
  with pytest.raises(CheckpointError, match="model directory not found"):
    load_codec(tmp_path / "nope")
  with pytest.raises(CheckpointError, match="not a training run"):
    load_codec(GOLDEN_TINY, step=3)
  with pytest.raises(CheckpointError, match="unknown model layout"):
    load_codec(GOLDEN_TINY, kind="hf")


def test_another_architecture_names_the_fields(tiny_model):
  cfg = tiny_model.config
  other = cfg.replace(quantizer=dataclasses.replace(cfg.quantizer, codebook_size=32))
  with pytest.raises(CheckpointError, match=r"another architecture than expected: "
                     r"quantizer_kwargs\.codebook_size: 64 here, 32 expected$"):
    load_codec(GOLDEN_TINY, expect=other)


def test_init_from_errors_are_one_line_naming_it(golden_dir):
  from cat_jax.train import loop
  from tests.train.conftest import fast_config
  cfg = fast_config()  # another codec than golden_tiny's
  cfg.init_from = str(golden_dir)
  with pytest.raises(CheckpointError) as err:
    loop._init_codec_params(cfg)
  msg = str(err.value)
  assert msg.startswith(f"init_from: {golden_dir} holds another architecture than expected: ") and "\n" not in msg
  assert "here" in msg and "expected" in msg
  cfg.init_from = str(golden_dir / "missing")
  with pytest.raises(CheckpointError, match="^init_from: model directory not found"):
    loop._init_codec_params(cfg)


def test_a_stereo_v2_config_against_a_mono_one_names_the_channels():
  from cat_jax.config import CATConfig
  from cat_jax.loader import architecture_diff
  v2 = CATConfig.from_json(GOLDEN_TINY.parent / "golden_v2_tiny" / "config.json")
  v1 = CATConfig.from_json(GOLDEN_TINY / "config.json")
  text = architecture_diff(v2, v1, limit=20)
  assert "number_channels: 2 here" in text and "sampling_rate" in text
