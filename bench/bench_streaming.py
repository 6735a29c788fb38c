"""Per-chunk latency and throughput of streaming encode/decode, one 80 ms frame per step.

  .venv/bin/python bench/bench_streaming.py --configs tiny,100m,released --streams 1,8,64

For each configuration (random weights) and number of concurrent streams B, times the jitted
encoder step (B frames of audio -> codes) and decoder step (B frames of codes -> audio) after
warm-up: median and p99 seconds per step. A configuration is real-time for B streams when
encode + decode of one frame for all B streams takes less than one frame (80 ms).

What bounds a step: every step reads all weights of its half once (independent of B) and each
stream's KV caches once (ring buffers: only the new frames are written, in place); it computes
2 FLOPs per weight per token plus attention over the window.
Both are computed here and set against this machine's measured matmul rate and read bandwidth.
The half not being timed is built with one layer per stage, so the released model (7 GB) is
never resident at once.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from cat_jax import CAT, CATConfig  # noqa: E402
from cat_jax import streaming as st  # noqa: E402
from cat_jax.config import PatchSpec  # noqa: E402
from cat_jax.stream_state import (cache_capacity, init_decoder_state, init_encoder_state, stage_rates,  # noqa: E402
                                  state_bytes)

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = {"tiny": os.path.join(HERE, "..", "tests", "data", "golden_tiny", "config.json"),
         "released": os.path.join(HERE, "..", "tests", "data", "released", "config.json")}


def _load(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def config_100m() -> dict:
  """The released layout at about 100 M parameters: widths halved-ish, 6 layers per stage."""
  raw = _load(PATHS["released"])
  for side in ("encoder_kwargs", "decoder_kwargs"):
    for m in raw[side]:
      if m["module_type"] == "Transformer":
        d = {768: 384, 1280: 512}[m["d_model"]]
        m.update(d_model=d, num_heads=d // 64, dim_feedforward=4 * d, num_layers=6)
  return raw


def raw_config(name: str) -> dict:
  return config_100m() if name == "100m" else _load(PATHS.get(name, name))


def light(raw: dict, side: str) -> dict:
  """A copy whose `side` ('encoder_kwargs' | 'decoder_kwargs') keeps one layer per stage."""
  raw = json.loads(json.dumps(raw))
  for m in raw[side]:
    if m["module_type"] == "Transformer":
      m["num_layers"] = 1
  return raw


def half_costs(cfg: CATConfig, part: str) -> dict:
  """Per stream and step of one frame: weight count read, FLOPs (matmuls + windowed attention)."""
  specs = cfg.encoder if part == "encode" else cfg.decoder
  rates = stage_rates(specs, part == "encode", cfg.downsample_rate)
  weights = flops = 0
  for s, n in zip(specs, rates):
    if isinstance(s, PatchSpec):
      continue
    d, ffw = s.d_model, (2 * s.d_model * s.dim_feedforward if s.gating == "none"
                         else 3 * s.d_model * s.ffn_hidden)
    w = s.num_layers * (4 * d * d + ffw + 4 * d)
    w += (s.input_dimension != d) * s.input_dimension * d + (s.output_dimension != d) * d * s.output_dimension
    weights += w
    flops += 2 * n * w + s.num_layers * 4 * d * (cache_capacity(s) + n) * n
  q = cfg.quantizer
  qw = q.input_dim * q.rvq_dim + q.rvq_dim * q.output_dim + q.num_quantizers * (
      2 * q.rvq_dim * q.codebook_dim + q.codebook_size * q.codebook_dim)
  return {"weights": weights + qw, "flops": flops + 2 * qw}


def calibrate(seconds: float = 2.0) -> dict:
  """This machine's float32 matmul rate (FLOP/s) and read bandwidth (bytes/s), best of a few runs."""
  a = jnp.ones((1024, 1024), jnp.float32)
  mm = jax.jit(lambda x: x @ x)
  big = jnp.ones((64 * 1024 * 1024,), jnp.float32)  # 256 MB
  rd = jax.jit(lambda x: jnp.sum(x))
  jax.block_until_ready((mm(a), rd(big)))

  def best(fn, arg):
    ts, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(ts) < 3:
      t0 = time.perf_counter()
      jax.block_until_ready(fn(arg))
      ts.append(time.perf_counter() - t0)
    return min(ts)

  return {"flop_per_s": 2 * 1024 ** 3 / best(mm, a), "bytes_per_s": big.size * 4 / best(rd, big)}


def mem_available() -> float:
  with open("/proc/meminfo") as f:
    for line in f:
      if line.startswith("MemAvailable"):
        return int(line.split()[1]) * 1024
  return float("inf")


