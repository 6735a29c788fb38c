"""Streaming equals offline coding on golden/tiny: codes identical, audio within 1e-5, any chunk size."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cat_jax import streaming as st
from cat_jax.cli import main
from cat_jax.errors import ConfigError
from cat_jax.stream_state import init_decoder_state, init_encoder_state, state_bytes
from cat_jax.model.transformer import slot_positions

DR = 1920  # golden/tiny: samples per 80 ms token frame; context 0.32 s = 4 frames


@pytest.fixture(scope="module")
def offline(tiny_model, golden):
  enc = tiny_model.encode(golden["input_values"], golden["padding_mask"])
  mask = np.arange(enc.audio_codes.shape[-1])[None] < enc.audio_codes_lengths[:, None]
  return enc, mask, tiny_model.decode(enc.audio_codes, mask)


@pytest.mark.parametrize("frames", [1, 2, 3, 4])
def test_chunked_encode_equals_offline(tiny_model, golden, offline, frames):
  """Two streams of 24000 and 15000 samples (13 frames: ragged last chunk for 2, 3, 4)."""
  enc, _, _ = offline
  ch = tiny_model.encode(golden["input_values"], golden["padding_mask"], chunk_duration=0.08 * frames)
  np.testing.assert_array_equal(ch.audio_codes, enc.audio_codes)
  np.testing.assert_array_equal(ch.audio_codes, golden["audio_codes"])
  np.testing.assert_array_equal(ch.audio_codes_lengths, enc.audio_codes_lengths)
  np.testing.assert_allclose(ch.encoder_hidden_states, enc.encoder_hidden_states, atol=1e-5, rtol=0)


@pytest.mark.parametrize("frames", [1, 2, 3, 4])
def test_chunked_decode_equals_offline(tiny_model, offline, frames):
  enc, mask, dec = offline
  ch = tiny_model.decode(enc.audio_codes, mask, chunk_duration=0.08 * frames)
  assert ch.audio.shape == dec.audio.shape == (2, 1, 13 * DR)
  np.testing.assert_allclose(ch.audio, dec.audio, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(ch.audio_lengths, dec.audio_lengths)


def test_offline_matches_golden_and_reference_drifts(tiny_model, golden):
  """Our offline and 80 ms chunked codes equal the reference's offline codes; the reference's
  own 80 ms streaming does not (it loses keys once the clip outgrows the 0.32 s window).
  The clip is batched with a longer one so that the chunked programs of the tests above are reused."""
  x = golden["stream_input"]  # (1, 1, 19200)
  full = golden["stream_full_codes"]
  off = tiny_model.encode(x)
  np.testing.assert_array_equal(off.audio_codes, full)
  np.testing.assert_allclose(tiny_model.decode(full).audio, golden["stream_full_audio"], atol=1e-4, rtol=0)
  pair = golden["input_values"].copy()
  pair[1, :, :19200] = x[0]
  mask = np.arange(24000)[None] < np.array([[24000], [19200]])
  ours = tiny_model.encode(pair, mask, chunk_duration=0.08).audio_codes[:, 1:, :10]
  np.testing.assert_array_equal(ours, full)
  ref = golden["stream_chunked_codes"]
  np.testing.assert_array_equal(ref[:, :, :4], full[:, :, :4])  # inside the window both agree
  assert (ref != full).any(axis=(0, 1)).sum() >= 4  # afterwards the reference drifts
  assert (ref == full).mean() < 0.6
  codes = np.concatenate([np.zeros((8, 1, 13), np.int32), np.pad(full, ((0, 0), (0, 0), (0, 3)))], 1)
  audio = tiny_model.decode(codes, np.arange(13)[None] < np.array([[13], [10]]), chunk_duration=0.08).audio
  np.testing.assert_allclose(audio[1:, :, :19200], golden["stream_full_audio"], atol=1e-4, rtol=0)
  assert np.abs(golden["stream_chunked_audio"] - golden["stream_full_audio"]).max() > 1e-3


def test_arbitrary_sample_chunks_and_reset(tiny_model, golden):
  """2500-sample pushes are buffered into 1920-sample frames (1 or 2 per push). Stream 1
  restarts after 5000 samples (a partial frame buffered) on a new 17500-sample clip and then
  equals a fresh offline encoding, its last partial frame flushed; stream 0 is untouched."""
  m = tiny_model
  a = golden["stream_input"][0, 0]  # 19200 samples, 10 frames
  c = golden["input_values"][1, 0, :17500]  # 9 frames + 220 samples
  n = 2500
  s0 = np.zeros(9 * n, np.float32)
  s0[:a.size] = a  # stream 0 is fed zeros after its end; those frames are dropped
  s1 = np.concatenate([a[::-1][:2 * n], c])
  state = init_encoder_state(m.config, 2)
  got0, got1, counts = [], [], []
  for i in range(9):
    chunk = np.stack([s0[i * n:(i + 1) * n], s1[i * n:(i + 1) * n]])[..., None]
    reset = np.array([False, i == 2])
    if i == 2:
      assert int(state.fill[1]) == 2 * n - 2 * DR
    state, codes, _, count = st.steps_for(m).push(state, chunk, reset, n_q=None)
    codes, count = np.asarray(codes), np.asarray(count)
    assert codes.shape == (8, 2, 2)
    counts.append(count)
    got0.append(codes[:, 0, :count[0]])
    if i >= 2:
      got1.append(codes[:, 1, :count[1]])
  assert {int(c) for c in np.ravel(counts)} == {1, 2}
  assert int(state.fill[1]) == 17500 - 9 * DR
  _, codes, _, count = st.steps_for(m).flush(state, n_q=None)
  assert int(count[1]) == 1
  got1.append(np.asarray(codes)[:, 1, :1])
  np.testing.assert_array_equal(np.concatenate(got0, -1)[:, :10], golden["stream_full_codes"][:, 0])
  ours1 = np.concatenate(got1, -1)
  assert ours1.shape == (8, 10)
  np.testing.assert_array_equal(ours1, m.encode(c[None, None]).audio_codes[:, 0])


def test_decoder_reset_and_batched_streams(tiny_model, offline):
  """Two decoder streams one frame at a time; stream 1 restarts after 5 frames on stream 0's codes."""
  m = tiny_model
  enc, _, dec = offline
  codes = enc.audio_codes  # (8, 2, 13)
  state = init_decoder_state(m.config, 2)
  out0, out1 = [], []
  for i in range(13):
    c1 = codes[:, 1, i] if i < 5 else codes[:, 0, i - 5]
    step = np.stack([codes[:, 0, i], c1], 1)[:, :, None]
    reset = np.array([False, i == 5])
    state, audio = st.steps_for(m).decode(state, step, None, reset)
    out0.append(np.asarray(audio[0]))
    out1.append(np.asarray(audio[1]))
  out0 = np.concatenate(out0)[:, 0]
  out1 = np.concatenate(out1)[:, 0]
  np.testing.assert_allclose(out0, dec.audio[0, 0], atol=1e-5, rtol=0)
  np.testing.assert_allclose(out1[:5 * DR], dec.audio[1, 0, :5 * DR], atol=1e-5, rtol=0)
  np.testing.assert_allclose(out1[5 * DR:], dec.audio[0, 0, :8 * DR], atol=1e-5, rtol=0)
  assert int(state.stages[0].offset[1]) == 8 and int(state.stages[-2].offset[0]) == 13 * 8


