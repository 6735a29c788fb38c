"""v2 streaming (CAT_SPEC_V2.md section 5) equals offline: one stereo item and the ragged batch,
through CAT.encode/decode(chunk_duration=...) and the batched push engine. Unlike v1, the v2
reference's own chunked results equal offline too, so they are checked as well."""
import numpy as np
import pytest

from cat_jax import CAT
from cat_jax import streaming as st
from cat_jax.stream_state import init_encoder_state
from tests.conftest import GOLDEN_V2
DR = 3840


@pytest.mark.parametrize("chunk", [0.08, 0.32, pytest.param(0.16, marks=pytest.mark.slow),
                                   pytest.param(0.4, marks=pytest.mark.slow)])
def test_one_item_equals_offline(v2_model, g2, chunk):
  assert float(g2["chunk_duration"]) == 0.08
  enc = v2_model.encode(g2["stream_input"], chunk_duration=chunk)
  np.testing.assert_array_equal(enc.audio_codes, g2["stream_full_codes"])
  np.testing.assert_array_equal(enc.audio_codes, g2["stream_chunked_codes"])
  np.testing.assert_allclose(enc.encoder_hidden_states, g2["stream_full_hidden"], atol=1e-4, rtol=0)
  dec = v2_model.decode(enc.audio_codes, chunk_duration=chunk)
  assert dec.audio.shape == (1, 2, 57600)
  np.testing.assert_allclose(dec.audio, g2["stream_full_audio"], atol=1e-4, rtol=0)
  np.testing.assert_allclose(dec.audio, g2["stream_chunked_audio"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("chunk", [0.08, pytest.param(0.32, marks=pytest.mark.slow)])
def test_ragged_batch_equals_offline_on_valid_regions(v2_model, g2, chunk):
  flen = g2["audio_codes_lengths"]
  enc = v2_model.encode(g2["input_values"], g2["padding_mask"], chunk_duration=chunk)
  assert enc.audio_codes.shape == g2["audio_codes"].shape
  np.testing.assert_array_equal(enc.audio_codes_lengths, flen)
  for b in range(2):
    np.testing.assert_array_equal(enc.audio_codes[:, b, :flen[b]], g2["audio_codes"][:, b, :flen[b]])
  mask = np.arange(g2["audio_codes"].shape[-1])[None] < flen[:, None]
  dec = v2_model.decode(g2["audio_codes"], mask, chunk_duration=chunk)
  alen = g2["decoded_audio_lengths"]
  np.testing.assert_array_equal(dec.audio_lengths, alen)
  for b in range(2):
    np.testing.assert_allclose(dec.audio[b, :, :alen[b]], g2["decoded_audio"][b, :, :alen[b]], atol=1e-4, rtol=0)


def test_stereo_push_engine_equals_offline(v2_model, g2):
  """5000-sample stereo pushes (B, N, 2) are buffered into 3840-sample frames per channel."""
  m = v2_model
  x = g2["stream_input"][0].T  # (57600, 2): 15 frames
  n = 5000
  state = init_encoder_state(m.config, 1)
  steps = st.steps_for(m)
  got = []
  for i in range(-(-x.shape[0] // n)):
    chunk = np.zeros((1, n, 2), np.float32)
    part = x[i * n:(i + 1) * n]
    if part.shape[0] < n:  # the last push: only what remains
      chunk = part[None]
    else:
      chunk[0] = part
    state, codes, _, count = steps.push(state, chunk, None, n_q=None)
    got.append(np.asarray(codes)[:, 0, :int(count[0])])
  codes = np.concatenate(got, -1)
  np.testing.assert_array_equal(codes, g2["stream_full_codes"][:, 0])
  assert int(state.fill[0]) == 0