def time_steps(step, state, args, budget_s: float, max_steps: int, warmup: int = 2):
  """Runs `state, out = step(state, *args)` repeatedly; returns per-step seconds after warm-up."""
  for _ in range(warmup):
    state, out = step(state, *args)
    jax.block_until_ready(out)
  times, end = [], time.perf_counter() + budget_s
  while len(times) < max_steps and (time.perf_counter() < end or len(times) < 5):
    t0 = time.perf_counter()
    state, out = step(state, *args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
  return times


def bench_part(name: str, part: str, streams: list[int], budget_s: float, max_steps: int, mem_margin: float):
  """Times one half of a configuration for each B; yields result rows."""
  raw = raw_config(name)
  full = CATConfig.from_dict(raw)
  model = CAT.from_config(light(raw, "decoder_kwargs" if part == "encode" else "encoder_kwargs"))
  cfg = model.config
  costs = half_costs(full, part)
  params_bytes = costs["weights"] * 4
  rng = np.random.default_rng(0)
  steps = st.steps_for(model.graphdef)
  for b in streams:
    init = init_encoder_state if part == "encode" else init_decoder_state
    per_stream = state_bytes(jax.eval_shape(lambda: init(cfg, 1)))
    need = per_stream * b  # the state, updated in place (donated)
    if need > mem_available() - mem_margin:
      yield {"config": name, "part": part, "streams": b, "skipped": f"needs ~{need / 2**30:.1f} GiB for caches, "
             f"{mem_available() / 2**30:.1f} GiB available"}
      continue
    state = init(cfg, b)
    if part == "encode":
      frame = jnp.asarray(rng.normal(size=(b, cfg.downsample_rate, cfg.channels)).astype(np.float32) * 0.1)

      def step(s, x):
        s, codes, _ = steps.encode(model.params, s, x, n_q=None)
        return s, codes
      args = (frame,)
    else:
      codes = jnp.asarray(rng.integers(0, cfg.codebook_size, (cfg.num_quantizers, b, 1)), jnp.int32)

      def step(s, c):
        return steps.decode(model.params, s, c)
      args = (codes,)
    t0 = time.perf_counter()
    times = time_steps(step, state, args, budget_s, max_steps)
    del state
    wall = time.perf_counter() - t0
    yield {"config": name, "part": part, "streams": b, "steps": len(times),
           "median_s": statistics.median(times), "p99_s": float(np.percentile(times, 99)),
           "weights_bytes": params_bytes, "cache_bytes": per_stream * b, "gflop": costs["flops"] * b / 1e9,
           "params_half": costs["weights"], "wall_s": wall}


def report(rows: list[dict], cal: dict, frame_s: float) -> list[dict]:
  """Joins encode and decode rows into one line per (config, B) with the bound analysis."""
  out = []
  keys = sorted({(r["config"], r["streams"]) for r in rows}, key=lambda k: (list(dict.fromkeys(
      r["config"] for r in rows)).index(k[0]), k[1]))
  print(f"machine: {cal['flop_per_s'] / 1e9:.1f} GFLOP/s matmul, {cal['bytes_per_s'] / 1e9:.1f} GB/s read; "
        f"frame {frame_s * 1e3:.0f} ms; load {os.getloadavg()[0]:.1f}")
  print(f"{'config':9} {'B':>3} {'part':6} {'med ms':>8} {'p99 ms':>8} {'GFLOP':>7} {'GB read':>8} "
        f"{'t_flop':>7} {'t_mem':>7} bound")
  for name, b in keys:
    parts = {r["part"]: r for r in rows if r["config"] == name and r["streams"] == b}
    total = 0.0
    for part in ("encode", "decode"):
      r = parts.get(part)
      if r is None:
        continue
      if "skipped" in r:
        print(f"{name:9} {b:>3} {part:6} skipped: {r['skipped']}")
        total = float("nan")
        continue
      gb = (r["weights_bytes"] + r["cache_bytes"]) / 1e9  # weights and caches read once (writes: T slots)
      t_flop = r["gflop"] * 1e9 / cal["flop_per_s"]
      t_mem = gb * 1e9 / cal["bytes_per_s"]
      bound = "memory" if t_mem > t_flop else "compute"
      if max(t_mem, t_flop) < 0.25 * r["median_s"]:  # neither explains the time: per-step dispatch dominates
        bound = "copies/overhead"
      r.update(gb_read=gb, t_flop_s=t_flop, t_mem_s=t_mem, bound=bound)
      print(f"{name:9} {b:>3} {part:6} {r['median_s'] * 1e3:8.2f} {r['p99_s'] * 1e3:8.2f} {r['gflop']:7.2f} "
            f"{gb:8.3f} {t_flop * 1e3:6.1f}m {t_mem * 1e3:6.1f}m {r['bound']}")
      total += r["median_s"]
    if len(parts) == 2 and total == total:
      rt = total <= frame_s
      print(f"{name:9} {b:>3} enc+dec {total * 1e3:7.2f} ms per {frame_s * 1e3:.0f} ms frame: "
            f"{b * frame_s / total:.2f}x real time in aggregate, {'REAL-TIME' if rt else 'not real-time'}")
      out.append({"config": name, "streams": b, "enc_dec_s": total, "realtime": rt,
                  "aggregate_realtime_factor": b * frame_s / total})
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--configs", default="tiny,100m,released", help="comma list of tiny | 100m | released | config path")
  p.add_argument("--streams", default="1,8,64", help="comma list of concurrent stream counts")
  p.add_argument("--parts", default="encode,decode")
  p.add_argument("--budget", type=float, default=8.0, help="seconds of timed steps per case (at least 5 steps)")
  p.add_argument("--max-steps", type=int, default=200)
  p.add_argument("--mem-margin-gb", type=float, default=2.0, help="skip a case that would leave less free memory")
  p.add_argument("--json", default=None, help="also write all rows here")
  a = p.parse_args()
  streams = [int(s) for s in a.streams.split(",")]
  cal = calibrate()
  rows = []
  for name in a.configs.split(","):
    for part in a.parts.split(","):
      t0 = time.perf_counter()
      for r in bench_part(name, part, streams, a.budget, a.max_steps, a.mem_margin_gb * 2**30):
        rows.append(r)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
      print(f"# {name} {part}: {time.perf_counter() - t0:.0f} s including model build and compiles", flush=True)
  summary = report(rows, cal, 1.0 / CATConfig.from_dict(raw_config(a.configs.split(",")[0])).frame_rate)
  if a.json:
    with open(a.json, "w") as f:
      json.dump({"machine": cal, "rows": rows, "summary": summary, "jax": jax.__version__,
                 "backend": jax.default_backend()}, f, indent=1)


if __name__ == "__main__":
  main()
