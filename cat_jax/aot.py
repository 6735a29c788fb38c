"""Ahead-of-time compile the real sharded train step for a TPU topology on a CPU machine.

  python -m cat_jax.aot --config=configs/moss_audio_tokenizer.py --topology=v5p-64 \
      [--config.batch_size=256] [--config.schedule.stage2_batch_size=128] [--stage=1] [--search_batch]

Each stage compiles at its own batch (`batch_size`, then `schedule.stage2_batch_size`, as the
training loop feeds them); with equal batches and no --stage, one program holds both (lax.cond).
An adversarial stage 2 with stage2_programs=3 (the default; step.SplitStep) is three programs, the
discriminator update ('disc'), the adversarial losses' audio gradient ('adv') and the generator
update ('gen'), compiled and reported one by one; a batch fits when all do (--search_batch goes by
the largest).
Prints per-chip HBM use (arguments, outputs, temporaries, total) from memory_analysis(),
FLOPs per step from cost_analysis(), the mesh and the compile time. A batch that does not fit
still reports the usage XLA states in its out-of-memory error. --search_batch finds the largest
global batch that fits: memory is roughly linear in the batch, so each next try is the secant
estimate between the closest fitting and non-fitting batches (bisection where that stalls).
Needs libtpu (`pip install "cat_jax[tpu]"`).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
import types

from cat_jax.errors import CATError, ConfigError
from cat_jax.train import train_config

# Per-chip HBM (bytes) and peak dense bf16 FLOP/s, from the public Cloud TPU spec sheets.
CHIPS = {
    "v4": {"hbm": 32 << 30, "peak_bf16": 275e12, "cores_per_chip": 2, "dims": 3},
    "v5p": {"hbm": 95 << 30, "peak_bf16": 459e12, "cores_per_chip": 2, "dims": 3},
    "v5e": {"hbm": 16 << 30, "peak_bf16": 197e12, "cores_per_chip": 1, "dims": 2},
    "v6e": {"hbm": 32 << 30, "peak_bf16": 918e12, "cores_per_chip": 1, "dims": 2},
}


def topology_name(name: str) -> tuple[str, str]:
  """'v5p-64' -> ('v5p', 'v5p:2x4x4'): the chip generation and get_topology_desc's name."""
  if ":" in name:
    return name.split(":")[0], name
  gen, _, n = name.partition("-")
  if gen not in CHIPS or not n.isdigit():
    raise ConfigError(f"--topology={name!r}; expected one of {sorted(CHIPS)} as 'v5p-64' or 'v5p:2x4x4'")
  spec = CHIPS[gen]
  chips, odd = divmod(int(n), spec["cores_per_chip"])
  if odd:
    raise ConfigError(f"--topology={name!r}: {gen} counts TensorCores, {spec['cores_per_chip']} per chip")
  if chips < 1 or chips & (chips - 1):
    raise ConfigError(f"--topology={name!r}: {chips} chips is not a power of two")
  dims = [2, 2, 1] if spec["dims"] == 3 and chips >= 4 else [1] * spec["dims"]  # v5p-8 is 2x2x1
  while math.prod(dims) < chips:  # double the last smallest axis: 2x2x2, 2x2x4, 2x4x4, 4x4x4; 4x4, 4x8, 8x8
    i = max(j for j, d in enumerate(dims) if d == min(dims))
    dims[i] *= 2
  return gen, f"{gen}:{'x'.join(map(str, dims))}"


