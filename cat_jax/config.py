"""CATConfig: the reference `config.json` schema, parsed and validated.

The config is plain data. `from_dict`/`to_dict` round-trip the reference layout
(unknown top-level fields are carried along untouched); module entries are parsed
into frozen specs with every derived quantity (attention window, channel count).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence, Union

from cat_jax.errors import ConfigError

NORMS = ("layer_norm", "rms_norm", "rms_norm_f32")
POSITIONAL = ("rope", "sin", "sin_rope", "none")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "silu", "mish", "softsign", "identity")
QUANTIZERS = {"rlfq": "rlfq", "random_prefix_rlfq": "rlfq", "rvq": "rvq", "spec_rvq": "rvq"}


@dataclasses.dataclass(frozen=True)
class PatchSpec:
  """A PatchedPretransform: (B, D, T) <-> (B, D*h, T/h)."""
  patch_size: int
  module_type: str = "PatchedPretransform"

  def to_dict(self) -> dict:
    return {"module_type": self.module_type, "patch_size": self.patch_size}


@dataclasses.dataclass(frozen=True)
class TransformerSpec:
  """A ProjectedTransformer stage; `context` (frames) is derived from the stage frame rate."""
  input_dimension: int
  output_dimension: int
  d_model: int
  num_heads: int
  num_layers: int
  dim_feedforward: int = 2048
  causal: bool = False
  norm: str = "layer_norm"
  positional_embedding: str = "sin"
  max_period: float = 10000
  positional_scale: float = 1.0
  gating: str = "none"
  layer_scale: float | None = None
  conv_layout: bool = False
  context: int | None = None  # derived, not serialised
  module_type: str = "Transformer"

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  @property
  def ffn_hidden(self) -> int:
    """Hidden width of the gated FFN (reference rule), or dim_feedforward when ungated."""
    if self.gating == "none":
      return self.dim_feedforward
    if self.dim_feedforward == 4 * self.d_model:
      return 21 * self.d_model // 8
    return 2 * self.dim_feedforward // 3

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d.pop("context")
    if d["positional_scale"] == 1.0:  # not a field of the released schema; keep files identical
      d.pop("positional_scale")
    return d


ModuleSpec = Union[PatchSpec, TransformerSpec]
_TRANSFORMER_FIELDS = {f.name for f in dataclasses.fields(TransformerSpec)} - {"context"}
_INT_FIELDS = ("input_dimension", "output_dimension", "d_model", "num_heads", "num_layers", "dim_feedforward")


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
  quantizer_type: str  # as written in the config (rlfq, random_prefix_rlfq, rvq, spec_rvq)
  input_dim: int
  rvq_dim: int
  output_dim: int
  num_quantizers: int
  codebook_size: int
  codebook_dim: int

  @property
  def kind(self) -> str:
    """'rlfq' (cosine lookup) or 'rvq' (squared-distance lookup)."""
    return QUANTIZERS[self.quantizer_type]

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def _parse_module(raw: Any, where: str) -> ModuleSpec:
  if not isinstance(raw, dict) or "module_type" not in raw:
    raise ConfigError(f"{where}: each module must be a dict with a 'module_type', got {raw!r}")
  kind = raw["module_type"]
  if kind == "PatchedPretransform":
    extra = set(raw) - {"module_type", "patch_size"}
    if extra:
      raise ConfigError(f"{where}: unknown PatchedPretransform option(s) {sorted(extra)}")
    h = raw.get("patch_size")
    if not isinstance(h, int) or isinstance(h, bool) or h < 1:
      raise ConfigError(f"{where}: patch_size must be a positive integer, got {h!r}")
    return PatchSpec(patch_size=h)
  if kind == "Transformer":
    extra = set(raw) - _TRANSFORMER_FIELDS
    if extra:
      raise ConfigError(f"{where}: unknown Transformer option(s) {sorted(extra)}")
    missing = {"input_dimension", "output_dimension", "d_model", "num_heads", "num_layers"} - set(raw)
    if missing:
      raise ConfigError(f"{where}: Transformer is missing {sorted(missing)}")
    for k in _INT_FIELDS:
      if k in raw and (not isinstance(raw[k], int) or isinstance(raw[k], bool) or raw[k] < 1):
        raise ConfigError(f"{where}: {k} must be a positive integer, got {raw[k]!r}")
    spec = TransformerSpec(**raw)
    if spec.norm not in NORMS:
      raise ConfigError(f"{where}: unknown norm {spec.norm!r}; expected one of {NORMS}")
    if spec.positional_embedding not in POSITIONAL:
      raise ConfigError(f"{where}: unknown positional_embedding {spec.positional_embedding!r}; expected one of {POSITIONAL}")
    if spec.gating != "none" and spec.gating not in ACTIVATIONS:
      raise ConfigError(f"{where}: unknown gating activation {spec.gating!r}; expected 'none' or one of {ACTIVATIONS}")
    if spec.d_model % spec.num_heads:
      raise ConfigError(f"{where}: d_model={spec.d_model} is not divisible by num_heads={spec.num_heads}")
    if spec.positional_embedding in ("rope", "sin_rope") and spec.head_dim % 2:
      raise ConfigError(f"{where}: RoPE needs an even head dim, got d_model/num_heads={spec.head_dim}")
    if spec.positional_embedding in ("sin", "sin_rope") and (spec.d_model % 2 or spec.d_model < 4):
      raise ConfigError(f"{where}: sinusoidal embedding needs an even d_model >= 4, got {spec.d_model}")
    return spec
  raise ConfigError(f"{where}: unknown module_type {kind!r}; expected 'PatchedPretransform' or 'Transformer'")


@dataclasses.dataclass(frozen=True)
class CATConfig:
  """The whole codec: encoder and decoder module lists, quantizer, rates."""
  sampling_rate: int
  downsample_rate: int
  causal_transformer_context_duration: float
  encoder: tuple[ModuleSpec, ...]
  decoder: tuple[ModuleSpec, ...]
  quantizer: QuantizerSpec
  extra: dict = dataclasses.field(default_factory=dict, compare=False)  # carried-along fields

  # ---- derived -------------------------------------------------------------
  @property
  def channels(self) -> int:
    """Audio channels, implied by the first encoder Transformer's input width."""
    return _implied_channels(self.encoder)

  @property
  def causal(self) -> bool:
    """True when every Transformer stage is causal (then padding never changes earlier frames)."""
    return all(m.causal for m in self.encoder + self.decoder if isinstance(m, TransformerSpec))

  @property
  def frame_rate(self) -> float:
    return self.sampling_rate / self.downsample_rate

  @property
  def num_quantizers(self) -> int:
    return self.quantizer.num_quantizers

  @property
  def codebook_size(self) -> int:
    return self.quantizer.codebook_size

  def bits_per_second(self, num_quantizers: int | None = None) -> float:
    n = self.num_quantizers if num_quantizers is None else num_quantizers
    return n * math.log2(self.codebook_size) * self.frame_rate

  # ---- (de)serialisation ---------------------------------------------------
  @classmethod
  def from_dict(cls, raw: dict) -> "CATConfig":
    if not isinstance(raw, dict):
      raise ConfigError(f"config must be a JSON object, got {type(raw).__name__}")
    raw = dict(raw)
    sr = raw.pop("sampling_rate", None)
    sr_alias = raw.pop("sample_rate", None)
    if sr is None:
      sr = sr_alias
    if sr is None:
      raise ConfigError("config needs 'sampling_rate' (or 'sample_rate')")
    if sr_alias is not None and sr_alias != sr:
      raise ConfigError(f"sampling_rate={sr} and sample_rate={sr_alias} disagree")
    try:
      dr = raw.pop("downsample_rate")
      dur = raw.pop("causal_transformer_context_duration")
      enc_raw = raw.pop("encoder_kwargs")
      dec_raw = raw.pop("decoder_kwargs")
      q_raw = dict(raw.pop("quantizer_kwargs"))
    except KeyError as e:
      raise ConfigError(f"config is missing required field {e.args[0]!r}") from None
    qtype = q_raw.pop("quantizer_type", None) or raw.pop("quantizer_type", None) or "rvq"
    raw.pop("quantizer_type", None)
    if qtype not in QUANTIZERS:
      raise ConfigError(f"unknown quantizer_type {qtype!r}; expected one of {sorted(QUANTIZERS)}")
    known_q = {"input_dim", "rvq_dim", "output_dim", "num_quantizers", "codebook_size", "codebook_dim"}
    if set(q_raw) - known_q:
      raise ConfigError(f"unknown quantizer option(s) {sorted(set(q_raw) - known_q)}")
    if "input_dim" not in q_raw:
      raise ConfigError("quantizer_kwargs needs 'input_dim'")
    qd = q_raw["input_dim"]
    quant = QuantizerSpec(
        quantizer_type=qtype, input_dim=qd, rvq_dim=q_raw.get("rvq_dim") or qd,
        output_dim=q_raw.get("output_dim") or qd, num_quantizers=q_raw.get("num_quantizers", 32),
        codebook_size=q_raw.get("codebook_size", 1024), codebook_dim=q_raw.get("codebook_dim", 8))
    for f in known_q:
      v = getattr(quant, f)
      if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ConfigError(f"quantizer {f} must be a positive integer, got {v!r}")
    if not isinstance(sr, int) or sr < 1:
      raise ConfigError(f"sampling_rate must be a positive integer, got {sr!r}")
    if not isinstance(dr, int) or dr < 1:
      raise ConfigError(f"downsample_rate must be a positive integer, got {dr!r}")
    if not isinstance(dur, (int, float)) or dur <= 0:
      raise ConfigError(f"causal_transformer_context_duration must be > 0, got {dur!r}")
    if not isinstance(enc_raw, list) or not isinstance(dec_raw, list) or not enc_raw or not dec_raw:
      raise ConfigError("encoder_kwargs and decoder_kwargs must be non-empty lists of modules")
    enc = [_parse_module(m, f"encoder_kwargs[{i}]") for i, m in enumerate(enc_raw)]
    dec = [_parse_module(m, f"decoder_kwargs[{i}]") for i, m in enumerate(dec_raw)]
    enc, dec = _with_contexts(enc, dec, sr, dur)
    for m in enc + dec:
      if isinstance(m, TransformerSpec) and m.context is not None and m.context < 1:
        raise ConfigError(f"causal_transformer_context_duration={dur} s gives an empty attention window "
                          f"for a Transformer stage; make it longer")
    cfg = cls(sampling_rate=sr, downsample_rate=dr, causal_transformer_context_duration=dur,
              encoder=tuple(enc), decoder=tuple(dec), quantizer=quant, extra=raw)
    cfg.validate()
    return cfg

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> "CATConfig":
    path = os.fspath(path)
    if os.path.isdir(path):
      path = os.path.join(path, "config.json")
    try:
      with open(path) as f:
        raw = json.load(f)
    except FileNotFoundError:
      raise ConfigError(f"config file not found: {path}") from None
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path} is not valid JSON: {e}") from None
    return cls.from_dict(raw)

  def to_dict(self) -> dict:
    out = dict(self.extra)
    out.update({
        "sampling_rate": self.sampling_rate,
        "sample_rate": self.sampling_rate,
        "downsample_rate": self.downsample_rate,
        "causal_transformer_context_duration": self.causal_transformer_context_duration,
        "encoder_kwargs": [m.to_dict() for m in self.encoder],
        "decoder_kwargs": [m.to_dict() for m in self.decoder],
        "quantizer_type": self.quantizer.quantizer_type,
        "quantizer_kwargs": self.quantizer.to_dict(),
    })
    out.setdefault("model_type", "speech_tokenizer")
    out.setdefault("architectures", ["MossAudioTokenizerModel"])
    return out

  def to_json(self, path: str | os.PathLike) -> None:
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)

  def replace(self, **changes) -> "CATConfig":
    return dataclasses.replace(self, **changes)

  # ---- validation ----------------------------------------------------------
  def validate(self) -> None:
    """Raises ConfigError when patch products or widths do not chain."""
    for name, mods in (("encoder", self.encoder), ("decoder", self.decoder)):
      prod = math.prod(m.patch_size for m in mods if isinstance(m, PatchSpec))
      if prod != self.downsample_rate:
        raise ConfigError(f"{name} patch sizes multiply to {prod}, but downsample_rate is {self.downsample_rate}")
    c = self.channels
    width = c
    for i, m in enumerate(self.encoder):
      if isinstance(m, PatchSpec):
        width *= m.patch_size
      else:
        if m.input_dimension != width:
          raise ConfigError(f"encoder_kwargs[{i}]: input_dimension={m.input_dimension} but the previous module gives {width}")
        width = m.output_dimension
    if width != self.quantizer.input_dim:
      raise ConfigError(f"encoder output width {width} != quantizer input_dim {self.quantizer.input_dim}")
    width = self.quantizer.output_dim
    for i, m in enumerate(self.decoder):
      if isinstance(m, PatchSpec):
        if width % m.patch_size:
          raise ConfigError(f"decoder_kwargs[{i}]: width {width} is not divisible by patch_size {m.patch_size}")
        width //= m.patch_size
      else:
        if m.input_dimension != width:
          raise ConfigError(f"decoder_kwargs[{i}]: input_dimension={m.input_dimension} but the previous module gives {width}")
        width = m.output_dimension
    if width != c:
      raise ConfigError(f"decoder ends with {width} channels, but the encoder takes {c}")


