"""Times the sharded train step: compile seconds, step seconds, steps/s, audio-seconds/s, tokens/s
(token = one frame of one example at the codec's frame rate) and model-FLOPs utilisation against
the accelerator's peak.

  .venv/bin/python bench/bench_train_step.py --config tiny --batch 4 --seconds 0.96
  .venv/bin/python bench/bench_train_step.py --config speech_cpu --batch 8 --seconds 1.28 --steps 5
  .venv/bin/python bench/bench_train_step.py --config base --batch 2 --seconds 1.92 --steps 3
  .venv/bin/python bench/bench_train_step.py --config tiny --depth_sweep 1,2,4,8

MFU = achieved model FLOP/s / (chips x peak). Model FLOPs per step are taken three ways:
cat_jax.aot.model_flops (analytic, per Transformer stage at its own token rate: 6 x weights x
tokens + 12 x layers x d x keys x tokens, plus the LM; no discriminators, mel, quantizer), XLA's
cost_analysis() of the compiled step (everything, but a scanned layer stack is not multiplied by
its depth: --depth_sweep shows it), and
the crude 6 x params x frames rule.
On a CPU (no spec-sheet peak) the peak is this machine's measured float32 matmul rate, so the
figure is comparable across configs here; --peak overrides it (FLOP/s per device).
--depth_sweep compiles with 1..N layers per Transformer stage (scanned) to check that compile
time and temporary memory stay flat in depth (memory flat with --remat).
"""
from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time

import jax
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)
from cat_jax import sharding  # noqa: E402
from cat_jax.aot import model_flops  # noqa: E402
from cat_jax.train import parallel  # noqa: E402
from cat_jax.train import state as state_lib  # noqa: E402
from cat_jax.train import train_config  # noqa: E402

# Dense bf16 peak FLOP/s per chip (public spec sheets); device_kind substrings -> peak.
PEAK_FLOPS = {
    "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v5": 459e12,
    "TPU v6 lite": 918e12, "TPU v6e": 918e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
}


def peak_flops(device) -> float | None:
  """Peak bf16 FLOP/s of one device, None where unknown (CPU)."""
  kind = getattr(device, "device_kind", "")
  for name in sorted(PEAK_FLOPS, key=len, reverse=True):
    if name in kind:
      return PEAK_FLOPS[name]
  return None


def matmul_peak(seconds: float = 1.0, dtype="float32", n: int = 1024, shape: tuple[int, int, int] | None = None) -> float:
  """This device's matmul FLOP/s in `dtype` (best of repeated (m, k) @ (k, n) products, `shape`
  = (m, k, n), default n^3): the practical peak."""
  m, k, n = shape or (n, n, n)
  a, b = jax.numpy.ones((m, k), dtype), jax.numpy.ones((k, n), dtype)
  mm = jax.jit(lambda x, y: x @ y)
  jax.block_until_ready(mm(a, b))
  best, end = float("inf"), time.perf_counter() + seconds
  while time.perf_counter() < end:
    t0 = time.perf_counter()
    jax.block_until_ready(mm(a, b))
    best = min(best, time.perf_counter() - t0)
  return 2 * m * k * n / best


def mfu(model_flops_per_step: float, step_seconds: float, n_devices: int, peak: float | None) -> float | None:
  """Model FLOPs utilisation: (FLOPs per step / step time) / (devices x peak FLOP/s)."""
  if not peak or not step_seconds:
    return None
  return model_flops_per_step / step_seconds / (n_devices * peak)


