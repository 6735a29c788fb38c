"""Parity with the PyTorch reference on golden/tiny: activations, codes, audio, lengths."""
import jax.numpy as jnp
import numpy as np

from cat_jax.model.cat import run_modules


def _channel_first(x):
  return np.asarray(x).transpose(0, 2, 1)


def test_encoder_and_decoder_activations(tiny_model, golden):
  model = tiny_model
  from flax import nnx
  m = nnx.merge(model.graphdef, model.params)
  x = jnp.asarray(golden["input_values"]).transpose(0, 2, 1)
  x = jnp.pad(x, ((0, 0), (0, 24960 - 24000), (0, 0)))
  lengths = jnp.asarray(golden["padding_mask"].sum(-1))
  for i, mod in enumerate(m.encoder):
    x, lengths, _ = run_modules([mod], x, lengths)
    np.testing.assert_allclose(_channel_first(x), golden[f"act_encoder_{i}"], atol=1e-4, rtol=0)
  codes = jnp.asarray(golden["audio_codes"], jnp.int32)
  y = m.quantizer.decode(codes)
  flen = jnp.asarray(golden["audio_codes_lengths"])
  for i, mod in enumerate(m.decoder):
    y, flen, _ = run_modules([mod], y, flen)
    np.testing.assert_allclose(_channel_first(y), golden[f"act_decoder_{i}"], atol=1e-4, rtol=0)


def test_encode_codes_hidden_lengths(tiny_model, golden):
  enc = tiny_model.encode(golden["input_values"], golden["padding_mask"])
  assert enc.audio_codes.dtype == np.int32
  np.testing.assert_array_equal(enc.audio_codes, golden["audio_codes"])
  np.testing.assert_array_equal(enc.audio_codes_lengths, golden["audio_codes_lengths"])
  np.testing.assert_allclose(enc.encoder_hidden_states, golden["encoder_hidden_states"], atol=1e-4, rtol=0)


def test_encode_partial_quantizers(tiny_model, golden):
  nq = int(golden["nq_partial"])
  enc = tiny_model.encode(golden["input_values"], golden["padding_mask"], num_quantizers=nq)
  np.testing.assert_array_equal(enc.audio_codes, golden["audio_codes_nq_partial"])


def _code_mask(golden):
  return np.arange(golden["audio_codes"].shape[-1])[None] < golden["audio_codes_lengths"][:, None]


def test_decode_audio_and_lengths(tiny_model, golden):
  dec = tiny_model.decode(golden["audio_codes"], _code_mask(golden))
  np.testing.assert_allclose(dec.audio, golden["decoded_audio"], atol=1e-4, rtol=0)
  np.testing.assert_array_equal(dec.audio_lengths, golden["decoded_audio_lengths"])


def test_decode_partial_quantizers(tiny_model, golden):
  dec = tiny_model.decode(golden["audio_codes"], _code_mask(golden), num_quantizers=int(golden["nq_partial"]))
  np.testing.assert_allclose(dec.audio, golden["decoded_audio_nq_partial"], atol=1e-4, rtol=0)


def test_offline_stream_reference(tiny_model, golden):
  enc = tiny_model.encode(golden["stream_input"])
  np.testing.assert_array_equal(enc.audio_codes, golden["stream_full_codes"])
  dec = tiny_model.decode(enc.audio_codes)
  np.testing.assert_allclose(dec.audio, golden["stream_full_audio"], atol=1e-4, rtol=0)


def test_bucketing_does_not_change_results(tiny_model, golden):
  """Odd lengths land in padded buckets; the returned frames must equal an unpadded run."""
  x = golden["input_values"][:1, :, :17000]
  a = tiny_model.encode(x)
  b = tiny_model.encode(np.concatenate([x, np.zeros((1, 1, 5000), np.float32)], -1),
                        padding_mask=np.arange(22000)[None] < 17000)
  np.testing.assert_array_equal(a.audio_codes, b.audio_codes[:, :, : a.audio_codes.shape[-1]])
