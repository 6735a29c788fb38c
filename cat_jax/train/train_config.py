"""TrainConfig: a training recipe parsed once into frozen, typed dataclasses.

Recipes stay what users write (configs/*.py returning an ml_collections ConfigDict, overridden on
the command line with --config.KEY=VALUE); `parse(cfg)` turns one into a TrainConfig at the entry
of training (`loop.train`, `build_trainer`, `cat_jax.aot`), and everything downstream reads typed
attributes. Every default lives in the field declarations below, and nowhere else.

Parsing is strict: an unknown or misspelled key, a value of the wrong type or out of range, a
bad `data.source` or a missing required key is one ConfigError naming the full dotted key (with
the close match for a misspelling). Adding a key is one line: a field with its default (and, if
it has a range, one line in that block's `__post_init__`).
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
import types
import typing
from typing import Mapping

import ml_collections

from cat_jax.config import CATConfig
from cat_jax.data.sources import parse_spec
from cat_jax.data.text import MAX_TEXT_LEN, VOCAB_SIZE
from cat_jax.errors import ConfigError

PARTS = ("encoder", "quantizer", "decoder", "lm")  # what `trainable` may name
DECAYS = ("constant", "exponential", "cosine")
COMPUTE_DTYPES = ("float32", "bfloat16")


class _Bad(ConfigError):
  """Raised inside a block's __post_init__ (so also by a block built by hand); the parser re-raises
  it with the full dotted key and the value."""

  def __init__(self, field: str, why: str):
    super().__init__(f"{field}: {why}")
    self.field, self.why = field, why


def _check(ok: bool, field: str, why: str) -> None:
  if not ok:
    raise _Bad(field, why)


def parse_trainable(trainable: str | None) -> frozenset[str]:
  """'all' or parts joined by '+' or ',' among encoder, quantizer, decoder, lm."""
  if trainable in (None, "all"):
    return frozenset(PARTS)
  parts = frozenset(p.strip() for p in trainable.replace(",", "+").split("+") if p.strip())
  bad = parts - set(PARTS)
  if bad or not parts:
    raise ConfigError(f"trainable={trainable!r}: unknown part(s) {sorted(bad)}; use 'all' or a '+'-joined "
                      f"subset of {PARTS}")
  return parts


# ---- the blocks -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MelLossConfig:
  """Multi-scale mel distance (TRAINING.md, DAC 24 kHz defaults table): windows 2^5..2^11, hop
  window/4, log10(clamp(mel, 1e-5)), normalised STFT (authors' recipe)."""
  windows: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
  n_mels: tuple[int, ...] = (5, 10, 20, 40, 80, 160, 320)
  clamp_eps: float = 1e-5
  power: float = 1.0
  mag_weight: float = 0.0
  log_weight: float = 1.0
  normalized: bool = True

  def __post_init__(self):
    _check(len(self.windows) > 0 and all(w > 0 for w in self.windows), "windows", "must be positive window sizes")
    _check(len(self.n_mels) == len(self.windows), "n_mels", f"needs one entry per window ({len(self.windows)})")
    _check(self.clamp_eps > 0, "clamp_eps", "must be > 0")


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """Loss weights. TRAINING.md, authors' recipe (MOSS-TTS report sec. 3): L = 20 sem + 15 rec
  + 0.25 commit + 1.0 codebook + 1.0 adv + 2.0 feat."""
  sem: float = 20.0
  rec: float = 15.0
  commit: float = 0.25
  codebook: float = 1.0
  adv: float = 1.0
  feat: float = 2.0
  stft: float = 0.0  # not in the authors' loss; DAC's multi-scale STFT distance, logged at eval
  wave: float = 0.0  # not in the authors' loss; EnCodec's time-domain L1 (losses.waveform_loss)
  wave_low: float = 0.0  # ours: the same L1 on the difference below wave_lowpass_hz only (the pitch's phase)
  wave_lowpass_hz: float = 0.0  # the cut-off of wave_low
  mel: MelLossConfig = dataclasses.field(default_factory=MelLossConfig)

  def __post_init__(self):
    for f in ("sem", "rec", "commit", "codebook", "adv", "feat", "stft", "wave", "wave_low"):
      _check(getattr(self, f) >= 0, f, "a loss weight must be >= 0")
    _check(self.wave_lowpass_hz >= 0, "wave_lowpass_hz", "must be >= 0")
    _check(not self.wave_low or self.wave_lowpass_hz > 0, "wave_lowpass_hz", "must be > 0 when wave_low is set")


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """TRAINING.md defaults table: AdamW betas (0.8, 0.99), lr 1e-4, exponential decay 0.999996 per
  step, weight decay 0.01; `clip` is the global-norm clip (1e3 generator, 10 discriminators)."""
  lr: float = 1e-4
  b1: float = 0.8
  b2: float = 0.99
  eps: float = 1e-8
  weight_decay: float = 0.01
  clip: float = 1e3
  warmup_steps: int = 0  # linear from 0 to lr
  decay: str = "exponential"  # after warm-up: 'constant', 'exponential' or 'cosine'
  decay_rate: float = 0.999996  # 'exponential': lr * decay_rate ** steps
  decay_steps: int = 0  # 'cosine': reaches lr * min_lr_ratio at this step
  min_lr_ratio: float = 0.0
  flatten: bool = False  # one flat vector: fast CPU compiles, no FSDP sharding (optimizer.py)

  def __post_init__(self):
    _check(self.lr > 0, "lr", "must be > 0")
    _check(0 <= self.b1 < 1, "b1", "must be in [0, 1)")
    _check(0 <= self.b2 < 1, "b2", "must be in [0, 1)")
    _check(self.eps > 0, "eps", "must be > 0")
    _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
    _check(self.clip > 0, "clip", "must be > 0")
    _check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
    _check(self.decay in DECAYS, "decay", f"unknown lr decay; expected one of {DECAYS}")
    _check(0 < self.decay_rate <= 1, "decay_rate", "must be in (0, 1]")
    _check(self.decay != "cosine" or self.decay_steps > 0, "decay_steps", "must be > 0 with decay='cosine'")
    _check(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  gen: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)  # codec + semantic LM
  disc: OptimizerConfig = dataclasses.field(default_factory=lambda: OptimizerConfig(clip=10.0))
  ema_decay: float = 0.0  # EMA of the codec weights; 0 = off (not in the paper)

  def __post_init__(self):
    _check(0 <= self.ema_decay < 1, "ema_decay", "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class DiscConfig:
  """TRAINING.md defaults table: MPD periods 2, 3, 5, 7, 11; complex-STFT discriminator at FFT
  2048/1024/512 with bands at 0/0.1/0.25/0.5/0.75/1.0 of Nyquist (HiFi-GAN / DAC widths)."""
  periods: tuple[int, ...] = (2, 3, 5, 7, 11)
  period_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
  fft_sizes: tuple[int, ...] = (2048, 1024, 512)
  bands: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
  stft_channels: int = 32

  def __post_init__(self):
    _check(all(p > 0 for p in self.periods), "periods", "must be positive")
    _check(len(self.period_channels) > 0 and all(c > 0 for c in self.period_channels), "period_channels",
           "must be positive channel counts")
    _check(all(n > 0 for n in self.fft_sizes), "fft_sizes", "must be positive")
    _check(len(self.bands) >= 2 and list(self.bands) == sorted(self.bands) and self.bands[0] >= 0
           and self.bands[-1] <= 1, "bands", "must be >= 2 increasing fractions of Nyquist in [0, 1]")
    _check(self.stft_channels > 0, "stft_channels", "must be > 0")


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Semantic-alignment LM (TRAINING.md L_sem): byte-level vocab of 264 (cat_jax/data/text.py)."""
  d_model: int = 64
  num_layers: int = 2
  num_heads: int = 4
  dim_feedforward: int = 256
  vocab_size: int = VOCAB_SIZE
  gating: str = "none"
  norm: str = "layer_norm"

  def __post_init__(self):
    for f in ("d_model", "num_layers", "num_heads", "dim_feedforward"):
      _check(getattr(self, f) > 0, f, "must be > 0")
    _check(self.d_model % self.num_heads == 0, "num_heads", f"must divide d_model={self.d_model}")
    _check(self.vocab_size >= VOCAB_SIZE, "vocab_size", f"must be >= {VOCAB_SIZE} (the byte-level tokenizer)")


@dataclasses.dataclass(frozen=True)
class CodebookRestartConfig:
  """Dead-code restarts (codebook_restart.py): a row whose usage average falls below `threshold`
  is re-seeded from the batch's encoder latents; threshold 0 = off."""
  decay: float = 0.95
  threshold: float = 0.0

  def __post_init__(self):
    _check(0 < self.decay < 1, "decay", "must be in (0, 1)")
    _check(self.threshold >= 0, "threshold", "must be >= 0")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Two stages (TRAINING.md): reconstruction pre-training, then adversarial. The stage-1 batch is
  the top-level `batch_size`; `stage2_batch_size` (None: the same) is the batch from step
  `stage1_steps` on (the paper halves it: 1536 -> 768)."""
  stage1_steps: int
  stage2_steps: int = 0  # the default num_steps is stage1_steps + stage2_steps
  stage1_batch_size: int | None = None  # None or = batch_size (recipes tie it with c.get_ref('batch_size'))
  stage2_batch_size: int | None = None

  def __post_init__(self):
    _check(self.stage1_steps >= 0, "stage1_steps", "must be >= 0")
    _check(self.stage2_steps >= 0, "stage2_steps", "must be >= 0")
    for f in ("stage1_batch_size", "stage2_batch_size"):
      _check(getattr(self, f) is None or getattr(self, f) > 0, f, "must be > 0")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where batches come from (cat_jax/data): `source` and `eval_source` are source specs
  (sources.parse_spec: folder:PATH, tfds:NAME[:SPLIT], arrayrecord:GLOB, corpus:DIR/NAME.jsonl)."""
  source: str
  eval_source: str | None = None  # the periodic evaluation's clips (None: held out of `source`)
  max_text_len: int = MAX_TEXT_LEN
  num_workers: int = 0  # grain worker processes
  gain_db: tuple[float, float] | None = None  # random gain augmentation range
  data_dir: str | None = None  # TFDS data_dir

  def __post_init__(self):
    for f in ("source", "eval_source"):
      spec = getattr(self, f)
      if spec is not None:
        try:
          parse_spec(spec)
        except ConfigError as e:
          raise _Bad(f, str(e)) from None
    _check(self.max_text_len >= 0, "max_text_len", "must be >= 0")
    _check(self.num_workers >= 0, "num_workers", "must be >= 0")
    _check(self.gain_db is None or self.gain_db[0] <= self.gain_db[1], "gain_db", "must be (low, high)")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  """Device mesh (cat_jax.sharding.make_mesh): -1 takes the remaining devices."""
  data: int = -1
  fsdp: int = 1
  tensor: int = 1
  dcn_data: int = 1  # data-parallel slices across hosts (hybrid mesh)

  def __post_init__(self):
    for f in ("data", "fsdp", "tensor"):
      _check(getattr(self, f) == -1 or getattr(self, f) >= 1, f, "must be >= 1 or -1")
    _check([self.data, self.fsdp, self.tensor].count(-1) <= 1, "data", "at most one of data, fsdp, tensor may be -1")
    _check(self.dcn_data >= 1, "dcn_data", "must be >= 1")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """jax.distributed settings (else JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)."""
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """A whole training run. Required: model, data.source, schedule.stage1_steps, batch_size, segment_seconds."""
  model: CATConfig  # the reference config.json schema (cat_jax.config.codec_architecture builds it)
  data: DataConfig
  schedule: ScheduleConfig
  batch_size: int  # global batch of stage 1 (schedule.stage2_batch_size for stage 2)
  segment_seconds: float  # training segment, rounded up to whole frames
  num_steps: int | None = None  # None: stage1_steps + stage2_steps (stage 2 runs from stage1_steps to the end)
  seed: int = 0
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  disc: DiscConfig = dataclasses.field(default_factory=DiscConfig)
  lm: LMConfig = dataclasses.field(default_factory=LMConfig)
  quantizer_dropout: float = 1.0  # TRAINING.md: probability of a random codebook prefix per example
  codebook_restart: CodebookRestartConfig = dataclasses.field(default_factory=CodebookRestartConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  distributed: DistributedConfig = dataclasses.field(default_factory=DistributedConfig)
  init_from: str | None = None  # codec weights to start from (reference layout, Orbax params, a workdir, a Hub id)
  trainable: str = "all"  # 'all' or '+'-joined parts of PARTS; frozen parts get exactly zero update
  remat: bool = False
  # False: each Transformer's layer scan fully unrolled. XLA:CPU copies every layer's weights out of
  # the stack and its gradients back in: speech_cpu's stage-1 step 0.40 s scanned, 0.35 s unrolled.
  scan_layers: bool = True
  compute_dtype: str = "float32"  # 'float32' or 'bfloat16' (params stay float32)
  # Stage 2 (adversarial) as 3 jitted programs (discriminator update; adversarial losses and their
  # audio gradient; generator update: smaller programs, one extra codec forward) or as 1. Same results.
  stage2_programs: int = 3
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  eval_every: int = 0  # 0: no periodic evaluation
  eval_clips: int = 1  # clips of the eval batch scored with the paper's metrics
  eval_batch_size: int | None = None  # None: batch_size
  eval_segment_seconds: float | None = None  # None: segment_seconds

  def __post_init__(self):
    s = self.schedule
    if self.num_steps is None:
      object.__setattr__(self, "num_steps", s.stage1_steps + s.stage2_steps)
    if self.stage2_programs == 2:  # runs saved before the split grew a third program: the same split
      object.__setattr__(self, "stage2_programs", 3)
    _check(self.batch_size > 0, "batch_size", "must be > 0")
    _check(self.segment_seconds > 0, "segment_seconds", "must be > 0")
    _check(self.num_steps >= 0, "num_steps", "must be >= 0")
    _check(s.stage1_batch_size in (None, self.batch_size), "schedule.stage1_batch_size",
           f"differs from batch_size={self.batch_size}: the stage-1 batch is batch_size (tie them with "
           f"c.schedule.stage1_batch_size = c.get_ref('batch_size'))")
    _check(0 <= self.quantizer_dropout <= 1, "quantizer_dropout", "must be in [0, 1]")
    _check(self.compute_dtype in COMPUTE_DTYPES, "compute_dtype", f"expected one of {COMPUTE_DTYPES}")
    _check(self.stage2_programs in (1, 3), "stage2_programs", "must be 1 or 3")
    try:
      parts = parse_trainable(self.trainable)
    except ConfigError as e:
      raise _Bad("trainable", str(e).partition(": ")[2]) from None
    _check(parts == frozenset(PARTS) or bool(self.init_from), "init_from",
           f"must name a trained codec with trainable={self.trainable!r} (the frozen parts would stay random)")
    _check(self.checkpoint_every >= 1, "checkpoint_every", "must be >= 1")
    _check(self.keep_checkpoints >= 1, "keep_checkpoints", "must be >= 1")
    _check(self.eval_every >= 0, "eval_every", "must be >= 0 (0: off)")
    _check(self.eval_clips >= 1, "eval_clips", "must be >= 1")
    _check(self.eval_batch_size is None or self.eval_batch_size > 0, "eval_batch_size", "must be > 0")
    _check(self.eval_segment_seconds is None or self.eval_segment_seconds > 0, "eval_segment_seconds",
           "must be > 0")

  # ---- derived ----------------------------------------------------------------------------
  def stage(self, step: int) -> int:
    """The training stage (1 or 2) of the step taken after `step` steps."""
    return 1 if step < self.schedule.stage1_steps else 2

  def stage_batch_size(self, stage: int) -> int:
    """Global batch of a stage: batch_size, and schedule.stage2_batch_size (if set) in stage 2."""
    if stage == 2 and self.schedule.stage2_batch_size is not None:
      return self.schedule.stage2_batch_size
    return self.batch_size

  def segment_frames(self, seconds: float | None = None) -> int:
    """A segment (default segment_seconds) in whole codec frames, rounded up."""
    sec = self.segment_seconds if seconds is None else seconds
    return max(1, math.ceil(sec * self.model.sampling_rate / self.model.downsample_rate))

  def segment_samples(self, seconds: float | None = None) -> int:
    """A segment (default segment_seconds) rounded up to whole frames, in samples."""
    return self.segment_frames(seconds) * self.model.downsample_rate

  # ---- (de)serialisation ----------------------------------------------------------------------
  def to_dict(self) -> dict:
    """Plain JSON-ready dict (every default filled in) that parses back to an equal config."""
    return _to_plain(self)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  def replace(self, **changes) -> "TrainConfig":
    return dataclasses.replace(self, **changes)


# ---- the parser ---------------------------------------------------------------------------------

def parse(cfg) -> TrainConfig:
  """A recipe (ConfigDict or dict, e.g. a run's saved config) -> TrainConfig; a TrainConfig as is."""
  if isinstance(cfg, TrainConfig):
    return cfg
  return from_dict(TrainConfig, cfg)


def _plain(raw):
  """ConfigDict / FrozenConfigDict -> dict (FieldReferences resolved); anything else as is."""
  to_dict = getattr(raw, "to_dict", None)
  return to_dict() if callable(to_dict) and not dataclasses.is_dataclass(raw) else raw


def _all_keys(cls, prefix: str = "") -> list[str]:
  out = []
  hints = typing.get_type_hints(cls)
  for f in dataclasses.fields(cls):
    out.append(prefix + f.name)
    t = hints[f.name]
    if dataclasses.is_dataclass(t) and t is not CATConfig:
      out.extend(_all_keys(t, f"{prefix}{f.name}."))
  return out


def _unknown(key: str, known: list[str], prefix: str) -> ConfigError:
  """The error for an unknown key: the same name elsewhere in the schema (a key at the wrong
  level), else the close match at this level (a misspelling), else the keys known here."""
  elsewhere = [k for k in _all_keys(TrainConfig) if k.rsplit(".", 1)[-1] == key]
  close = difflib.get_close_matches(key, known, n=1, cutoff=0.6) or [k for k in known if k.startswith(key)][:1]
  if elsewhere:
    hint = f"; did you mean {elsewhere[0]!r}?"
  elif close:
    hint = f"; did you mean {prefix + close[0]!r}?"
  else:
    hint = f" (known here: {', '.join(known)})"
  return ConfigError(f"unknown training-config key {prefix + key!r}{hint}")


def from_dict(cls, raw, prefix: str = ""):
  """One block of the schema from a mapping: unknown keys, missing required keys, wrong types and
  out-of-range values raise ConfigError naming the dotted key."""
  raw = _plain(raw)
  if not isinstance(raw, Mapping):
    raise ConfigError(f"{prefix.rstrip('.') or 'the training config'}={raw!r}: expected a mapping of keys")
  hints = typing.get_type_hints(cls)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  for k in raw:
    if k not in fields:
      raise _unknown(str(k), list(fields), prefix)
  kwargs = {}
  for name, f in fields.items():
    if name in raw:
      kwargs[name] = _value(hints[name], raw[name], prefix + name)
    elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
      raise ConfigError(f"missing required training-config key {prefix + name!r}")
  try:
    return cls(**kwargs)
  except _Bad as e:
    value = _lookup(kwargs, e.field)
    shown = f"={value!r}" if value is not _NOTHING and not dataclasses.is_dataclass(value) else ""
    raise ConfigError(f"{prefix + e.field}{shown}: {e.why}") from None


_NOTHING = object()


def _lookup(kwargs: dict, dotted: str):
  node = kwargs
  for part in dotted.split("."):
    node = node.get(part, _NOTHING) if isinstance(node, dict) else getattr(node, part, _NOTHING)
    if node is _NOTHING:
      return _NOTHING
  return node


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _value(t, v, key: str):
  """A raw value checked and converted to the annotated type `t`."""
  origin, args = typing.get_origin(t), typing.get_args(t)
  if origin in (typing.Union, types.UnionType):
    if v is None and type(None) in args:
      return None
    inner = [a for a in args if a is not type(None)]
    return _value(inner[0], v, key)
  if t is CATConfig:
    try:
      return CATConfig.from_dict(_plain(v))
    except ConfigError as e:
      raise ConfigError(f"{key}: {e}") from None
  if dataclasses.is_dataclass(t):
    return from_dict(t, v, key + ".")
  if origin is tuple:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
      raise ConfigError(f"{key}={v!r}: expected a list")
    if len(args) == 2 and args[1] is Ellipsis:
      return tuple(_value(args[0], x, f"{key}[{i}]") for i, x in enumerate(v))
    if len(v) != len(args):
      raise ConfigError(f"{key}={v!r}: expected {len(args)} values")
    return tuple(_value(a, x, f"{key}[{i}]") for i, (a, x) in enumerate(zip(args, v)))
  if t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
    if not math.isfinite(v):
      raise ConfigError(f"{key}={v!r}: expected a finite number")
    return float(v)
  if t in (int, bool, str) and isinstance(v, t) and (t is bool or not isinstance(v, bool)):
    return v
  raise ConfigError(f"{key}={v!r}: expected {_NAMES.get(t, t)}")


def _to_plain(x):
  if isinstance(x, CATConfig):
    return x.to_dict()
  if dataclasses.is_dataclass(x):
    return {f.name: _to_plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
  if isinstance(x, tuple):
    return [_to_plain(v) for v in x]
  return x


def as_config_dict(block):
  """A block (e.g. the defaults LossConfig()) as an ml_collections ConfigDict of plain values,
  lists for tuples: what recipes build on (configs/*.py override single keys of it)."""
  return ml_collections.ConfigDict(_to_plain(block))