def _implied_channels(encoder) -> int:
  prod = 1
  for i, m in enumerate(encoder):
    if isinstance(m, PatchSpec):
      prod *= m.patch_size
    else:
      if m.input_dimension % prod:
        raise ConfigError(f"encoder_kwargs[{i}]: input_dimension={m.input_dimension} is not a multiple of "
                          f"the preceding patch product {prod}")
      return m.input_dimension // prod
  raise ConfigError("the encoder has no Transformer module")


def _with_contexts(enc, dec, sr, dur):
  """Fills each Transformer's window in frames, with the reference's float arithmetic."""
  rate = float(sr)
  out_enc = []
  for m in enc:
    if isinstance(m, TransformerSpec):
      m = dataclasses.replace(m, context=int(rate * dur) if m.causal else None)
      out_enc.append(m)
    else:
      out_enc.append(m)
      rate /= m.patch_size
  out_dec = []  # the decoder continues from the encoder's final frame rate
  for m in dec:
    if isinstance(m, TransformerSpec):
      m = dataclasses.replace(m, context=int(rate * dur) if m.causal else None)
      out_dec.append(m)
    else:
      out_dec.append(m)
      rate *= m.patch_size
  return out_enc, out_dec


# (d_model, num_layers, num_heads, dim_feedforward, output_dimension) of one Transformer stage.
Stage = tuple[int, int, int, int, int]


