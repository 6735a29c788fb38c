"""One table of what cat_jax does on one accelerator (run through bench/gpu_check.sh).

  bash bench/gpu_check.sh               # one GPU: configs/base.py steps in bf16, released codec, 64 streams
  bash bench/gpu_check.sh --cpu-smoke   # the same path at tiny shapes on a CPU (a test runs it)

Rows: the stage-1 and stage-2 train steps of configs/base.py in bf16 (step time, tokens/s, MFU
against the spec-sheet bf16 peak and against the bf16 matmul rate measured here, peak device
memory), offline encode+decode of 60 s with the released 1.6 B configuration (random weights:
timing does not depend on them; real-time factor), and 64 concurrent streams of the 100 M
configuration (one 80 ms frame per step, encode + decode). Each row is timed after its compile.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import bench_codec  # noqa: E402
import bench_streaming  # noqa: E402
import bench_train_step  # noqa: E402

from cat_jax import CAT, CATConfig  # noqa: E402

# (train config, batch, seconds, steps, codec config, codec seconds, stream config, streams, dtype)
FULL = ("base", 8, 1.92, 5, "released", 60.0, "100m", 64, "bfloat16")
# float32 on the CPU: XLA:CPU emulates bf16, and the stage-2 step then compiles for minutes
SMOKE = ("tiny:ci", 2, 0.32, 1, "tiny", 1.0, "tiny", 2, "float32")


def peak_memory() -> int | None:
  """Peak bytes in use on device 0 so far (None where the backend does not say, e.g. CPU)."""
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def train_rows(name: str, batch: int, seconds: float, steps: int, dtype: str, spec_peak: float | None,
               measured: float):
  config, _, arg = name.partition(":")
  for stage in (1, 2):
    cfg = bench_train_step.load_config(config, arg or None)
    cfg.compute_dtype = dtype
    if name == SMOKE[0]:  # one sub-discriminator of each kind: the CPU compiles the full set for minutes
      cfg.disc.periods, cfg.disc.period_channels = [2], [4, 4, 4, 4, 4]
      cfg.disc.fft_sizes, cfg.disc.stft_channels = [128], 4
    r = bench_train_step.bench(cfg, batch, seconds, steps, stage, peak=measured, name=name)
    flops = r["model_flops_per_step"] if stage == 1 else r["xla_flops_per_step"]  # stage 2: discriminators count
    yield {"row": f"train stage {stage} ({name}, {dtype}, batch {batch} x {seconds} s)",
           "seconds": r["step_s"], "tokens_per_s": r["tokens_per_s"],
           "mfu_spec": flops / r["step_s"] / spec_peak if spec_peak else None,
           "mfu_measured": flops / r["step_s"] / measured, "peak_memory_bytes": peak_memory(),
           "compile_s": r["compile_s"]}


def codec_row(name: str, seconds: float, dtype: str):
  model = CAT.from_config(CATConfig.from_json(bench_codec.CONFIGS[name]), seed=0)
  r = bench_codec.bench(model, model.params, seconds, repeats=2, dtype=jnp.dtype(dtype), unroll=False)
  s = r["encode_s"] + r["decode_s"]
  return {"row": f"encode+decode {seconds:g} s ({name}, {dtype})", "seconds": s, "rtf": s / seconds,
          "peak_memory_bytes": peak_memory(), "compile_s": r["encode_compile_s"] + r["decode_compile_s"]}


def stream_row(name: str, streams: int, budget_s: float):
  t = {}
  for part in ("encode", "decode"):
    (r,) = bench_streaming.bench_part(name, part, [streams], budget_s, max_steps=200, mem_margin=0.5)
    if "skipped" in r:
      return {"row": f"{streams} streams ({name})", "skipped": r["skipped"]}
    t[part] = r["median_s"]
  cfg = CATConfig.from_dict(bench_streaming.raw_config(name))
  frame_s = cfg.downsample_rate / cfg.sampling_rate
  s = t["encode"] + t["decode"]
  return {"row": f"{streams} streams ({name}, enc+dec of one frame)", "seconds": s, "rtf": s / frame_s,
          "realtime_streams": streams * frame_s / s, "peak_memory_bytes": peak_memory()}


def table(rows: list[dict]) -> str:
  cols = ("seconds", "tokens_per_s", "mfu_spec", "mfu_measured", "rtf", "realtime_streams", "peak_memory_bytes")
  head = "| what | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"

  def cell(col, v):
    if v is None:
      return "-"
    return f"{v:.1%}" if col.startswith("mfu") else f"{v:.4g}"
  body = ""
  for r in rows:
    if "skipped" in r:
      body += f"| {r['row']} | skipped: {r['skipped']} |\n"
    else:
      body += f"| {r['row']} | " + " | ".join(cell(c, r.get(c)) for c in cols) + " |\n"
  return head + body


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on a CPU: checks the path, not the speed")
  p.add_argument("--json", default=None, help="also write the rows here")
  args = p.parse_args(argv)
  train, batch, seconds, steps, codec, codec_s, stream, streams, dtype = SMOKE if args.cpu_smoke else FULL
  dev = jax.devices()[0]
  if not args.cpu_smoke and dev.platform != "gpu":
    print(f"gpu_check: no GPU here (device 0 is {dev.device_kind}); use --cpu-smoke on a CPU", file=sys.stderr)
    return 2
  spec = bench_train_step.peak_flops(dev)
  measured = bench_train_step.matmul_peak(0.5 if args.cpu_smoke else 3.0, dtype, 256 if args.cpu_smoke else 8192)
  print(f"device: {dev.device_kind} x {jax.device_count()}, jax {jax.__version__}; peak: spec sheet bf16 "
        f"{spec or float('nan'):.4g} FLOP/s, measured {dtype} matmul {measured:.4g} FLOP/s", flush=True)
  rows = list(train_rows(train, batch, seconds, steps, dtype, spec, measured))
  rows.append(codec_row(codec, codec_s, dtype))
  rows.append(stream_row(stream, streams, 1.0 if args.cpu_smoke else 8.0))
  print(table(rows))
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": dev.device_kind, "spec_peak": spec, "measured_peak": measured, "rows": rows}, f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
