"""CATConfig on the v2 family (CAT_SPEC_V2.md section 1-2): the v2-tiny file round-trips, windows
come from the rate walk with ties to even, aliases and options are checked, errors name the field."""
import copy
import json

import pytest

from cat_jax import CATConfig, ConfigError
from cat_jax.config import TransformerSpec
from tests.conftest import DATA, GOLDEN_TINY, RELEASED

V2 = DATA / "golden_v2_tiny" / "config.json"


def _v2():
  return json.loads(V2.read_text())


def test_v2_tiny_round_trips_exactly():
  raw = _v2()
  cfg = CATConfig.from_dict(raw)
  assert cfg.family == "v2" and cfg.channels == 2 and cfg.enable_channel_interleave
  assert cfg.downsample_rate == 3840 and cfg.frame_rate == 12.5 and cfg.stream_downsample_rate == 7680
  assert cfg.attention_implementation == "sdpa" and cfg.compute_dtype == "fp32"
  assert cfg.to_dict() == raw
  assert CATConfig.from_dict(cfg.to_dict()) == cfg
  assert "context_duration" not in cfg.to_dict()["decoder_kwargs"][5]  # absent stays absent


@pytest.mark.parametrize("path", [GOLDEN_TINY / "config.json", RELEASED / "config.json"])
def test_v1_files_stay_v1_and_round_trip(path):
  raw = json.loads(path.read_text())
  cfg = CATConfig.from_dict(raw)
  assert cfg.family == "v1" and not cfg.interleaved
  assert cfg.to_dict() == raw


def test_windows_round_ties_to_even_and_fall_back_to_the_global_duration():
  cfg = CATConfig.from_dict(_v2())
  enc = [m for m in cfg.encoder if isinstance(m, TransformerSpec)]
  dec = [m for m in cfg.decoder if isinstance(m, TransformerSpec)]
  assert [m.context for m in enc] == [40, 29, 12, 15]  # int() would give 39, 28, 12, 15
  assert [m.context for m in dec] == [16, 20, 32, 40]
  assert dec[2].context_duration is None


def test_released_v2_layout_windows():
  """The v2 class defaults of CAT_SPEC_V2.md section 2: 400 400 400 400 250 125 / 125 ... 400."""
  raw = _v2()
  raw["causal_transformer_context_duration"] = 10.0
  durs_e, durs_d = [1, 2, 4, 10], [10, 4, 2, 1]
  for m, d in zip([m for m in raw["encoder_kwargs"] if m["module_type"] == "Transformer"], durs_e):
    m["context_duration"] = d
  for m, d in zip([m for m in raw["decoder_kwargs"] if m["module_type"] == "Transformer"], durs_d):
    m["context_duration"] = d
  cfg = CATConfig.from_dict(raw)  # rates 400, 200, 100, 50 Hz / 50, 100, 200, 400 Hz
  assert [m.context for m in cfg.encoder if isinstance(m, TransformerSpec)] == [400, 400, 400, 500]
  assert [m.context for m in cfg.decoder if isinstance(m, TransformerSpec)] == [500, 400, 400, 400]


def test_aliases_and_reversed_decoder():
  raw = _v2()
  raw["channels_numbers"] = raw.pop("number_channels")
  raw["attention_backend"] = raw.pop("attention_implementation")
  raw["codec_compute_dtype"] = raw.pop("compute_dtype")
  raw["codec_weight_dtype"] = "bf16"
  cfg = CATConfig.from_dict(raw)
  assert cfg.channels == 2 and cfg.attention_implementation == "sdpa" and cfg.compute_dtype == "bf16"
  # decoder_kwargs absent: the decoder is reversed_decoder_kwargs reversed, widths swapped
  base = CATConfig.from_dict(_v2())
  rev = _v2()
  dec = rev.pop("decoder_kwargs")
  rev["reversed_decoder_kwargs"] = [dict(m, input_dimension=m["output_dimension"], output_dimension=m["input_dimension"])
                                    if m["module_type"] == "Transformer" else m for m in reversed(dec)]
  cfg = CATConfig.from_dict(rev)
  assert cfg.decoder == base.decoder
  assert cfg.to_dict() == rev


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["encoder_kwargs"][8].update(patch_size=2),
     r"encoder_kwargs patch sizes multiply to 3840, but downsample_rate x number_channels = 3840 x 2 = 7680"),
    (lambda c: c.update(downsample_rate=7680), r"downsample_rate x number_channels = 7680 x 2"),
    (lambda c: c.update(enable_channel_interleave=False), r"multiply to 7680, but downsample_rate is 3840"),
    (lambda c: c["encoder_kwargs"][3].update(input_dimension=48), r"encoder_kwargs\[3\]: input_dimension=48"),
    (lambda c: c["decoder_kwargs"][3].update(input_dimension=12), r"decoder_kwargs\[3\]: input_dimension=12"),
    (lambda c: c.update(channels_numbers=1), "number_channels=2 and channels_numbers=1 disagree"),
    (lambda c: c.update(number_channels=0), "number_channels must be a positive integer"),
    (lambda c: c.update(enable_channel_interleave="yes"), "enable_channel_interleave must be true or false"),
    (lambda c: c.update(compute_dtype="fp16"), "compute_dtype must be one of"),
    (lambda c: c.update(attention_implementation="xformers"), "attention_implementation must be one of"),
    (lambda c: c["encoder_kwargs"][1].update(context_duration=-1), r"encoder_kwargs\[1\]: context_duration must be"),
    (lambda c: c["encoder_kwargs"][1].update(context_duration=0.001), r"encoder_kwargs\[1\]: context_duration=0.001 s gives an empty"),
])
def test_bad_v2_configs_name_the_field(mutate, message):
  raw = copy.deepcopy(_v2())
  mutate(raw)
  with pytest.raises(ConfigError, match=message):
    CATConfig.from_dict(raw)


def test_v2_architecture_builds_the_golden_layout():
  from cat_jax.config import v2_architecture
  raw = _v2()
  built = v2_architecture(
      patch_sizes=(240, 2, 2, 2, 4), quantizer=raw["quantizer_kwargs"], context_seconds=0.16,
      encoder=[(32, 2, 2, 128, 16), (32, 1, 2, 64, 24), (48, 1, 4, 96, 24), (64, 2, 4, 128, 12)],
      decoder=[(64, 2, 4, 128, 48), (48, 1, 4, 96, 48), (32, 1, 2, 64, 32), (32, 2, 2, 128, 240)],
      encoder_contexts=[0.0995, 0.145, 0.125, 0.3], decoder_contexts=[0.31, 0.2, None, 0.1])
  assert built == raw
