"""CATConfig: the reference schema round-trips; bad configs fail with a message naming the problem."""
import copy
import json

import pytest

from cat_jax import CATConfig, ConfigError
from cat_jax.config import PatchSpec, TransformerSpec, symmetric_config
from tests.conftest import GOLDEN_TINY, RELEASED


def test_released_config_parses_with_derived_fields():
  cfg = CATConfig.from_json(RELEASED / "config.json")
  assert cfg.sampling_rate == 24000 and cfg.downsample_rate == 1920 and cfg.channels == 1
  assert cfg.frame_rate == 12.5 and cfg.num_quantizers == 32 and cfg.codebook_size == 1024
  assert cfg.bits_per_second() == 4000 and cfg.bits_per_second(1) == 125
  contexts = [m.context for m in cfg.encoder if isinstance(m, TransformerSpec)]
  assert contexts == [1000, 500, 250, 125]  # 10 s at 100, 50, 25, 12.5 Hz
  assert [m.context for m in cfg.decoder if isinstance(m, TransformerSpec)] == [125, 250, 500, 1000]
  assert cfg.quantizer.kind == "rlfq"


def test_round_trip_keeps_carried_fields():
  raw = json.loads((RELEASED / "config.json").read_text())
  cfg = CATConfig.from_dict(raw)
  out = cfg.to_dict()
  for k in ("auto_map", "version", "reversed_decoder_kwargs", "code_dim", "transformers_version"):
    assert out[k] == raw[k]
  assert CATConfig.from_dict(out) == cfg
  assert out["encoder_kwargs"][1] == raw["encoder_kwargs"][1]


def _tiny():
  return json.loads((GOLDEN_TINY / "config.json").read_text())


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["encoder_kwargs"][1].update(module_type="Conv"), "unknown module_type 'Conv'"),
    (lambda c: c["encoder_kwargs"][1].update(norm="batch_norm"), "unknown norm"),
    (lambda c: c["encoder_kwargs"][1].update(positional_embedding="alibi"), "unknown positional_embedding"),
    (lambda c: c["encoder_kwargs"][1].update(gating="swish"), "unknown gating"),
    (lambda c: c["encoder_kwargs"][1].update(dropout=0.1), r"unknown Transformer option\(s\) \['dropout'\]"),
    (lambda c: c["encoder_kwargs"][0].update(patch_size=120), "patch sizes multiply to 960"),
    (lambda c: c["encoder_kwargs"][3].update(input_dimension=40), "input_dimension=40 but the previous module gives 48"),
    (lambda c: c["encoder_kwargs"][1].update(num_heads=3), "not divisible by num_heads=3"),
    (None, "RoPE needs an even head dim"),
    (lambda c: c["quantizer_kwargs"].update(quantizer_type="fsq"), "unknown quantizer_type 'fsq'"),
    (lambda c: c["quantizer_kwargs"].update(input_dim=40), "quantizer input_dim 40"),
    (lambda c: c.pop("downsample_rate"), "missing required field 'downsample_rate'"),
    (lambda c: c["decoder_kwargs"][6].update(output_dimension=480), "decoder ends with 2 channels"),
])
def test_bad_configs_raise_clear_errors(mutate, message):
  raw = _tiny()
  if "RoPE" in message:
    raw["encoder_kwargs"][3].update(num_heads=16)  # 48 / 16 = 3: odd head dim
  else:
    mutate(raw)
  with pytest.raises(ConfigError, match=message):
    CATConfig.from_dict(raw)


def test_missing_file_and_bad_json(tmp_path):
  with pytest.raises(ConfigError, match="not found"):
    CATConfig.from_json(tmp_path / "none.json")
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(ConfigError, match="not valid JSON"):
    CATConfig.from_json(tmp_path)


def test_symmetric_config_48k_stereo_chains():
  cfg = symmetric_config(sample_rate=48000, channels=2, patch_sizes=(240, 2, 2, 2, 2, 2),
                         d_models=(32,) * 6, num_layers=(1,) * 6, num_heads=(2,) * 6)
  assert cfg.channels == 2 and cfg.downsample_rate == 7680 and cfg.frame_rate == 6.25
  assert isinstance(cfg.encoder[0], PatchSpec) and cfg.encoder[1].input_dimension == 480
  assert cfg.decoder[-2].output_dimension == 480


def test_options_gated_rms_sin_rvq_build():
  cfg = symmetric_config(norm="rms_norm_f32", positional_embedding="sin_rope", gating="silu",
                         quantizer_type="rvq", layer_scale=None)
  spec = cfg.encoder[1]
  assert spec.gating == "silu" and spec.ffn_hidden == 2 * 64 // 3
  assert cfg.quantizer.kind == "rvq"
