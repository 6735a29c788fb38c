"""Options beyond golden/tiny: 48 kHz stereo, rms norms, sin embeddings, gated FFNs, rvq, input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cat_jax import CAT, AudioError, CodesError
from cat_jax.config import symmetric_config
from cat_jax.model.layers import RMSNorm
from cat_jax.model.transformer import TransformerLayer, sin_embedding


def test_48khz_stereo_encodes_and_decodes_with_right_shapes():
  cfg = symmetric_config(sample_rate=48000, channels=2, patch_sizes=(240, 2, 2, 2, 2, 2),
                         d_models=(32,) * 6, num_layers=(1,) * 6, num_heads=(2,) * 6, context_seconds=1.0)
  model = CAT.from_config(cfg, seed=1)
  t = 48000 + 1000  # 1.02 s: 7 frames of 7680 after padding
  audio = np.random.default_rng(0).normal(size=(2, 2, t)).astype(np.float32) * 0.1
  enc = model.encode(audio, padding_mask=np.arange(t)[None] < np.array([[t], [30000]]))
  assert enc.audio_codes.shape == (cfg.num_quantizers, 2, 7)
  np.testing.assert_array_equal(enc.audio_codes_lengths, [t // 7680, 30000 // 7680])
  assert enc.encoder_hidden_states.shape == (2, 48, 7)
  dec = model.decode(enc.audio_codes, padding_mask=np.arange(7)[None] < enc.audio_codes_lengths[:, None])
  assert dec.audio.shape == (2, 2, 7 * 7680)
  np.testing.assert_array_equal(dec.audio_lengths, enc.audio_codes_lengths * 7680)
  with pytest.raises(AudioError, match="1 channel"):
    model.encode(audio[:, :1])


@pytest.mark.parametrize("options", [
    dict(norm="rms_norm", positional_embedding="sin", gating="silu", quantizer_type="rvq"),
    dict(norm="rms_norm_f32", positional_embedding="sin_rope", gating="gelu", layer_scale=None),
    dict(positional_embedding="none", codebook_dim=32),  # codebook_dim == rvq_dim: no per-quantizer projections
])
def test_model_options_run_and_decode_consistently(options):
  cfg = symmetric_config(**options)
  model = CAT.from_config(cfg, seed=0)
  x = np.random.default_rng(1).normal(size=(1, 1, 9600)).astype(np.float32) * 0.1
  enc = model.encode(x)
  assert enc.audio_codes.shape == (8, 1, 5)
  assert enc.audio_codes.min() >= 0 and enc.audio_codes.max() < 64
  # The decode path equals the quantizer's own output (a correct rvq decode, out_proj included).
  m = nnx.merge(model.graphdef, model.params)
  h = jnp.asarray(enc.encoder_hidden_states).transpose(0, 2, 1)
  q = m.quantizer(h, jnp.array([5]))
  np.testing.assert_array_equal(np.asarray(q.codes), enc.audio_codes)
  np.testing.assert_allclose(np.asarray(m.quantizer.decode(q.codes)), np.asarray(q.quantized), atol=1e-5)
  dec = model.decode(enc.audio_codes)
  assert dec.audio.shape == (1, 1, 9600) and np.isfinite(dec.audio).all()


def test_sin_embedding_formula():
  pos = jnp.arange(7)[None]
  emb = np.asarray(sin_embedding(pos, 8, 10000.0))[0]
  half = 4
  phase = np.arange(7)[:, None] / 10000.0 ** (np.arange(half) / (half - 1))
  np.testing.assert_allclose(emb, np.concatenate([np.cos(phase), np.sin(phase)], -1), atol=1e-6)


def test_rms_norm_formula():
  x = np.random.default_rng(0).normal(size=(2, 3, 8)).astype(np.float32)
  n = RMSNorm(8, 1e-5)
  n.alpha[...] = jnp.arange(8, dtype=jnp.float32)
  ref = x * np.arange(8) / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(np.asarray(n(jnp.asarray(x))), ref, rtol=1e-5, atol=1e-6)


def test_gated_ffn_splits_gate_then_value():
  cfg = symmetric_config(gating="sigmoid", layer_scale=None, positional_embedding="none")
  spec = cfg.encoder[1]
  layer = TransformerLayer(spec, key=jax.random.key(0))
  x = jax.random.normal(jax.random.key(1), (1, 4, spec.d_model))
  w_in = np.asarray(layer.gating.linear_in.kernel[...])  # (C, 2, h)
  w_out = np.asarray(layer.gating.linear_out.kernel[...])
  h = np.asarray(layer.norm2(x))
  y = h @ w_in.reshape(spec.d_model, -1)
  gate, value = np.split(y, 2, axis=-1)
  ref = (1 / (1 + np.exp(-gate)) * value) @ w_out
  np.testing.assert_allclose(np.asarray(layer.gating(jnp.asarray(h))), ref, atol=1e-5)


def test_codes_and_audio_errors(tiny_model):
  m = tiny_model
  with pytest.raises(CodesError, match=r"lie in \[0, 64\)"):
    m.decode(np.full((8, 1, 3), 64))
  with pytest.raises(CodesError, match="only 2 quantizers"):
    m.decode(np.zeros((2, 1, 3), np.int64), num_quantizers=4)
  with pytest.raises(CodesError, match="9 quantizers"):
    m.decode(np.zeros((9, 1, 3), np.int64))
  with pytest.raises(CodesError, match="integers"):
    m.decode(np.zeros((8, 1, 3), np.float32))
  with pytest.raises(AudioError, match="empty"):
    m.encode(np.zeros((1, 1, 0), np.float32))
  with pytest.raises(AudioError, match="NaN"):
    m.encode(np.full((1, 1, 100), np.nan, np.float32))
  with pytest.raises(CodesError, match="num_quantizers"):
    m.encode(np.zeros((1, 1, 100), np.float32), num_quantizers=0)
  with pytest.raises(AudioError, match="padding_mask"):
    m.encode(np.zeros((1, 1, 100), np.float32), padding_mask=np.ones((1, 50)))


def test_fresh_quantizers_code_what_is_left_of_the_residual():
  """At init each projected quantizer's output approximates the part of its residual it coded
  (out_proj = pinv(in_proj)), so the residual shrinks quantizer by quantizer. With independent random
  projections it grew instead and the later codebooks re-coded the same thing."""
  from cat_jax.config import QuantizerSpec
  from cat_jax.model.quantizer import ResidualQuantizer
  rq = ResidualQuantizer(QuantizerSpec("rlfq", 64, 64, 64, 4, 1024, 8), key=jax.random.key(0))
  z = jax.random.normal(jax.random.key(1), (2, 50, 64))
  graphdef, state = rq._stack(4)
  res, norms = z, [float(jnp.linalg.norm(z))]
  for i in range(4):
    q = nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))
    ze = q.project_in(res)
    res = res - q.project_out(ze)  # a codebook row equal to z_e: what the codebook loss drives towards
    norms.append(float(jnp.linalg.norm(res)))
  assert all(b < a * 0.99 for a, b in zip(norms, norms[1:])), norms