def test_state_layout(tiny_model):
  """Ring buffers of context - 1 keys per stage (32, 16, 8, 4 frames at 100/50/25/12.5 Hz)."""
  s = init_encoder_state(tiny_model.config, 3)
  caps = [x.cache.v[0].shape[2] for x in s.stages if x is not None]
  assert caps == [31, 15, 7, 3]
  k, v = s.stages[1].cache
  assert len(k) == len(v) == 2 and v[0].shape == (3, 2, 31, 16)  # layers x (B, heads, slots, head_dim)
  assert k[0].shape == (3, 2, 16, 31)  # keys Dh-major
  assert int(s.stages[1].offset.max()) == 0 and s.buffer.shape == (3, DR, 1)
  d = init_decoder_state(tiny_model.config, 1)
  assert [x.cache.k[0].shape[3] for x in d.stages if x is not None] == [3, 7, 15, 31]
  assert state_bytes(d) > 0


def test_ring_buffer_slots(tiny_model):
  """After 10 one-frame decoder steps, the 12.5 Hz stage (3 slots) holds frames 9, 7, 8 in slots
  0, 1, 2 (p % 3) for the stream that ran every step; a stream active only in steps 0-4 keeps 3, 4, 2."""
  m = tiny_model
  state = init_decoder_state(m.config, 2)
  steps = st.steps_for(m)
  for i in range(10):
    state, _ = steps.decode(state, jnp.zeros((8, 2, 1), jnp.int32), np.array([True, i < 5]))
  assert np.asarray(state.stages[0].offset).tolist() == [10, 5]
  pos = np.asarray(slot_positions(state.stages[0].offset, 3))
  np.testing.assert_array_equal(pos, [[9, 7, 8], [3, 4, 2]])
  np.testing.assert_array_equal(np.asarray(slot_positions(jnp.array([0, 2, -5]), 3)), [[-1] * 3, [0, 1, -1], [-1] * 3])


