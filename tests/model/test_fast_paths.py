"""The CPU inference fast paths give the same numbers as the plain ones: block-causal attention
against one dense masked softmax, unrolled per-layer views against the scanned stack."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cat_jax import codec
from cat_jax.config import TransformerSpec
from cat_jax.model import transformer
from cat_jax.model.transformer import Attention


def _dense_reference(attn: Attention, x, positions):
  """Single-block attention (the formula before blocking)."""
  qkv = attn.in_proj(x)
  q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
  tables = transformer.rope_tables(positions, attn.head_dim, attn.max_period)
  q, k = transformer.rope(q, tables), transformer.rope(k, tables)
  mask = transformer.attention_mask(positions, positions, attn.context, attn.causal)[:, None]
  logits = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(attn.head_dim)
  probs = jax.nn.softmax(jnp.where(mask, logits, -jnp.inf), axis=-1)
  return attn.out_proj(jnp.einsum("bhts,bshd->bthd", probs, v))


@pytest.mark.parametrize("context", [None, 100, 300])
def test_block_causal_attention_equals_dense(context):
  t = 2 * transformer.ATTENTION_BLOCK + 45  # three blocks, a ragged last one
  spec = TransformerSpec(32, 32, 32, 4, 1, 64, causal=True, positional_embedding="rope", context=context)
  attn = Attention(spec, key=jax.random.key(0))
  assert len(attn._blocks(t)) == 3
  if context == 100:  # the last block starts past the window: its first keys are skipped
    assert attn._blocks(t)[-1][2] == 2 * transformer.ATTENTION_BLOCK - context + 1
  x = jax.random.normal(jax.random.key(1), (2, t, 32))
  positions = jnp.broadcast_to(jnp.arange(t)[None], (2, t))
  got, _ = attn(x, positions)
  np.testing.assert_allclose(got, _dense_reference(attn, x, positions), atol=2e-5, rtol=0)


def test_unrolled_views_alias_the_stack_and_match_the_scan(golden_dir):
  model = codec.CAT.from_pretrained(golden_dir)
  assert codec.on_one_cpu(model.params)
  graphdef, params = codec.unrolled(model.graphdef, model.params)
  assert model.coding_params is not model.params  # what CAT codes with here: the unrolled pair
  i = next(i for i, m in model.params["encoder"].items() if "transformer" in m)
  stacked = model.params["encoder"][i]["transformer"]["layers"]["linear1"]["kernel"][...]
  unstacked = params["encoder"][i]["transformer"]["layers"]
  views = [unstacked[j]["linear1"]["kernel"][...] for j in range(len(unstacked))]
  assert len(views) == stacked.shape[0]
  for j, v in enumerate(views):  # zero-copy: each view points into the stacked buffer
    np.testing.assert_array_equal(v, stacked[j])
    assert v.unsafe_buffer_pointer() == stacked.unsafe_buffer_pointer() + j * v.size * v.dtype.itemsize

  audio = np.random.default_rng(0).normal(size=(2, 1, 5 * model.config.downsample_rate)).astype(np.float32) * 0.1
  x, lengths = jnp.asarray(audio.transpose(0, 2, 1)), jnp.array([audio.shape[-1]] * 2)
  enc_scan = codec.encode_fn(model.graphdef, model.params, x, lengths)
  enc_unrolled = codec.encode_fn(graphdef, params, x, lengths)
  np.testing.assert_array_equal(enc_scan[0], enc_unrolled[0])
  np.testing.assert_allclose(enc_scan[2], enc_unrolled[2], atol=1e-5, rtol=0)
  dec_scan = codec.decode_fn(model.graphdef, model.params, enc_scan[0], enc_scan[1])
  dec_unrolled = codec.decode_fn(graphdef, params, enc_scan[0], enc_scan[1])
  np.testing.assert_allclose(dec_scan[0], dec_unrolled[0], atol=1e-5, rtol=0)

  model.params = jax.tree.map(lambda a: a + 0, model.params)  # new params drop the stale views
  assert model._coding is None


def test_rope_tables_are_computed_once_per_stage():
  """XLA:CPU drops optimization barriers; the tables must still be evaluated once, not inside
  every layer's rotation of q and k (what made the released config's rope 5x slower)."""
  spec = TransformerSpec(32, 32, 32, 4, 3, 64, causal=True, positional_embedding="rope")
  stack = transformer.Transformer(spec, key=jax.random.key(0))
  stack.unroll()
  x = jax.random.normal(jax.random.key(1), (1, 40, 32))
  positions = jnp.arange(40)[None]
  hlo = jax.jit(lambda x, p: stack(x, p)[0]).lower(x, positions).compile().as_text()
  assert (hlo.count(" cosine("), hlo.count(" sine(")) == (1, 1)
  cos, sin = transformer.rope_tables(positions, spec.head_dim, spec.max_period)
  angle = np.arange(40, dtype=np.float32)[None, :, None, None] * np.exp(
      np.arange(spec.head_dim // 2, dtype=np.float32) * np.float32(-np.log(spec.max_period) * 2 / spec.head_dim))
  np.testing.assert_allclose(cos, np.cos(angle), atol=1e-6, rtol=0)
  np.testing.assert_allclose(sin, np.sin(angle), atol=1e-6, rtol=0)