def load_config(name: str, arg=None):
  path = os.path.join(ROOT, "configs", f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"cat_configs_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(arg)


def make_batch(cfg, mc, batch: int, seconds: float, seed: int = 0) -> dict:
  """Random-phase harmonic audio (B, T, C) of whole frames, full lengths, a short byte text padded to
  data.max_text_len (as the training pipeline pads it)."""
  frames = max(1, math.ceil(seconds * mc.sampling_rate / mc.downsample_rate))
  t = frames * mc.downsample_rate
  rng = np.random.default_rng(seed)
  n = np.arange(t) / mc.sampling_rate
  f0 = rng.uniform(90, 250, (batch, 1))
  audio = (0.2 * np.sin(2 * np.pi * f0 * n) + 0.01 * rng.normal(size=(batch, t))).astype(np.float32)
  audio = np.repeat(audio[..., None], mc.channels, -1)
  text = np.zeros((batch, train_config.parse(cfg).data.max_text_len), np.int32)  # the pipeline's padded width
  text[:, :6] = [3, 112, 116, 113, 117, 2]
  return {"audio": audio, "lengths": np.full((batch,), t, np.int32), "text": text,
          "text_lengths": np.full((batch,), 6, np.int32)}, frames


def bench(cfg, batch: int, seconds: float, steps: int, stage, peak: float | None = None, name: str = "?") -> dict:
  cfg = train_config.parse(cfg)
  mesh = sharding.mesh_from_config(cfg)
  parallel.check_batch_divides(batch, mesh)
  trainer = state_lib.build_trainer(cfg)
  t0 = time.perf_counter()
  state = parallel.init_sharded_state(trainer, mesh, jax.random.key(0))
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0
  host, frames = make_batch(cfg, trainer.model_config, batch, seconds)
  step = parallel.make_sharded_train_step(trainer, mesh, stage=stage, split=False)  # one program: .lower
  with parallel.mesh_context(mesh):
    b = sharding.shard_batch(host, mesh)
    t0 = time.perf_counter()
    compiled = step.lower(state, b).compile()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps + 1):  # the first call also moves buffers; dropped
      t0 = time.perf_counter()
      state, m = compiled(state, b)
      float(m["loss"])
      times.append(time.perf_counter() - t0)
  step_s = statistics.median(times[1:]) if steps else times[0]
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  xla_flops = float((cost or {}).get("flops", float("nan")))
  mem = compiled.memory_analysis()
  n_gen = state_lib.num_params(state.codec) + state_lib.num_params(state.lm)
  tokens = batch * frames
  rule_flops = 6 * n_gen * tokens
  analytic = model_flops(cfg, trainer.model_config, batch)
  peak_src = "given" if peak else "spec sheet, bf16"
  if not peak:
    peak = peak_flops(jax.devices()[0])
  if not peak and jax.devices()[0].platform == "cpu":
    peak, peak_src = matmul_peak(), "measured f32 matmul"
  return {
      "config": name, "stage": stage, "batch": batch, "frames": frames, "tokens_per_step": tokens,
      "params_gen": n_gen, "params_disc": state_lib.num_params(state.disc), "remat": cfg.remat,
      "compute_dtype": cfg.compute_dtype, "mesh": dict(mesh.shape),
      "init_s": round(init_s, 2), "compile_s": round(compile_s, 2), "step_s": round(step_s, 4),
      "tokens_per_s": round(tokens / step_s, 2), "steps_per_s": round(1.0 / step_s, 3),
      "audio_seconds_per_s": round(batch * frames * trainer.model_config.downsample_rate
                                   / trainer.model_config.sampling_rate / step_s, 2), "loss": float(m["loss"]),
      "model_flops_per_step": analytic, "xla_flops_per_step": xla_flops, "rule_6nt_flops_per_step": rule_flops,
      "achieved_flops_per_s": xla_flops / step_s,
      "temp_bytes": int(mem.temp_size_in_bytes) if mem else None,
      "mfu_model": mfu(analytic, step_s, jax.device_count(), peak),
      "mfu_xla": mfu(xla_flops, step_s, jax.device_count(), peak),
      "mfu_6nt": mfu(rule_flops, step_s, jax.device_count(), peak),
      "device": jax.devices()[0].device_kind, "n_devices": jax.device_count(), "peak_flops_per_device": peak,
      "peak_source": peak_src,
  }