def codec_architecture(*, encoder: Sequence[Stage], decoder: Sequence[Stage], patch_sizes: Sequence[int],
                       quantizer: dict, channels: int = 1, sampling_rate: int = 24000,
                       context_seconds: float = 10.0, **transformer_options) -> dict:
  """The reference config.json dict of a CAT in the released layout (CAT_SPEC.md).

  Encoder: patch_sizes[i] then encoder[i]; decoder: decoder[i] then unpatch reversed(patch_sizes)[i].
  Input widths are chained; `transformer_options` (norm, positional_embedding, gating, layer_scale)
  override the released model's choices in every stage.
  """
  def tf(d_in: int, stage: Stage) -> dict:
    d, layers, heads, ff, out = stage
    return {"module_type": "Transformer", "causal": True, "conv_layout": True, "d_model": d,
            "dim_feedforward": ff, "gating": "none", "input_dimension": d_in, "output_dimension": out,
            "layer_scale": 0.01, "max_period": 10000, "norm": "layer_norm", "num_heads": heads,
            "num_layers": layers, "positional_embedding": "rope", **transformer_options}

  enc, width = [], channels
  for h, st in zip(patch_sizes, encoder):
    enc.append({"module_type": "PatchedPretransform", "patch_size": h})
    enc.append(tf(width * h, st))
    width = st[-1]
  dec, width = [], quantizer["output_dim"]
  for h, st in zip(reversed(patch_sizes), decoder):
    dec.append(tf(width, st))
    dec.append({"module_type": "PatchedPretransform", "patch_size": h})
    width = st[-1] // h
  return {"architectures": ["MossAudioTokenizerModel"], "model_type": "speech_tokenizer",
          "sampling_rate": sampling_rate, "sample_rate": sampling_rate, "downsample_rate": math.prod(patch_sizes),
          "causal_transformer_context_duration": context_seconds, "code_dim": quantizer["input_dim"],
          "encoder_kwargs": enc, "decoder_kwargs": dec, "quantizer_type": quantizer["quantizer_type"],
          "quantizer_kwargs": dict(quantizer), "dtype": "float32"}


