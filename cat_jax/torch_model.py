"""CATTorch: a compact PyTorch module that runs cat_jax exports (and reference checkpoints) offline.

Optional extra (`pip install cat-jax[torch]`); torch is imported by this module only. Parameter
names equal the reference state dict (CAT_SPEC.md section 6), so `load_state_dict(strict=True)`
takes a `CAT.save_pretrained` export as is. Inside, features are channel-last: (B, T, C).
"""
from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cat_jax import convert
from cat_jax.config import CATConfig, PatchSpec, QuantizerSpec, TransformerSpec
from cat_jax.errors import AudioError, CheckpointError, CodesError
from cat_jax.validation import check_num_quantizers

ACTIVATIONS = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu, "leaky_relu": F.leaky_relu,
    "elu": F.elu, "gelu": F.gelu, "silu": F.silu, "mish": F.mish, "softsign": F.softsign,
    "identity": lambda x: x,
}


@dataclasses.dataclass
class EncoderOutput:
  audio_codes: torch.Tensor  # (n_q, B, frames) int64
  audio_codes_lengths: torch.Tensor  # (B,)
  encoder_hidden_states: torch.Tensor  # (B, D, frames)


@dataclasses.dataclass
class DecoderOutput:
  audio: torch.Tensor  # (B, C, samples)
  audio_lengths: torch.Tensor  # (B,)


# ---- positional encodings --------------------------------------------------------