def tpu_devices(name: str):
  from jax.experimental import topologies
  gen, topo = topology_name(name)
  kwargs = {"chip_config_name": "megacore"} if gen == "v4" else {}
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topo, **kwargs)
  except Exception as e:  # libtpu missing or topology unknown: one clear line
    raise CATError(f"cannot describe TPU topology {topo!r} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                   "is libtpu installed (pip install 'cat_jax[tpu]')?") from None
  return gen, topo, desc.devices


@dataclasses.dataclass
class Report:
  batch: int
  fits: bool
  compile_s: float
  args_gb: float  # per chip
  out_gb: float
  temp_gb: float
  alias_gb: float
  total_gb: float
  flops: float  # per step and chip: XLA cost_analysis of the SPMD-partitioned program
  note: str = ""  # why a batch counted as not fitting
  model_flops: float = float("nan")  # per step, all chips: model_flops() (analytic)
  program: str = "step"  # 'step' (one program per step), or 'disc' / 'adv' / 'gen' of a split stage 2


_SIZE = r"([0-9.]+)\s*([KMGT]i?)?B?"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _bytes(num: str, unit: str | None) -> float:
  return float(num) * _UNITS[(unit or "").rstrip("i")]


def parse_oom(msg: str) -> dict | None:
  """XLA:TPU's out-of-memory compile error -> {'used', 'capacity'[, 'program', 'arguments']} in
  bytes ('Used 103.21G of 95.74G hbm ... program 101.9G ... arguments 1.2G'), None if absent."""
  m = re.search(r"Used " + _SIZE + r" of " + _SIZE + r" hbm", msg)
  if not m:
    return None
  out = {"used": _bytes(m.group(1), m.group(2)), "capacity": _bytes(m.group(3), m.group(4))}
  for key in ("program", "arguments"):
    k = re.search(r"\b" + key + r"\s+" + _SIZE, msg)
    if k:
      out[key] = _bytes(k.group(1), k.group(2))
  return out


def _transformer_flops(d: int, layers: int, ffn: int, gated: bool, d_in: int, d_out: int, tokens: int,
                       keys: int) -> float:
  """Training FLOPs (forward + backward = 3 x forward) of one Transformer over `tokens` positions,
  PaLM's convention: 6 x matmul weights x tokens + 12 x layers x d x attended keys x tokens."""
  weights = layers * (4 * d * d + (3 if gated else 2) * d * ffn)
  weights += (d_in * d if d_in != d else 0) + (d * d_out if d_out != d else 0)
  return 6.0 * weights * tokens + 12.0 * layers * d * keys * tokens


def model_flops(cfg, mc, batch: int) -> float:
  """Model FLOPs per training step (global batch) of the codec's Transformer stages and the
  semantic LM, no remat recompute; discriminators, mel losses and the quantizer are left out.
  XLA's cost_analysis does not multiply a scanned layer stack by its depth (bench_train_step.py
  --depth_sweep: 1 -> 8 layers per stage, XLA +9%, this count +540%), so it undercounts."""
  from cat_jax.config import TransformerSpec
  cfg = train_config.parse(cfg)
  frames = cfg.segment_frames()
  total, rate = 0.0, float(mc.sampling_rate)
  seconds = frames * mc.downsample_rate / mc.sampling_rate
  for modules, shrink in ((mc.encoder, True), (mc.decoder, False)):
    for m in modules:
      if isinstance(m, TransformerSpec):
        tokens = round(seconds * rate)
        keys = min(tokens, m.context or tokens)
        total += _transformer_flops(m.d_model, m.num_layers, m.ffn_hidden, m.gating != "none",
                                    m.input_dimension, m.output_dimension, tokens, keys)
      else:
        rate = rate / m.patch_size if shrink else rate * m.patch_size
  lm = cfg.lm
  if cfg.loss.sem:  # the step runs the LM only for a semantic loss
    tokens = frames + cfg.data.max_text_len
    total += _transformer_flops(lm.d_model, lm.num_layers, lm.dim_feedforward, lm.gating != "none",
                                lm.d_model, lm.d_model, tokens, tokens)
    total += 6.0 * lm.d_model * lm.vocab_size * tokens
  return total * batch


def abstract_batch(cfg, trainer, mesh, batch: int) -> dict:
  """ShapeDtypeStructs of a global training batch, sharded like the real ones."""
  import jax
  import jax.numpy as jnp
  from cat_jax.train import parallel
  cfg = train_config.parse(cfg)
  mc = trainer.model_config
  t = cfg.segment_samples()
  text = cfg.data.max_text_len
  shapes = {"audio": ((batch, t, mc.channels), jnp.float32), "lengths": ((batch,), jnp.int32),
            "text": ((batch, text), jnp.int32), "text_lengths": ((batch,), jnp.int32)}
  sh = parallel.batch_shardings(mesh)
  return {k: jax.ShapeDtypeStruct(s, d, sharding=sh[k]) for k, (s, d) in shapes.items()}


def programs(trainer, stage) -> list[str]:
  """The programs of one training step: ['step'], or step.SplitStep.programs for a split stage 2."""
  from cat_jax.train import step as step_lib
  return list(step_lib.SplitStep.programs) if step_lib.split_applies(trainer, stage) else ["step"]


def compile_step(cfg, trainer, mesh, batch: int, stage, hbm: int, program: str = "step") -> Report:
  """Lower and compile one program of the sharded train step (see `programs`) for this global
  batch; memory is per chip."""
  import jax
  from cat_jax.train import parallel
  parallel.check_batch_divides(batch, mesh)
  state = parallel.sharded_abstract_state(trainer, mesh)
  step = parallel.make_sharded_train_step(trainer, mesh, stage=stage, split=program != "step")
  if program not in ("step", "disc", "adv", "gen"):
    raise ValueError(f"program={program!r}; expected 'step', 'disc', 'adv' or 'gen'")
  with parallel.mesh_context(mesh):
    inputs = (state, abstract_batch(cfg, trainer, mesh, batch))
    fn = step if program == "step" else getattr(step, program)
    if program in ("adv", "gen"):  # what the programs before them hand on (see step.SplitStep)
      _, d_mets, y = jax.eval_shape(step.disc, *inputs)
      adv_inputs = (state.disc, inputs[1], y)
      if program == "adv":
        inputs = adv_inputs
      else:
        g, a_mets = jax.eval_shape(step.adv, *adv_inputs)
        inputs = (*inputs, {**d_mets, **a_mets}, g)
    t0 = time.perf_counter()
    compiled = fn.lower(*inputs).compile()
  secs = time.perf_counter() - t0
  m = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  gb = 1 / (1 << 30)
  args, out, temp = m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes
  alias = getattr(m, "alias_size_in_bytes", 0)
  total = args + out - alias + temp + getattr(m, "generated_code_size_in_bytes", 0)
  # the analytic count (the step's Transformers, forward + backward) goes with the gen program
  mflops = model_flops(cfg, trainer.model_config, batch) if program in ("step", "gen") else float("nan")
  return Report(batch, total <= hbm, secs, args * gb, out * gb, temp * gb, alias * gb, total * gb,
                float((cost or {}).get("flops", float("nan"))), model_flops=mflops, program=program)


def try_compile(cfg, trainer, mesh, batch, stage, hbm, program: str = "step") -> Report:
  """compile_step, with an out-of-memory compile error counted as 'does not fit' (with XLA's
  stated usage where its message gives one)."""
  t0 = time.perf_counter()
  try:
    return compile_step(cfg, trainer, mesh, batch, stage, hbm, program=program)
  except Exception as e:  # XLA raises RESOURCE_EXHAUSTED when buffers exceed HBM
    msg = str(e)
    if "RESOURCE_EXHAUSTED" not in msg and "out of memory" not in msg.lower():
      raise
    line = msg.strip().splitlines()[0][:300]
    print(f"  batch {batch}{'' if program == 'step' else f' ({program} program)'}: compile failed for memory: {line}")
    nan, gb = float("nan"), 1 / (1 << 30)
    used = parse_oom(msg) or {}
    return Report(batch, False, time.perf_counter() - t0, used.get("arguments", nan) * gb, nan, nan, nan,
                  used.get("used", nan) * gb, nan, note=line, program=program)


def combine(reports: list[Report]) -> Report:
  """One step's programs -> the Report the batch search goes by: fits when all fit, the usage of
  the largest (an unknown usage counts as the largest)."""
  if len(reports) == 1:
    return reports[0]
  worst = max(reports, key=lambda r: r.total_gb if math.isfinite(r.total_gb) else math.inf)
  return dataclasses.replace(worst, fits=all(r.fits for r in reports),
                             compile_s=sum(r.compile_s for r in reports), program="+".join(r.program for r in reports))


def _round(b: float, unit: int) -> int:
  return int(b // unit * unit)


def next_batch(lo: tuple[int, float], hi: tuple[int, float] | None, unit: int, max_batch: int,
               slope: float = float("nan")) -> int | None:
  """The next global batch to compile, a multiple of `unit`, or None when the search is done.

  `lo` = (largest batch that fits, or 0; its GiB minus the HBM limit, <= 0), `hi` = (smallest that
  does not; its GiB minus the limit) or None. Memory is near linear in the batch, so the guess is
  the zero of the line through both points (extrapolated when `hi` is None), kept strictly inside
  the bracket; `slope` (GiB per example) extrapolates without `hi`; an unknown (nan) usage
  falls back to bisection, or to doubling."""
  lo_b, lo_m = lo
  if hi is None:
    cap = _round(max_batch, unit)
    if lo_b >= cap:
      return None
    guess = 2 * lo_b if lo_b else unit
    if math.isfinite(lo_m) and math.isfinite(slope) and slope > 0:
      guess = lo_b - lo_m / slope
    return min(cap, max(lo_b + unit, _round(guess, unit)))
  hi_b, hi_m = hi
  if hi_b - lo_b <= unit:
    return None
  guess = (lo_b + hi_b) / 2
  if math.isfinite(lo_m) and math.isfinite(hi_m) and hi_m > lo_m:
    guess = lo_b + (hi_b - lo_b) * (-lo_m) / (hi_m - lo_m)
  return min(max(_round(guess, unit), lo_b + unit), hi_b - unit)


def search(try_batch, first: Report, unit: int, max_batch: int, hbm_gb: float) -> tuple[int, int | None]:
  """Largest fitting global batch (a multiple of `unit`) given `try_batch(b) -> Report` and a first
  compile; returns (largest that fits or 0, smallest that does not or None up to max_batch).
  Batch 0 counts as fitting with the arguments (weights, optimizer state) as its usage."""
  reports = [first]
  while True:
    fits = [r for r in reports if r.fits]
    over = [r for r in reports if not r.fits]
    args = next((r.args_gb for r in reports if math.isfinite(r.args_gb)), float("nan"))
    lo_r = max(fits, key=lambda r: r.batch) if fits else None
    hi_r = min(over, key=lambda r: r.batch) if over else None
    lo = (lo_r.batch, lo_r.total_gb - hbm_gb) if lo_r else (0, args - hbm_gb)
    slope = (lo_r.total_gb - args) / lo_r.batch if lo_r else float("nan")  # from batch 0 = arguments only
    b = next_batch(lo, None if hi_r is None else (hi_r.batch, hi_r.total_gb - hbm_gb), unit, max_batch, slope)
    if b is None or any(r.batch == b for r in reports):
      return (lo_r.batch if lo_r else 0), (hi_r.batch if hi_r else None)
    reports.append(try_batch(b))


def print_report(r: Report, hbm: int, peak: float, chips: int):
  gb = hbm / (1 << 30)
  name = "" if r.program == "step" else f" [{r.program} program]"
  print(f"batch {r.batch}{name}: {'fits' if r.fits else 'DOES NOT FIT'} | per-chip HBM: args {r.args_gb:.2f} GiB, "
        f"outputs {r.out_gb:.2f} (aliased {r.alias_gb:.2f}), temps {r.temp_gb:.2f}, total {r.total_gb:.2f} "
        f"of {gb:.0f} GiB | compile {r.compile_s:.1f} s")
  if math.isfinite(r.model_flops):
    print(f"  model FLOPs/step {r.model_flops / 1e12:.1f} TFLOP (analytic: Transformers + LM, 6NT + attention), "
          f"{r.model_flops / chips / 1e12:.2f} per chip; at 100% of {peak:.3g} FLOP/s per chip: "
          f"{r.model_flops / chips / peak * 1e3:.0f} ms/step")
  if math.isfinite(r.flops):
    print(f"  XLA cost_analysis FLOPs/step per chip {r.flops:.3e} (all chips {r.flops * chips:.3e})")


def stage_jobs(cfg, stage: int | None) -> list[tuple[int | None, int]]:
  """(stage, global batch) pairs to compile: the forced stage at its batch, else both stages (one
  lax.cond program when their batches agree, else one program per stage at its own batch)."""
  cfg = train_config.parse(cfg)
  if stage is not None:
    if stage not in (1, 2):
      raise ConfigError(f"--stage={stage}; expected 1 or 2")
    return [(stage, cfg.stage_batch_size(stage))]
  b1, b2 = cfg.stage_batch_size(1), cfg.stage_batch_size(2)
  return [(None, b1)] if b1 == b2 else [(1, b1), (2, b2)]


def main(argv, flags):
  del argv
  from cat_jax import sharding
  from cat_jax.train import parallel
  from cat_jax.train import state as state_lib
  if flags.config.value is None:
    raise ConfigError("--config is required, e.g. --config=configs/moss_audio_tokenizer.py")
  cfg = train_config.parse(flags.config.value)
  gen, topo, devices = tpu_devices(flags.topology.value)
  spec = CHIPS[gen]
  m = cfg.mesh
  mesh = sharding.make_mesh(m.data, m.fsdp, m.tensor, devices=devices)
  trainer = state_lib.build_trainer(cfg)
  abstract = parallel.abstract_state(trainer)
  jobs = stage_jobs(cfg, flags.stage.value)
  shown = ", ".join(f"{s or '1+2'} at batch {b}" for s, b in jobs)
  print(f"topology {topo}: {len(devices)} x {devices[0].device_kind}; mesh {dict(mesh.shape)}; "
        f"params codec {state_lib.num_params(abstract.codec) / 1e9:.3f} B, lm {state_lib.num_params(abstract.lm) / 1e9:.3f} B, "
        f"disc {state_lib.num_params(abstract.disc) / 1e9:.3f} B; remat={cfg.remat}, "
        f"stage2_programs={cfg.stage2_programs}, "
        f"compute {cfg.compute_dtype}, segment {cfg.segment_seconds} s, stage {shown}")
  hbm = spec["hbm"]
  for stage, batch in jobs:
    meta = {"topology": topo, "chips": len(devices), "mesh": dict(mesh.shape), "stage": stage,
            "segment_seconds": cfg.segment_seconds, "remat": cfg.remat, "compute_dtype": cfg.compute_dtype,
            "stage2_programs": cfg.stage2_programs,
            "hbm_gib": hbm / (1 << 30)}

    def attempt(batch: int, stage=stage, meta=meta) -> Report:
      reports = []
      for program in programs(trainer, stage):
        r = try_compile(cfg, trainer, mesh, batch, stage, hbm, program=program)
        print_report(r, hbm, spec["peak_bf16"], len(devices))
        if flags.out.value:
          with open(flags.out.value, "a") as f:
            f.write(json.dumps({**meta, **dataclasses.asdict(r)}) + "\n")
        reports.append(r)
      r = combine(reports)
      if len(reports) > 1:
        print(f"batch {batch}: the step ({r.program}) {'fits' if r.fits else 'DOES NOT FIT'}: the largest program "
              f"takes {r.total_gb:.2f} GiB per chip; compile {r.compile_s:.1f} s in all")
      return r

    r = attempt(batch)
    if not flags.search_batch.value:
      continue
    unit = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
    unit *= max(1, -(-flags.batch_step.value // unit))
    lo, hi = search(attempt, r, unit, flags.max_batch.value, hbm / (1 << 30))
    which = f"stage {stage}" if stage else "a step"
    if hi is None:
      print(f"largest batch of {which} that fits on {topo}: >= {lo} (search capped at "
            f"--max_batch={flags.max_batch.value})")
    else:
      print(f"largest batch of {which} that fits on {topo}: {lo} ({lo / len(devices):g} per chip); {hi} does not")


def define_flags():
  """The command line's absl flags (defined here, not at import: importing this module, e.g. for
  model_flops, registers nothing)."""
  from absl import flags
  from ml_collections import config_flags
  return types.SimpleNamespace(
      config=config_flags.DEFINE_config_file("config", None, "Training recipe (configs/*.py)."),
      topology=flags.DEFINE_string("topology", "v5p-64", "TPU slice: v4-N / v5p-N (N TensorCores, 2 per chip), "
                                   "v5e-N / v6e-N (N chips), or a raw 'v5p:2x4x4'."),
      stage=flags.DEFINE_integer("stage", None, "1 or 2 forces a training stage; default compiles both."),
      search_batch=flags.DEFINE_bool("search_batch", False, "Bisect the largest global batch that fits in HBM."),
      max_batch=flags.DEFINE_integer("max_batch", 4096, "Upper end of --search_batch."),
      batch_step=flags.DEFINE_integer("batch_step", 0, "--search_batch stops within this many examples "
                                      "(rounded up to the batch-sharding width; 0: that width)."),
      out=flags.DEFINE_string("out", None, "Append one JSON line per compile here."))


def run():
  from absl import app
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")  # other jax processes on this box may hold libtpu's lock
  flags = define_flags()
  try:
    app.run(lambda argv: main(argv, flags))
  except CATError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  run()
