"""Dead-code restarts: usage bookkeeping, which rows are replaced and by what."""
import jax
import jax.numpy as jnp
import numpy as np

from cat_jax.train import codebook_restart as cr
from cat_jax.train import metrics


def _codec(cb):
  return {"quantizer": {"quantizers": {"codebook": cb, "other": jnp.ones((2,))}}, "decoder": {"w": jnp.zeros((3,))}}


def test_usage_is_share_of_coded_frames():
  codes = jnp.array([[[0, 0, 1, 3]], [[2, 2, 2, 2]]])  # (n_q=2, B=1, T=4)
  w = metrics.code_weights(jnp.array([3]), 2, 4, jnp.array([1]))  # last frame padding; only quantizer 0 used
  u = cr.update_usage(jnp.ones((2, 4)), metrics.code_counts(codes, w, 4), decay=0.5)
  # quantizer 0: shares (2/3, 1/3, 0, 0) * K=4 -> (8/3, 4/3, 0, 0); averaged with 1.0
  np.testing.assert_allclose(u[0], [0.5 + 0.5 * 8 / 3, 0.5 + 0.5 * 4 / 3, 0.5, 0.5], rtol=1e-6)
  np.testing.assert_allclose(u[1], [1, 1, 1, 1])  # coded no frame: unchanged


def test_dead_rows_take_latents_of_coded_frames_only():
  n_q, b, t, d, k = 2, 2, 3, 4, 5
  lat = jnp.arange(n_q * b * t * d, dtype=jnp.float32).reshape(n_q, b, t, d)
  weights = jnp.zeros((n_q, b, t)).at[0, 1, 2].set(1.0).at[1, 0, 0].set(1.0)  # one coded frame each
  usage = jnp.array([[1.0, 0.01, 1.0, 0.0, 2.0], [0.0] * 5])
  cb = jnp.full((n_q, k, d), -7.0)
  codec, new_usage, n = cr.restart_dead_codes(_codec(cb), usage, lat, weights, jax.random.key(0), 0.05)
  out = codec["quantizer"]["quantizers"]["codebook"]
  assert int(n) == 2 + 5
  np.testing.assert_array_equal(out[0, [0, 2, 4]], -7.0)  # live rows untouched
  for row in (1, 3):
    np.testing.assert_array_equal(out[0, row], lat[0, 1, 2])  # the only frame quantizer 0 coded
  np.testing.assert_array_equal(out[1], jnp.broadcast_to(lat[1, 0, 0], (k, d)))
  np.testing.assert_array_equal(new_usage[0], [1.0, 1.0, 1.0, 1.0, 2.0])
  assert codec["decoder"]["w"] is not None and float(codec["quantizer"]["quantizers"]["other"].sum()) == 2.0


def test_restart_spreads_over_frames_and_skips_idle_quantizers():
  n_q, b, t, d, k = 2, 4, 16, 3, 256
  lat = jax.random.normal(jax.random.key(1), (n_q, b, t, d))
  weights = jnp.zeros((n_q, b, t)).at[0].set(1.0)  # quantizer 1 coded nothing (dropped for every example)
  cb = jnp.zeros((n_q, k, d))
  codec, usage, _ = cr.restart_dead_codes(_codec(cb), jnp.zeros((n_q, k)), lat, weights, jax.random.key(2), 0.05)
  out = np.asarray(codec["quantizer"]["quantizers"]["codebook"])
  frames = {tuple(np.round(r, 5)) for r in np.asarray(lat[0]).reshape(-1, d)}
  picked = {tuple(np.round(r, 5)) for r in out[0]}
  assert picked <= frames and len(picked) > 40  # random frames, not one frame for every row
  np.testing.assert_array_equal(out[1], 0.0)  # nothing to sample from: left as it was
  np.testing.assert_array_equal(np.asarray(usage[1]), 0.0)