def symmetric_config(*, sample_rate: int = 24000, channels: int = 1, patch_sizes=(240, 2, 2, 2),
                     d_models=(32, 48, 32, 64), num_layers=(2, 1, 1, 2), num_heads=(2, 2, 2, 4),
                     latent_dim: int = 48, rvq_dim: int = 32, num_quantizers: int = 8,
                     codebook_size: int = 64, codebook_dim: int = 8, context_seconds: float = 0.32,
                     ffn_mult: int = 2, quantizer_type: str = "rlfq", **transformer_options) -> CATConfig:
  """A CAT of any size from per-stage widths: intermediate encoder stages output d/2 channels like
  the released model, the decoder mirrors the encoder (`codec_architecture` for the options)."""
  n = len(patch_sizes)
  if not (len(d_models) == len(num_layers) == len(num_heads) == n):
    raise ConfigError("patch_sizes, d_models, num_layers and num_heads need one entry per stage")
  stage = [(d_models[i], num_layers[i], num_heads[i], ffn_mult * d_models[i]) for i in range(n)]
  encoder = [(*stage[i], latent_dim if i == n - 1 else d_models[i] // 2) for i in range(n)]
  decoder = [(*stage[i], channels * patch_sizes[i] if i == 0 else d_models[i]) for i in reversed(range(n))]
  quantizer = {"input_dim": latent_dim, "rvq_dim": rvq_dim, "output_dim": latent_dim,
               "num_quantizers": num_quantizers, "codebook_size": codebook_size, "codebook_dim": codebook_dim,
               "quantizer_type": quantizer_type}
  return CATConfig.from_dict(codec_architecture(
      encoder=encoder, decoder=decoder, patch_sizes=patch_sizes, quantizer=quantizer, channels=channels,
      sampling_rate=sample_rate, context_seconds=context_seconds, **transformer_options))