def test_steps_update_the_caches_in_place(tiny_model):
  """The compiled steps write each layer's ring buffers in place: no buffer of a cache's shape is
  copied (XLA copies one whose in-place write it cannot order after the layer's reads)."""
  m = tiny_model
  for init, fn, arg in ((init_encoder_state, st.encoder_step, jnp.zeros((2, DR, 1))),
                        (init_decoder_state, st.decoder_step, jnp.zeros((8, 2, 1), jnp.int32))):
    state = init(m.config, 2)
    shapes = {f"f32[{','.join(map(str, x.shape))}]" for x in jax.tree.leaves(state) if x.ndim == 4}
    _, graphdef, params = m.coding()
    hlo = jax.jit(functools.partial(fn, graphdef), donate_argnames=("state",)).lower(
        params, state, arg).compile().as_text()
    entry = hlo[hlo.index("ENTRY"):]
    copies = [line for line in entry.split("\n") if " copy(" in line and any(f"= {sh}" in line for sh in shapes)]
    assert len(shapes) >= 2 and not copies, copies[:2]


@pytest.mark.parametrize("bad", [0, -0.08, 0.05, 0.1, float("nan"), "0.08", True])
def test_chunk_duration_is_validated(tiny_model, golden, bad):
  with pytest.raises(ConfigError, match="chunk_duration"):
    tiny_model.encode(golden["stream_input"], chunk_duration=bad)
  with pytest.raises(ConfigError, match="chunk_duration"):
    tiny_model.decode(golden["stream_full_codes"], chunk_duration=bad)


def test_cli_stream_encode_decode(golden, golden_dir, tmp_path, capsys):
  """stream-encode gives the reference's offline codes, stream-decode its audio (16-bit wav)."""
  import soundfile as sf
  x = golden["stream_input"][0, 0]
  sf.write(tmp_path / "in.wav", x, 24000, subtype="FLOAT")
  assert main(["stream-encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npz"), "--model", str(golden_dir)]) == 0
  z = np.load(tmp_path / "c.npz")
  assert z["codes"].dtype == np.int32 and int(z["length"]) == 19200 and int(z["sample_rate"]) == 24000
  np.testing.assert_array_equal(z["codes"], golden["stream_full_codes"][:, 0])
  assert main(["stream-decode", str(tmp_path / "c.npz"), str(tmp_path / "out.wav"),
               "--model", str(golden_dir), "--chunk-frames", "1"]) == 0
  y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
  ref = np.clip(golden["stream_full_audio"][0, 0], -1, 1)
  assert sr == 24000 and y.shape == (19200,)
  np.testing.assert_allclose(y, ref, atol=1e-4 + 1 / 32768, rtol=0)  # 16-bit wav
  assert main(["stream-decode", str(tmp_path / "missing.npz"), str(tmp_path / "o.wav"),
               "--model", str(golden_dir)]) == 2
  assert "codes file not found" in capsys.readouterr().err
  assert main(["stream-encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npz"),
               "--model", str(golden_dir), "--chunk-frames", "0"]) == 2
  assert "chunk frames must be a positive integer" in capsys.readouterr().err


def test_step_rejects_partial_frames_and_accepts_empty_push(tiny_model):
  from cat_jax.errors import AudioError
  m = tiny_model
  state = init_encoder_state(m.config, 1)
  with pytest.raises(AudioError, match="whole frames of 1920 samples"):
    st.encoder_step(m.graphdef, m.params, state, jnp.zeros((1, 1000, 1)))
  state, codes, hidden, count = st.encoder_push(m.graphdef, m.params, state, jnp.zeros((1, 0, 1)), n_q=2)
  assert codes.shape == (2, 1, 0) and hidden.shape == (1, 0, 48) and int(count[0]) == 0
  assert int(state.fill[0]) == 0
