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
# v2 family (CAT_SPEC_V2.md section 1): fields that only its schema has; any of them, a module
# `context_duration` or model_type 'moss-audio-tokenizer' makes a file v2.
V2_FIELDS = ("number_channels", "channels_numbers", "enable_channel_interleave", "attention_implementation",
             "attention_backend", "compute_dtype", "codec_compute_dtype", "codec_weight_dtype")
V2_MODEL_TYPE = "moss-audio-tokenizer"
ATTENTION_IMPLEMENTATIONS = ("sdpa", "flash_attention_2", "eager")
DTYPES = ("fp32", "bf16")


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
  context_duration: float | None = None  # v2: this stage's window in seconds (None: the global one)
  context: int | None = None  # derived, not serialised
  v2: bool = False  # derived, not serialised: v2 family (square projections kept, length masking)
  module_type: str = "Transformer"

  @property
  def has_input_proj(self) -> bool:
    """v1 drops the projection when the widths are equal; v2 keeps a learned square one."""
    return self.v2 or self.input_dimension != self.d_model

  @property
  def has_output_proj(self) -> bool:
    return self.v2 or self.output_dimension != self.d_model

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
    d.pop("v2")
    if d["context_duration"] is None:  # absent in the file: the global duration applies
      d.pop("context_duration")
    if d["positional_scale"] == 1.0:  # not a field of the released schema; keep files identical
      d.pop("positional_scale")
    return d


ModuleSpec = Union[PatchSpec, TransformerSpec]
_TRANSFORMER_FIELDS = {f.name for f in dataclasses.fields(TransformerSpec)} - {"context", "v2"}
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
    cd = raw.get("context_duration")
    if cd is not None and (isinstance(cd, bool) or not isinstance(cd, (int, float)) or not cd > 0):
      raise ConfigError(f"{where}: context_duration must be a number of seconds > 0, got {cd!r}")
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
  family: str = "v1"  # "v2": MOSS-Audio-Tokenizer v2 / Nano (CAT_SPEC_V2.md)
  number_channels: int | None = None  # v2: channels of the public waveform
  enable_channel_interleave: bool = False  # v2: channels interleaved into one internal stream
  decoder_from_reversed: bool = dataclasses.field(default=False, compare=False)  # file had no decoder_kwargs

  # ---- derived -------------------------------------------------------------
  @property
  def channels(self) -> int:
    """Channels of the public waveform: v2's `number_channels`, else implied by the first encoder
    Transformer's input width."""
    if self.number_channels is not None:
      return self.number_channels
    return _implied_channels(self.encoder)

  @property
  def interleaved(self) -> bool:
    """Whether the channels run interleaved as one stream (L0 R0 L1 R1 ...) through the model."""
    return self.family == "v2" and self.enable_channel_interleave and self.channels > 1

  @property
  def stream_channels(self) -> int:
    """Channels of the stream the encoder modules take (1 when interleaved)."""
    return 1 if self.interleaved else self.channels

  @property
  def stream_downsample_rate(self) -> int:
    """Samples of that stream per token frame: the patch product (downsample_rate x channels when
    interleaved)."""
    return self.downsample_rate * (self.channels if self.interleaved else 1)

  @property
  def v2(self) -> bool:
    return self.family == "v2"

  @property
  def attention_implementation(self) -> str:
    return self.extra.get("attention_implementation", self.extra.get("attention_backend", "sdpa"))

  @property
  def compute_dtype(self) -> str:
    """'fp32' or 'bf16' for the encoder/decoder modules (v2; the quantizer always runs in float32).
    A non-fp32 `codec_weight_dtype` switches an fp32 compute dtype to it, as the reference does."""
    c = self.extra.get("compute_dtype", self.extra.get("codec_compute_dtype", "fp32"))
    w = self.extra.get("codec_weight_dtype") or "fp32"
    return w if c == "fp32" and w != "fp32" else c

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
    family = "v2" if _is_v2(raw) else "v1"
    nc, interleave = _parse_v2_fields(raw)
    decoder_from_reversed = "decoder_kwargs" not in raw and "reversed_decoder_kwargs" in raw
    if decoder_from_reversed:
      raw["decoder_kwargs"] = _reverse_modules(raw["reversed_decoder_kwargs"])
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
    f = nc if (family == "v2" and interleave and nc is not None and nc > 1) else 1
    enc, dec = _with_contexts(enc, dec, sr * f, dur, family == "v2")
    for side, mods in (("encoder_kwargs", enc), ("decoder_kwargs", dec)):
      for i, m in enumerate(mods):
        if isinstance(m, TransformerSpec) and m.context is not None and m.context < 1:
          what = (f"context_duration={m.context_duration}" if m.context_duration is not None
                  else f"causal_transformer_context_duration={dur}")
          raise ConfigError(f"{side}[{i}]: {what} s gives an empty attention window; make it longer")
    cfg = cls(sampling_rate=sr, downsample_rate=dr, causal_transformer_context_duration=dur,
              encoder=tuple(enc), decoder=tuple(dec), quantizer=quant, extra=raw, family=family,
              number_channels=nc, enable_channel_interleave=interleave,
              decoder_from_reversed=decoder_from_reversed)
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
    if self.decoder_from_reversed:
      out.pop("decoder_kwargs")
      out["reversed_decoder_kwargs"] = _reverse_modules([m.to_dict() for m in self.decoder])
    if self.v2:
      if self.number_channels is not None:
        out["number_channels"] = self.number_channels
      out["enable_channel_interleave"] = self.enable_channel_interleave
      out.setdefault("model_type", V2_MODEL_TYPE)
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
    want = self.stream_downsample_rate
    what = (f"downsample_rate x number_channels = {self.downsample_rate} x {self.channels} = {want} "
            f"(channels interleaved)" if self.interleaved else f"downsample_rate is {self.downsample_rate}")
    for name, mods in (("encoder", self.encoder), ("decoder", self.decoder)):
      prod = math.prod(m.patch_size for m in mods if isinstance(m, PatchSpec))
      if prod != want:
        raise ConfigError(f"{name}_kwargs patch sizes multiply to {prod}, but {what}")
    c = self.stream_channels
    implied = _implied_channels(self.encoder)
    if self.v2 and implied != c:
      raise ConfigError(f"number_channels={self.channels} with enable_channel_interleave="
                        f"{str(self.enable_channel_interleave).lower()} needs encoder input width {c} x patch, "
                        f"but the first encoder Transformer's input_dimension implies {implied} channel(s)")
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


