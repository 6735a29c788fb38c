"""Discriminators and the semantic LM: shapes, logical axes, causality and masking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cat_jax.train.discriminators import BandedSTFTDiscriminator, Discriminators
from cat_jax.train.semantic_lm import SemanticLM, text_loss


def _axes_ok(module):
  for path, v in nnx.iter_graph(module):
    if isinstance(v, nnx.Param):
      axes = v.get_metadata().get("axes")
      assert axes is not None and len(axes) == v[...].ndim, path


def test_discriminator_outputs_and_axes():
  d = Discriminators(key=jax.random.key(0), periods=(2, 3), period_channels=(4, 8, 8, 8, 8), fft_sizes=(256,),
                     stft_channels=4)
  _axes_ok(d)
  x = jax.random.normal(jax.random.key(1), (2, 1201))
  logits, feats = nnx.jit(lambda d, x: d(x))(d, x)
  assert len(logits) == 3 and [len(f) for f in feats] == [5, 5, 25]
  # period 3: 1201 -> padded 1203 -> 401 rows; time strides 3, 3, 3, 3, 1 -> 5 rows; width = period
  assert logits[1].shape == (2, 5, 3, 1) and feats[1][0].shape == (2, 134, 3, 4)
  # STFT 256, hop 64: 19 frames; 5 bands of 129 bins, each width / 8 after three stride-2 convs
  assert logits[2].shape[:2] == (2, 19) and logits[2].shape[-1] == 1
  assert all(np.isfinite(np.asarray(lg)).all() for lg in logits)


def test_stft_discriminator_band_edges():
  d = BandedSTFTDiscriminator(2048, (0.0, 0.1, 0.25, 0.5, 0.75, 1.0), 2, key=jax.random.key(0))
  assert d.bands == ((0, 102), (102, 256), (256, 512), (512, 768), (768, 1025))


@pytest.fixture(scope="module")
def lm():
  return SemanticLM(6, key=jax.random.key(0), d_model=16, num_layers=2, num_heads=2, dim_feedforward=32)


def test_lm_axes_and_causality(lm):
  _axes_ok(lm)
  prefix = jax.random.normal(jax.random.key(1), (2, 5, 6))
  plen = jnp.array([5, 3])
  text = jnp.array([[3, 80, 81, 82, 2, 0], [4, 90, 91, 2, 0, 0]])
  run = nnx.jit(lambda m, p, t: m(p, plen, t))
  base = np.asarray(run(lm, prefix, text))
  assert base.shape == (2, 6, 264)
  later = np.asarray(run(lm, prefix, text.at[:, 3].set(100)))
  np.testing.assert_allclose(later[:, :3], base[:, :3], atol=1e-5)  # causal: earlier logits unchanged
  assert np.abs(later[:, 3:] - base[:, 3:]).max() > 1e-4
  pad_changed = np.asarray(run(lm, prefix.at[1, 3:].set(50.0), text))
  np.testing.assert_allclose(pad_changed, base, atol=1e-5)  # padded prefix frames are invisible
  valid_changed = np.asarray(run(lm, prefix.at[1, 0].set(5.0), text))
  assert np.abs(valid_changed[1] - base[1]).max() > 1e-4  # the audio prefix conditions the text


def test_text_loss_values():
  v = 264
  text = jnp.array([[3, 80, 81, 2, 0], [0, 0, 0, 0, 0]])
  lengths = jnp.array([4, 0])
  assert float(text_loss(jnp.zeros((2, 5, v)), text, lengths)) == pytest.approx(np.log(v), rel=1e-6)
  logits = jnp.zeros((2, 5, v)).at[0, 0, 80].set(2.0)  # helps the first target only
  ce0 = np.log(np.exp(2.0) + v - 1) - 2.0
  expected = (ce0 + 2 * np.log(v)) / 3  # targets 80, 81, EOS
  assert float(text_loss(logits, text, lengths)) == pytest.approx(expected, rel=1e-6)
  assert float(text_loss(jnp.ones((2, 5, v)), text, jnp.array([0, 0]))) == 0.0


@pytest.mark.parametrize("n_fft", [256, 512])
def test_stft_discriminator_grouped_bands_equal_band_by_band(n_fft):
  """Unequal band widths (odd ones too), random biases: the padded positions never leak in."""
  from cat_jax.train import spectral
  d = BandedSTFTDiscriminator(n_fft, (0.0, 0.1, 0.25, 0.5, 0.75, 1.0), 3, key=jax.random.key(0))
  for i, (path, v) in enumerate(nnx.iter_graph(d)):
    if isinstance(v, nnx.Param) and path[-1] == "bias":
      v[...] = jax.random.normal(jax.random.key(i), v[...].shape)
  assert len({hi - lo for lo, hi in d.bands}) > 2
  spec = spectral.stft(jax.random.normal(jax.random.key(1), (2, 3000)), n_fft, n_fft // 4)
  z = jnp.stack([spec.real, spec.imag], axis=-1)
  grouped = nnx.jit(lambda d, z: d._grouped(z))(d, z)
  one_by_one = nnx.jit(lambda d, z: d._band_by_band(z))(d, z)
  assert [f.shape for f in grouped] == [f.shape for f in one_by_one]
  for a, b in zip(grouped, one_by_one):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_stft_discriminator_form_follows_the_platform():
  """Lowered for CPU: one conv per band and layer; for TPU or GPU (an AOT compile on this host too):
  one grouped conv per layer."""
  d = BandedSTFTDiscriminator(256, (0.0, 0.1, 0.25, 0.5, 0.75, 1.0), 3, key=jax.random.key(0))
  x = jnp.zeros((2, 3000))
  text = {p: jax.jit(lambda x: d(x)[0]).trace(x).lower(lowering_platforms=(p,)).as_text() for p in ("cpu", "tpu", "cuda")}
  assert text["cpu"].count("stablehlo.convolution") == 26 and "feature_group_count = 5" not in text["cpu"]
  for p in ("tpu", "cuda"):
    assert text[p].count("stablehlo.convolution") == 6 and text[p].count("feature_group_count = 5") == 5, p
