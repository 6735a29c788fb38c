"""Parity with the v2 reference (48 kHz stereo, channel interleave) on golden/v2-tiny: windows,
activations, codes, hidden states, audio and lengths (CAT_SPEC_V2.md). Padded regions follow v2's
length masking inside attention, so whole arrays are compared where the reference's padding is known."""
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cat_jax import CAT
from cat_jax.config import TransformerSpec
from cat_jax.model.cat import run_modules
from tests.conftest import GOLDEN_V2


def _windows(mods):
  return [m.context if isinstance(m, TransformerSpec) else -1 for m in mods]


def test_windows_follow_the_rate_walk(v2_model, g2):
  cfg = v2_model.config
  assert cfg.v2 and cfg.channels == 2 and cfg.interleaved and cfg.stream_downsample_rate == 7680
  assert _windows(cfg.encoder) == g2["module_contexts_encoder"].tolist()  # 40, 29, 12 (tie to even), 15
  assert _windows(cfg.decoder) == g2["module_contexts_decoder"].tolist()  # 16, 20, 32 (global), 40


def _cf(x):
  return np.asarray(x).transpose(0, 2, 1)


def test_encoder_and_decoder_activations(v2_model, g2):
  m = nnx.merge(v2_model.graphdef, v2_model.params)
  x = jnp.asarray(g2["act_encoder_input"]).transpose(0, 2, 1)
  lengths = jnp.asarray(g2["act_lengths_encoder_input"])
  for i, mod in enumerate(m.encoder):
    x, lengths, _ = run_modules([mod], x, lengths)
    np.testing.assert_array_equal(np.asarray(lengths), g2[f"act_lengths_encoder_{i}"])
    np.testing.assert_allclose(_cf(x), g2[f"act_encoder_{i}"], atol=1e-4, rtol=0)  # padding included
  y = jnp.asarray(g2["act_decoder_input"]).transpose(0, 2, 1)
  flen = jnp.asarray(g2["audio_codes_lengths"])
  for i, mod in enumerate(m.decoder):
    y, flen, _ = run_modules([mod], y, flen)
    np.testing.assert_array_equal(np.asarray(flen), g2[f"act_lengths_decoder_{i}"])
    np.testing.assert_allclose(_cf(y), g2[f"act_decoder_{i}"], atol=1e-4, rtol=0)


def test_interleave_of_the_first_module(v2_model, g2):
  """The encoder's stream is L0 R0 L1 R1 ... of the zero-padded items (interleave inside the model)."""
  from cat_jax.model.cat import interleave
  x = g2["input_values"] * g2["padding_mask"][:, None]
  x = np.pad(x, ((0, 0), (0, 0), (0, 49920 - 48000))).transpose(0, 2, 1)
  s, lengths = interleave(v2_model.config, jnp.asarray(x), jnp.asarray(g2["padding_mask"].sum(-1)))
  np.testing.assert_array_equal(_cf(s), g2["act_encoder_input"])
  np.testing.assert_array_equal(np.asarray(lengths), g2["act_lengths_encoder_input"])


def test_encode_codes_hidden_lengths(v2_model, g2):
  enc = v2_model.encode(g2["input_values"], g2["padding_mask"])
  np.testing.assert_array_equal(enc.audio_codes, g2["audio_codes"])  # trimmed to 12 frames, not 13
  np.testing.assert_array_equal(enc.audio_codes_lengths, g2["audio_codes_lengths"])
  np.testing.assert_allclose(enc.encoder_hidden_states, g2["encoder_hidden_states"], atol=1e-4, rtol=0)


def test_encode_partial_quantizers(v2_model, g2):
  enc = v2_model.encode(g2["input_values"], g2["padding_mask"], num_quantizers=int(g2["nq_partial"]))
  np.testing.assert_array_equal(enc.audio_codes, g2["audio_codes_nq_partial"])


def test_decode_stereo_audio_and_lengths(v2_model, g2):
  mask = np.arange(g2["audio_codes"].shape[-1])[None] < g2["audio_codes_lengths"][:, None]
  dec = v2_model.decode(g2["audio_codes"], mask)
  assert dec.audio.shape == g2["decoded_audio"].shape == (2, 2, 46080)
  np.testing.assert_array_equal(dec.audio_lengths, g2["decoded_audio_lengths"])
  np.testing.assert_allclose(dec.audio, g2["decoded_audio"], atol=1e-4, rtol=0)


def test_decode_partial_quantizers(v2_model, g2):
  dec = v2_model.decode(g2["audio_codes"], num_quantizers=int(g2["nq_partial"]))
  np.testing.assert_allclose(dec.audio, g2["decoded_audio_nq_partial"], atol=1e-4, rtol=0)


def test_offline_stream_reference(v2_model, g2):
  enc = v2_model.encode(g2["stream_input"])
  np.testing.assert_array_equal(enc.audio_codes, g2["stream_full_codes"])
  np.testing.assert_allclose(enc.encoder_hidden_states, g2["stream_full_hidden"], atol=1e-4, rtol=0)
  dec = v2_model.decode(enc.audio_codes)
  np.testing.assert_allclose(dec.audio, g2["stream_full_audio"], atol=1e-4, rtol=0)


def test_items_alone_equal_the_batch(v2_model, g2):
  """Causal attention with length masking: an item encoded alone gives the batch's valid frames."""
  n = int(g2["padding_mask"][1].sum())
  enc = v2_model.encode(g2["input_values"][1:, :, :n])  # (1, 2, 30000)
  f = int(g2["audio_codes_lengths"][1])
  assert enc.audio_codes.shape[-1] == f
  np.testing.assert_array_equal(enc.audio_codes[:, 0], g2["audio_codes"][:, 1, :f])


def test_single_item_shapes_and_channel_errors(v2_model, g2):
  from cat_jax.errors import AudioError
  x = g2["stream_input"][0]  # (2, T): one stereo item
  enc = v2_model.encode(x)
  np.testing.assert_array_equal(enc.audio_codes, g2["stream_full_codes"])
  with pytest.raises(AudioError, match="1 channel.*takes 2"):
    v2_model.encode(x[:1][None])


def test_compute_dtype_bf16_is_the_default_compute(tmp_path, g2):
  """A v2 file with compute_dtype bf16 codes in bfloat16 unless a dtype is given (the quantizer stays f32)."""
  import json
  import shutil
  raw = json.loads((GOLDEN_V2 / "config.json").read_text())
  raw["compute_dtype"] = "bf16"
  (tmp_path / "config.json").write_text(json.dumps(raw))
  shutil.copy(GOLDEN_V2 / "model.safetensors", tmp_path / "model.safetensors")
  m = CAT.from_pretrained(tmp_path)
  assert m.dtype == jnp.bfloat16
  assert CAT.from_pretrained(tmp_path, dtype="float32").dtype == jnp.float32
  enc = m.encode(g2["stream_input"])
  assert enc.audio_codes.shape == g2["stream_full_codes"].shape
  assert (enc.audio_codes[0] == g2["stream_full_codes"][0]).mean() > 0.5  # bf16 rounding moves a few codes