def rope(x: torch.Tensor, max_period: float) -> torch.Tensor:
  """Rotary embedding on adjacent channel pairs (2i, 2i+1), in float32. x: (B, T, H, Dh), positions 0..T-1."""
  t, dh = x.shape[1], x.shape[-1]
  freqs = torch.exp(torch.arange(dh // 2, dtype=torch.float32) * (-math.log(max_period) * 2 / dh))
  angle = torch.arange(t, dtype=torch.float32)[:, None, None] * freqs  # (T, 1, Dh/2)
  cos, sin = torch.cos(angle), torch.sin(angle)
  a, b = x.float().unflatten(-1, (dh // 2, 2)).unbind(-1)
  return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2).to(x.dtype)


def sin_embedding(t: int, dim: int, max_period: float) -> torch.Tensor:
  """Additive [cos | sin] embedding of positions 0..t-1: (t, dim)."""
  half = dim // 2
  phase = torch.arange(t, dtype=torch.float32)[:, None] / (
      torch.tensor(float(max_period)) ** (torch.arange(half, dtype=torch.float32) / (half - 1)))
  return torch.cat([torch.cos(phase), torch.sin(phase)], -1)


# ---- Transformer -------------------------------------------------------------------

class RMSNorm(nn.Module):
  """x * alpha / sqrt(mean(x^2) + eps), computed in float32; alpha stored (1, 1, C) like the reference."""

  def __init__(self, dim: int, eps: float):
    super().__init__()
    self.eps = eps
    self.alpha = nn.Parameter(torch.ones(1, 1, dim))

  def forward(self, x):
    xf = x.float()
    return (xf * (self.alpha * torch.rsqrt(self.eps + xf.pow(2).mean(-1, keepdim=True)))).to(x.dtype)


class LayerScale(nn.Module):
  def __init__(self, dim: int, init: float):
    super().__init__()
    self.scale = nn.Parameter(torch.full((dim,), float(init)))

  def forward(self, x):
    return x * self.scale


def make_norm(kind: str, dim: int) -> nn.Module:
  if kind == "layer_norm":
    return nn.LayerNorm(dim, eps=1e-5)
  return RMSNorm(dim, 1e-5 if kind == "rms_norm" else 1e-8)


class Attention(nn.Module):
  """Fused q/k/v projection (v1 `in_projs.0`, v2 `in_proj`; read as (3, H, Dh)), RoPE,
  sliding-window causal softmax; v2 also masks by length (keys at or past it out, rows there zero)."""

  def __init__(self, s: TransformerSpec):
    super().__init__()
    self.spec = s
    if s.v2:
      self.in_proj = nn.Linear(s.d_model, 3 * s.d_model, bias=False)
      self.out_proj = nn.Linear(s.d_model, s.d_model, bias=False)
    else:
      self.in_projs = nn.ModuleList([nn.Linear(s.d_model, 3 * s.d_model, bias=False)])
      self.out_projs = nn.ModuleList([nn.Linear(s.d_model, s.d_model, bias=False)])

  def forward(self, x, lengths=None):  # (B, T, C)
    s = self.spec
    b, t, c = x.shape
    w_in, w_out = (self.in_proj, self.out_proj) if s.v2 else (self.in_projs[0], self.out_projs[0])
    q, k, v = w_in(x).view(b, t, 3, s.num_heads, s.head_dim).unbind(2)  # (B, T, H, Dh) each
    if s.positional_embedding in ("rope", "sin_rope"):
      q, k = rope(q, s.max_period), rope(k, s.max_period)
    mask = None
    if s.causal:  # query p sees key k iff 0 <= p - k < context
      delta = torch.arange(t)[:, None] - torch.arange(t)[None, :]
      mask = (delta >= 0) & (delta < s.context) if s.context is not None else delta >= 0
    valid = None
    if s.v2 and lengths is not None:
      valid = torch.arange(t, device=x.device)[None] < lengths[:, None]  # (B, T)
      mask = (torch.ones(t, t, dtype=torch.bool) if mask is None else mask)[None] & valid[:, None, :]
      mask = mask[:, None]  # (B, 1, T, T)
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    y = y.transpose(1, 2).reshape(b, t, c)
    if valid is not None:  # rows past the length (possibly without any key: NaN) give exactly 0
      y = torch.where(valid[..., None], y, torch.zeros((), dtype=y.dtype))
    return w_out(y)


class Gating(nn.Module):
  """linear_in C -> 2h split as [gate | value], act(gate) * value, linear_out h -> C."""

  def __init__(self, s: TransformerSpec):
    super().__init__()
    self.act = ACTIVATIONS[s.gating]
    self.linear_in = nn.Linear(s.d_model, 2 * s.ffn_hidden, bias=False)
    self.linear_out = nn.Linear(s.ffn_hidden, s.d_model, bias=False)

  def forward(self, x):
    gate, value = self.linear_in(x).unflatten(-1, (2, -1)).unbind(-2)
    return self.linear_out(self.act(gate) * value)


class TransformerLayer(nn.Module):
  """Pre-norm: x += ls1 * attn(norm1(x)); x += ls2 * ffn(norm2(x))."""

  def __init__(self, s: TransformerSpec):
    super().__init__()
    self.self_attn = Attention(s)
    self.norm1, self.norm2 = make_norm(s.norm, s.d_model), make_norm(s.norm, s.d_model)
    if s.v2:  # v2 names: ffn.0 / ffn.2 (Linear, GELU, Linear), or ffn.linear_in / ffn.linear_out
      self.ffn = (nn.Sequential(nn.Linear(s.d_model, s.dim_feedforward, bias=False), nn.GELU(),
                                nn.Linear(s.dim_feedforward, s.d_model, bias=False))
                  if s.gating == "none" else Gating(s))
    elif s.gating == "none":
      self.linear1 = nn.Linear(s.d_model, s.dim_feedforward, bias=False)
      self.linear2 = nn.Linear(s.dim_feedforward, s.d_model, bias=False)
    else:
      self.gating = Gating(s)
    if s.layer_scale is not None:
      self.layer_scale_1, self.layer_scale_2 = LayerScale(s.d_model, s.layer_scale), LayerScale(s.d_model, s.layer_scale)
    else:
      self.layer_scale_1 = self.layer_scale_2 = nn.Identity()

  def feed_forward(self, x):
    if hasattr(self, "ffn"):
      return self.ffn(x)
    if hasattr(self, "gating"):
      return self.gating(x)
    return self.linear2(F.gelu(self.linear1(x)))

  def forward(self, x, lengths=None):
    x = x + self.layer_scale_1(self.self_attn(self.norm1(x), lengths))
    return x + self.layer_scale_2(self.feed_forward(self.norm2(x)))


class Transformer(nn.Module):
  def __init__(self, s: TransformerSpec):
    super().__init__()
    self.spec = s
    self.layers = nn.ModuleList([TransformerLayer(s) for _ in range(s.num_layers)])

  def forward(self, x, lengths=None):  # (B, T, C)
    s = self.spec
    if s.positional_embedding in ("sin", "sin_rope"):
      x = x + s.positional_scale * sin_embedding(x.shape[1], x.shape[-1], s.max_period).to(x.dtype)
    for layer in self.layers:
      x = layer(x, lengths)
    return x


class ProjectedTransformer(nn.Module):
  """input_proj -> Transformer -> output_proj (v1: only where widths differ; v2: always). Lengths unchanged."""

  def __init__(self, s: TransformerSpec):
    super().__init__()
    if s.has_input_proj:
      self.input_proj = nn.Linear(s.input_dimension, s.d_model, bias=False)
    self.transformer = Transformer(s)
    if s.has_output_proj:
      self.output_proj = nn.Linear(s.d_model, s.output_dimension, bias=False)

  def forward(self, x, lengths):
    if hasattr(self, "input_proj"):
      x = self.input_proj(x)
    x = self.transformer(x, lengths)
    if hasattr(self, "output_proj"):
      x = self.output_proj(x)
    return x, lengths


class Patch(nn.Module):
  """(B, T, D) <-> (B, T/h, D*h); output channel d*h + j holds channel d at offset j. No weights."""

  def __init__(self, h: int, downsample: bool):
    super().__init__()
    self.h, self.downsample = h, downsample

  def forward(self, x, lengths):
    b, t, d = x.shape
    h = self.h
    if self.downsample:
      return x.reshape(b, t // h, h, d).transpose(2, 3).reshape(b, t // h, d * h), lengths // h
    return x.reshape(b, t, d // h, h).transpose(2, 3).reshape(b, t * h, d // h), lengths * h


def _modules(specs, downsample: bool) -> nn.ModuleList:
  return nn.ModuleList([Patch(m.patch_size, downsample) if isinstance(m, PatchSpec) else ProjectedTransformer(m)
                        for m in specs])


# ---- quantizer (channel-first, 1x1 weight-normalised convs as in the reference) -------

def _wn_conv(d_in: int, d_out: int) -> nn.Module:
  return weight_norm(nn.Conv1d(d_in, d_out, 1))


class CodebookQuantizer(nn.Module):
  """in_proj (rvq_dim -> codebook_dim), nearest codebook row, out_proj back; projections omitted when equal."""

  def __init__(self, q: QuantizerSpec):
    super().__init__()
    self.cosine = q.kind == "rlfq"
    if q.rvq_dim != q.codebook_dim:
      self.in_proj = _wn_conv(q.rvq_dim, q.codebook_dim)
      self.out_proj = _wn_conv(q.codebook_dim, q.rvq_dim)
    self.codebook = nn.Embedding(q.codebook_size, q.codebook_dim)

  def encode(self, x):  # (B, rvq_dim, T) -> codes (B, T)
    e = (self.in_proj(x) if hasattr(self, "in_proj") else x).transpose(1, 2).float()
    cb = self.codebook.weight.float()
    if self.cosine:  # rlfq: highest cosine similarity
      e, cb = F.normalize(e, dim=-1), F.normalize(cb, dim=-1)
    dist = e.pow(2).sum(-1, keepdim=True) - 2 * e @ cb.T + cb.pow(2).sum(-1)
    return dist.argmin(-1)  # ties: first (lowest) index

  def decode(self, codes):  # (B, T) -> (B, rvq_dim, T): the raw codebook row through out_proj
    z = self.codebook(codes).transpose(1, 2)
    return self.out_proj(z) if hasattr(self, "out_proj") else z


class ResidualQuantizer(nn.Module):
  """input_proj -> residual loop over the first n_q quantizers (padding frames masked) -> output_proj."""

  def __init__(self, q: QuantizerSpec):
    super().__init__()
    if q.input_dim != q.rvq_dim:
      self.input_proj = _wn_conv(q.input_dim, q.rvq_dim)
    if q.rvq_dim != q.output_dim:
      self.output_proj = _wn_conv(q.rvq_dim, q.output_dim)
    self.quantizers = nn.ModuleList([CodebookQuantizer(q) for _ in range(q.num_quantizers)])

  def encode(self, z, lengths, n_q: int):  # z (B, input_dim, T) -> codes (n_q, B, T)
    residual = self.input_proj(z) if hasattr(self, "input_proj") else z
    mask = (torch.arange(z.shape[-1])[None] < lengths[:, None]).to(residual.dtype)[:, None]  # (B, 1, T)
    codes = []
    for quantizer in self.quantizers[:n_q]:
      c = quantizer.encode(residual * mask)
      residual = residual - quantizer.decode(c) * mask
      codes.append(c)
    return torch.stack(codes)

  def decode(self, codes):  # (n_q, B, T) -> (B, output_dim, T)
    z = sum(quantizer.decode(c) for quantizer, c in zip(self.quantizers, codes))
    return self.output_proj(z) if hasattr(self, "output_proj") else z


# ---- the codec -----------------------------------------------------------------------

class CATTorch(nn.Module):
  """Encoder modules -> residual quantizer -> decoder modules, named like the reference state dict."""

  def __init__(self, config: CATConfig):
    super().__init__()
    self.config = config
    self.encoder = _modules(config.encoder, True)
    self.quantizer = ResidualQuantizer(config.quantizer)
    self.decoder = _modules(config.decoder, False)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "CATTorch":
    """config.json + model.safetensors (or a sharded index); old fused-projection names are renamed."""
    path = os.fspath(path)
    if not os.path.isdir(path):
      raise CheckpointError(f"model directory not found: {path}")
    model = cls(CATConfig.from_json(path))
    tensors = convert.rename_legacy(convert.read_safetensors_dir(path), model.config.v2)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
    try:
      model.load_state_dict(state, strict=True)
    except RuntimeError as e:
      raise CheckpointError(f"weights in {path} do not match its config.json: {e}") from None
    return model.to(device).eval()

  @property
  def _device(self):
    return self.quantizer.quantizers[0].codebook.weight.device

  def _tensor(self, x) -> torch.Tensor:
    """A tensor on the model's device; numpy input is copied (it may be read-only)."""
    if not torch.is_tensor(x):
      x = torch.from_numpy(np.array(x))
    return x.to(self._device)

  def _nq(self, n) -> int:
    return check_num_quantizers(n, self.config.num_quantizers)

  def _lengths(self, mask, b: int, t: int) -> torch.Tensor:
    if mask is None:
      return torch.full((b,), t, dtype=torch.long, device=self._device)
    m = self._tensor(mask)
    if tuple(m.shape) != (b, t):
      raise AudioError(f"padding_mask must have shape {(b, t)}, got {tuple(m.shape)}")
    return m.bool().sum(-1).long()

  @torch.inference_mode()
  def encode(self, input_values, padding_mask=None, num_quantizers: int | None = None) -> EncoderOutput:
    """audio (B, C, T) or (B, T) -> codes (n_q, B, frames), lengths (B,), hidden (B, D, frames)."""
    x = self._tensor(input_values).float()
    cfg = self.config
    if cfg.v2 and x.dim() == 1:  # v2 API: (T,) for a mono model, (C, T) for one item
      x = x[None, None]
    if cfg.v2 and x.dim() == 2 and cfg.channels > 1:
      x = x[None]
    if x.dim() == 2:
      x = x[:, None]
    if x.dim() != 3 or x.shape[0] == 0 or x.shape[-1] == 0:
      raise AudioError(f"audio must be a non-empty (B, C, T) or (B, T) array, got shape {tuple(x.shape)}")
    b, c, t = x.shape
    if c != self.config.channels:
      raise AudioError(f"audio has {c} channel(s) but the model takes {self.config.channels}")
    lengths = self._lengths(padding_mask, b, t)
    n_q = self._nq(num_quantizers)
    dr = cfg.downsample_rate
    if cfg.v2:  # items cut to their lengths, zero-padded to the longest (CAT_SPEC_V2.md section 3)
      t = max(int(lengths.max()), 1)
      x = torch.where(torch.arange(t, device=x.device)[None, None] < lengths[:, None, None], x[..., :t], 0.0)
    h = F.pad(x, (0, -t % dr)).transpose(1, 2)  # (B, T', C)
    if cfg.interleaved:  # L0 R0 L1 R1 ...: one stream
      h, lengths = h.reshape(b, -1, 1), lengths * c
    for m in self.encoder:
      h, lengths = m(h, lengths)
    hidden = h.transpose(1, 2)  # (B, D, frames)
    codes = self.quantizer.encode(hidden, lengths, n_q)
    if cfg.v2:  # trimmed to the largest valid frame count
      f = int(lengths.max())
      codes, hidden = codes[..., :f], hidden[..., :f]
    return EncoderOutput(codes, lengths, hidden)

  @torch.inference_mode()
  def decode(self, audio_codes, padding_mask=None, num_quantizers: int | None = None) -> DecoderOutput:
    """codes (n_q, B, frames) or (n_q, frames) -> audio (B, C, frames * downsample_rate), lengths (B,)."""
    codes = self._tensor(audio_codes)
    if codes.dim() == 2:
      codes = codes[:, None]
    if codes.dim() != 3 or 0 in codes.shape or codes.dtype.is_floating_point or codes.dtype == torch.bool:
      raise CodesError(f"codes must be non-empty integers shaped (n_q, B, frames), got {tuple(codes.shape)} {codes.dtype}")
    if codes.shape[0] > self.config.num_quantizers:
      raise CodesError(f"codes have {codes.shape[0]} quantizers; the model has {self.config.num_quantizers}")
    if num_quantizers is not None:
      n = self._nq(num_quantizers)
      if n > codes.shape[0]:
        raise CodesError(f"num_quantizers={n} but the codes hold only {codes.shape[0]} quantizers")
      codes = codes[:n]
    k = self.config.codebook_size
    if codes.min() < 0 or codes.max() >= k:
      raise CodesError(f"codes must lie in [0, {k}), found values in [{int(codes.min())}, {int(codes.max())}]")
    _, b, f = codes.shape
    lengths = self._lengths(padding_mask, b, f)
    cfg = self.config
    if cfg.v2:  # each item's codes cut to its length, re-padded with code 0 to the longest
      f = max(int(lengths.max()), 1)
      codes = torch.where(torch.arange(f, device=codes.device)[None, None] < lengths[None, :, None], codes[..., :f], 0)
    y = self.quantizer.decode(codes.long()).transpose(1, 2)  # (B, frames, D)
    for m in self.decoder:
      y, lengths = m(y, lengths)
    if cfg.interleaved:  # the stream back to (B, T, C)
      y, lengths = y.reshape(b, -1, cfg.channels), lengths // cfg.channels
    return DecoderOutput(y.transpose(1, 2), lengths)

  def forward(self, input_values, padding_mask=None, num_quantizers: int | None = None) -> DecoderOutput:
    """Reconstruction: decode(encode(audio)), trimmed to the input length."""
    enc = self.encode(input_values, padding_mask, num_quantizers)
    mask = torch.arange(enc.audio_codes.shape[-1], device=self._device)[None] < enc.audio_codes_lengths[:, None]
    dec = self.decode(enc.audio_codes, mask)
    t = np.shape(input_values)[-1]
    return DecoderOutput(dec.audio[..., :t], dec.audio_lengths)