def _is_v2(raw: dict) -> bool:
  if raw.get("model_type") == V2_MODEL_TYPE or any(k in raw for k in V2_FIELDS):
    return True
  mods = [m for side in ("encoder_kwargs", "decoder_kwargs", "reversed_decoder_kwargs")
          for m in (raw.get(side) or []) if isinstance(m, dict)]
  return any("context_duration" in m for m in mods)


def _parse_v2_fields(raw: dict) -> tuple[int | None, bool]:
  """Pops `number_channels` and `enable_channel_interleave`, checks the v2 options and aliases
  that stay in `extra` (written back as they came). Returns (number_channels, interleave)."""
  nc = raw.pop("number_channels", None)
  alias = raw.get("channels_numbers")
  if nc is not None and alias is not None and nc != alias:
    raise ConfigError(f"number_channels={nc} and channels_numbers={alias} disagree")
  nc = alias if nc is None else nc
  if nc is not None and (isinstance(nc, bool) or not isinstance(nc, int) or nc < 1):
    raise ConfigError(f"number_channels must be a positive integer, got {nc!r}")
  interleave = raw.pop("enable_channel_interleave", False)
  if not isinstance(interleave, bool):
    raise ConfigError(f"enable_channel_interleave must be true or false, got {interleave!r}")
  for name, alias_name, allowed in (("attention_implementation", "attention_backend", ATTENTION_IMPLEMENTATIONS),
                                    ("compute_dtype", "codec_compute_dtype", DTYPES),
                                    ("codec_weight_dtype", None, DTYPES)):
    vals = {k: raw[k] for k in (name, alias_name) if k is not None and raw.get(k) is not None}
    for k, v in vals.items():
      if v not in allowed:
        raise ConfigError(f"{k} must be one of {allowed}, got {v!r}")
    if len(set(vals.values())) > 1:
      raise ConfigError(f"{name}={vals[name]!r} and {alias_name}={vals[alias_name]!r} disagree")
  return nc, interleave


def _reverse_modules(mods) -> list:
  """v2's `reversed_decoder_kwargs` <-> decoder list: reversed, input/output widths swapped."""
  if not isinstance(mods, list):
    raise ConfigError("reversed_decoder_kwargs must be a list of modules")
  out = []
  for m in reversed(mods):
    m = dict(m) if isinstance(m, dict) else m
    if isinstance(m, dict) and m.get("module_type") == "Transformer":
      m["input_dimension"], m["output_dimension"] = m.get("output_dimension"), m.get("input_dimension")
    out.append(m)
  return out