def print_mfu(r: dict):
  """The MFU formula with this run's numbers in it."""
  n, peak, step = r["n_devices"], r["peak_flops_per_device"], r["step_s"]
  for name, key in (("model, analytic", "model_flops_per_step"), ("XLA cost_analysis", "xla_flops_per_step"),
                    ("6 N frames", "rule_6nt_flops_per_step")):
    f = r[key]
    val = f"{f / step / (n * peak):.2%}" if peak else "n/a (no peak)"
    print(f"MFU ({name}) = FLOPs/step / step_s / (devices x peak) = {f:.3e} / {step:.4g} s / "
          f"({n} x {peak or float('nan'):.3e} FLOP/s, {r['peak_source']}) = {val}")


def depth_sweep(cfg, depths, batch: int, seconds: float, stage) -> list[dict]:
  """Compile (no run) the step with every Transformer stage at each depth: seconds and temp bytes."""
  rows = []
  for depth in depths:
    c = copy.deepcopy(cfg)  # copy_and_resolve_references shares the module dicts: the caller's would change
    for part in ("encoder_kwargs", "decoder_kwargs"):
      for mod in c.model[part]:
        if mod["module_type"] == "Transformer":
          mod["num_layers"] = depth
    c.lm.num_layers = depth
    c = train_config.parse(c)
    mesh = sharding.mesh_from_config(c)
    trainer = state_lib.build_trainer(c)
    host, _ = make_batch(c, trainer.model_config, batch, seconds)
    state = parallel.sharded_abstract_state(trainer, mesh)
    step = parallel.make_sharded_train_step(trainer, mesh, stage=stage, split=False)  # one program: .lower
    with parallel.mesh_context(mesh):
      t0 = time.perf_counter()
      lowered = step.lower(state, sharding.shard_batch(host, mesh))
      lower_s = time.perf_counter() - t0
      compiled = lowered.compile()
    compile_s = time.perf_counter() - t0 - lower_s
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    rows.append({"depth": depth, "remat": c.remat, "lower_s": round(lower_s, 2),
                 "compile_s": round(compile_s, 2),
                 "temp_bytes": int(compiled.memory_analysis().temp_size_in_bytes),
                 "xla_flops": float((cost or {}).get("flops", float("nan"))),
                 "model_flops": model_flops(c, trainer.model_config, batch),
                 "params_gen": state_lib.num_params(state.codec) + state_lib.num_params(state.lm)})
    print(json.dumps(rows[-1]), flush=True)
  return rows


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default="tiny", help="configs/<name>.py[:arg] (tiny, tiny:ci, base, moss_audio_tokenizer)")
  p.add_argument("--batch", type=int, default=4)
  p.add_argument("--seconds", type=float, default=0.96, help="segment length (rounded up to whole frames)")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--stage", type=int, default=1, help="1 reconstruction, 2 adversarial")
  p.add_argument("--remat", type=int, default=None, help="override cfg.remat (0/1)")
  p.add_argument("--dtype", default=None, help="override cfg.compute_dtype")
  p.add_argument("--depth_sweep", default="", help="comma-separated layers per stage, e.g. 1,2,4,8")
  p.add_argument("--peak", type=float, default=None, help="peak FLOP/s per device for MFU (default: "
                 "spec sheet for TPU/GPU, measured f32 matmul on CPU)")
  p.add_argument("--out", default=None, help="append JSON lines here")
  a = p.parse_args()
  cfg = load_config(*a.config.split(":", 1))  # 'tiny' or 'tiny:ci'
  cfg.batch_size = a.batch
  cfg.segment_seconds = a.seconds  # what make_batch feeds, so model_flops counts the same tokens
  if a.remat is not None:
    cfg.remat = bool(a.remat)
  if a.dtype:
    cfg.compute_dtype = a.dtype
  print(f"# {platform.node()} {platform.processor() or platform.machine()}, jax {jax.__version__}, "
        f"{jax.device_count()} x {jax.devices()[0].device_kind}", flush=True)
  if a.depth_sweep:
    rows = depth_sweep(cfg, [int(d) for d in a.depth_sweep.split(",")], a.batch, a.seconds, a.stage)
  else:
    rows = [bench(cfg, a.batch, a.seconds, a.steps, a.stage, a.peak, name=a.config)]
    print(json.dumps(rows[0], indent=1))
    print_mfu(rows[0])
  if a.out:
    with open(a.out, "a") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
  main()
