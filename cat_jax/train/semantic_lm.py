"""Semantic-alignment LM (TRAINING.md, L_sem): a decoder-only causal Transformer that reads the
quantizer output through a linear adapter as a prefix and predicts the paired text.

Text contract (cat_jax/data/text.py): byte-level ids, PAD=0, BOS=1, EOS=2, TASK_ASR=3,
TASK_CAPTION=4, byte b -> b + 8, vocab 264; `text` (B, L) = [task, bytes..., EOS, PAD...],
`text_lengths` (B,) counts the non-PAD tokens (0 = no text: the example adds nothing).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from cat_jax.config import TransformerSpec
from cat_jax.model.layers import Dense, make_norm, param
from cat_jax.model.transformer import Transformer

PAD, BOS, EOS, TASK_ASR, TASK_CAPTION = 0, 1, 2, 3, 4
VOCAB_SIZE = 264


class SemanticLM(nnx.Module):
  """adapter (D_q -> d_model) prefix + token embedding -> causal Transformer -> norm -> vocab head."""

  def __init__(self, input_dim: int, *, key, d_model: int = 64, num_layers: int = 2, num_heads: int = 4,
               dim_feedforward: int = 256, vocab_size: int = VOCAB_SIZE, gating: str = "none",
               norm: str = "layer_norm", remat: bool = False, scan_layers: bool = True):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    self.spec = TransformerSpec(
        input_dimension=d_model, output_dimension=d_model, d_model=d_model, num_heads=num_heads,
        num_layers=num_layers, dim_feedforward=dim_feedforward, causal=True, norm=norm,
        positional_embedding="rope", gating=gating, context=None)
    self.adapter = Dense((input_dim,), (d_model,), ("io", "embed"), key=k1)
    self.embed = param(k2, jax.nn.initializers.normal(1.0), (vocab_size, d_model), ("vocab", "embed"))
    self.transformer = Transformer(self.spec, key=k3, remat=remat, scan_layers=scan_layers)
    self.norm = make_norm(norm, d_model)
    self.head = Dense((d_model,), (vocab_size,), ("embed", "vocab"), key=k4)

  def __call__(self, prefix: jax.Array, prefix_lengths: jax.Array, text: jax.Array, dtype=None) -> jax.Array:
    """prefix (B, F, D_q), prefix_lengths (B,), text (B, L) -> logits (B, L, vocab) float32; logits[:, j]
    predicts text[:, j + 1]. Padded prefix frames get position -1, so no query attends to them."""
    b, f, _ = prefix.shape
    l = text.shape[1]
    p = self.adapter(prefix.astype(jnp.float32), dtype).astype(jnp.float32)
    e = jnp.take(self.embed[...], text, axis=0)
    x = jnp.concatenate([p, e], axis=1)  # (B, F + L, d_model)
    fr = jnp.arange(f, dtype=jnp.int32)[None]
    pre_pos = jnp.where(fr < prefix_lengths[:, None], fr, -1)
    txt_pos = prefix_lengths[:, None].astype(jnp.int32) + jnp.arange(l, dtype=jnp.int32)[None]
    positions = jnp.concatenate([jnp.broadcast_to(pre_pos, (b, f)), txt_pos], axis=1)
    h, _ = self.transformer(x, positions, dtype=dtype)
    h = self.norm(h[:, f:])
    return self.head(h, dtype).astype(jnp.float32)


def text_loss(logits: jax.Array, text: jax.Array, text_lengths: jax.Array) -> jax.Array:
  """Mean next-token cross-entropy over targets text[:, 1:len]; exactly 0 when no example has text."""
  targets = text[:, 1:]
  pos = jnp.arange(1, text.shape[1])[None]
  mask = ((pos < text_lengths[:, None]) & (targets != PAD)).astype(jnp.float32)
  logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
  nll = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(nll * mask) / jnp.maximum(mask.sum(), 1.0)