def _window(rate: float, m: TransformerSpec, dur: float, v2: bool) -> int | None:
  """Frames of a stage's window: v1 truncates rate x the global duration; v2 rounds (ties to even,
  Python's round on the float64 product) rate x the module's own duration, else the global one."""
  if not m.causal:
    return None
  if not v2:
    return int(rate * dur)
  return round(rate * (dur if m.context_duration is None else m.context_duration))


def _with_contexts(enc, dec, sr, dur, v2: bool = False):
  """Fills each Transformer's window in frames, with the reference's float arithmetic; `sr` is the
  rate of the stream the encoder takes (x channels when v2 interleaves)."""
  rate = float(sr)
  out_enc = []
  for m in enc:
    if isinstance(m, TransformerSpec):
      m = dataclasses.replace(m, context=_window(rate, m, dur, v2), v2=v2)
      out_enc.append(m)
    else:
      out_enc.append(m)
      rate /= m.patch_size
  out_dec = []  # the decoder continues from the encoder's final frame rate
  for m in dec:
    if isinstance(m, TransformerSpec):
      m = dataclasses.replace(m, context=_window(rate, m, dur, v2), v2=v2)
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



def v2_architecture(*, encoder: Sequence[Stage], decoder: Sequence[Stage], patch_sizes: Sequence[int],
                    quantizer: dict, channels: int = 2, sampling_rate: int = 48000, interleave: bool = True,
                    context_seconds: float = 10.0, encoder_contexts: Sequence[float] | None = None,
                    decoder_contexts: Sequence[float] | None = None, **transformer_options) -> dict:
  """The v2 config.json dict of a Nano-style CAT (CAT_SPEC_V2.md section 1): modules alternate
  patch and Transformer, patch_sizes[i] before encoder[i] and one patch more than stages at the end
  (len(patch_sizes) == len(encoder) + 1, as Nano's 240, 2, 2, 2, 4), on the interleaved stream of
  `channels` channels at `sampling_rate` each. The decoder mirrors it: un-patch, then decoder[i].
  `encoder_contexts` / `decoder_contexts`: per-module `context_duration` in seconds (None: the
  global `context_seconds`)."""
  n = len(encoder)
  if len(patch_sizes) != n + 1 or len(decoder) != n:
    raise ConfigError("v2_architecture needs len(patch_sizes) == len(encoder) + 1 == len(decoder) + 1")
  stream = 1 if interleave and channels > 1 else channels

  def tf(d_in: int, stage: Stage, ctx) -> dict:
    d, layers, heads, ff, out = stage
    m = {"module_type": "Transformer", "input_dimension": d_in, "output_dimension": out, "d_model": d,
         "num_heads": heads, "num_layers": layers, "dim_feedforward": ff, "causal": True, "norm": "layer_norm",
         "positional_embedding": "rope", "max_period": 10000, "gating": "none", "layer_scale": 0.01,
         "conv_layout": True, **transformer_options}
    if ctx is not None:
      m["context_duration"] = ctx
    return m

  enc, width = [], stream
  for i, st in enumerate(encoder):
    enc.append({"module_type": "PatchedPretransform", "patch_size": patch_sizes[i]})
    enc.append(tf(width * patch_sizes[i], st, None if encoder_contexts is None else encoder_contexts[i]))
    width = st[-1]
  enc.append({"module_type": "PatchedPretransform", "patch_size": patch_sizes[-1]})
  latent = width * patch_sizes[-1]
  rev = list(reversed(patch_sizes))
  dec, width = [{"module_type": "PatchedPretransform", "patch_size": rev[0]}], quantizer["output_dim"] // rev[0]
  for i, st in enumerate(decoder):
    dec.append(tf(width, st, None if decoder_contexts is None else decoder_contexts[i]))
    dec.append({"module_type": "PatchedPretransform", "patch_size": rev[i + 1]})
    width = st[-1] // rev[i + 1]
  dr = math.prod(patch_sizes) // (channels if stream == 1 and channels > 1 else 1)
  return {"architectures": ["MossAudioTokenizerModel"], "model_type": V2_MODEL_TYPE,
          "sampling_rate": sampling_rate, "sample_rate": sampling_rate, "downsample_rate": dr,
          "number_channels": channels, "enable_channel_interleave": interleave,
          "causal_transformer_context_duration": context_seconds, "attention_implementation": "sdpa",
          "compute_dtype": "fp32", "code_dim": latent, "encoder_kwargs": enc, "decoder_kwargs": dec,
          "quantizer_type": quantizer["quantizer_type"], "quantizer_kwargs": dict(quantizer), "dtype": "float32"}
