"""Per-chunk latency and throughput of streaming encode/decode, one 80 ms frame per step.

  .venv/bin/python bench/bench_streaming.py --configs tiny,100m,released --streams 1,8,64

For each configuration (random weights) and number of concurrent streams B, times the jitted
encoder step (B frames of audio -> codes) and decoder step (B frames of codes -> audio) after
warm-up: median and p99 seconds per step, the B streams split into shards whose calls run at once
on threads as cat_jax.stream_engine.StreamEngine runs them (--shards; default one per core when
that divides B). A configuration is real-time for B streams when encode + decode of one frame for
all B streams takes less than one frame (80 ms).

What bounds a step: every step reads all weights of its half once (independent of B) and each
stream's KV caches once (ring buffers: only the new frames are written, in place); it computes
2 FLOPs per weight per token plus attention over the window.
Both are computed here and set against this machine's measured matmul rate and read bandwidth.
The half not being timed is built with one layer per stage, so the released model (7 GB) is
never resident at once. `--pipeline` also times the step of StreamEngine(pipeline=True): each
shard's encoder call and its decoder call (of the step before's codes) at once on threads, the
whole model resident, against the same bound.

  .venv/bin/python bench/bench_streaming.py --configs tiny --poisson 4 --streams 8 --arrivals 16

`--poisson RATE` serves instead a server-like load through cat_jax.stream_engine.StreamEngine
(capacity: the first --streams value, --chunk-frames frames per step): streams arrive as a
Poisson process of RATE per second, each --duration seconds long and pushed in real time, one
--push-ms piece at a time, then ended. Prints the latency from the push that completes a frame to
its codes being ready (p50/p99) and the time per engine step (encode + decode of all slots).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from cat_jax import CAT, CATConfig  # noqa: E402
from cat_jax import streaming as st  # noqa: E402
from cat_jax.config import PatchSpec  # noqa: E402
from cat_jax.stream_engine import default_shards  # noqa: E402
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


def time_steps(step, states: list, args, budget_s: float, max_steps: int, warmup: int = 2):
  """Runs `state, out = step(state, *args)` for every shard's state at once (threads, as
  StreamEngine runs its shards) repeatedly; returns per-step seconds after warm-up."""
  pool = ThreadPoolExecutor(len(states))

  def one(state):
    state, out = step(state, *args)
    jax.block_until_ready(out)
    return state

  for _ in range(warmup):
    states = list(pool.map(one, states))
  times, end = [], time.perf_counter() + budget_s
  while len(times) < max_steps and (time.perf_counter() < end or len(times) < 5):
    t0 = time.perf_counter()
    states = list(pool.map(one, states))
    times.append(time.perf_counter() - t0)
  pool.shutdown()
  return times


def bench_part(name: str, part: str, streams: list[int], budget_s: float, max_steps: int, mem_margin: float,
               shards: int | None = None):
  """Times one half of a configuration for each B, its streams in `shards` program calls at once
  (None: StreamEngine's default); yields result rows."""
  raw = raw_config(name)
  full = CATConfig.from_dict(raw)
  model = CAT.from_config(light(raw, "decoder_kwargs" if part == "encode" else "encoder_kwargs"))
  cfg = model.config
  costs = half_costs(full, part)
  params_bytes = costs["weights"] * 4
  rng = np.random.default_rng(0)
  steps = st.steps_for(model)
  for b in streams:
    init = init_encoder_state if part == "encode" else init_decoder_state
    per_stream = state_bytes(jax.eval_shape(lambda: init(cfg, 1)))
    need = per_stream * b  # the state, updated in place (donated)
    if need > mem_available() - mem_margin:
      yield {"config": name, "part": part, "streams": b, "skipped": f"needs ~{need / 2**30:.1f} GiB for caches, "
             f"{mem_available() / 2**30:.1f} GiB available"}
      continue
    n = shards or default_shards(b)
    if b % n:
      raise SystemExit(f"--shards {n} does not divide {b} streams")
    states = [init(cfg, b // n) for _ in range(n)]
    if part == "encode":
      frame = jnp.asarray(rng.normal(size=(b // n, cfg.downsample_rate, cfg.channels)).astype(np.float32) * 0.1)

      def step(s, x):
        s, codes, _ = steps.encode(s, x, n_q=None)
        return s, codes
      args = (frame,)
    else:
      codes = jnp.asarray(rng.integers(0, cfg.codebook_size, (cfg.num_quantizers, b // n, 1)), jnp.int32)

      def step(s, c):
        return steps.decode(s, c)
      args = (codes,)
    t0 = time.perf_counter()
    times = time_steps(step, states, args, budget_s, max_steps)
    del states
    wall = time.perf_counter() - t0
    yield {"config": name, "part": part, "streams": b, "shards": n, "steps": len(times),
           "median_s": statistics.median(times), "p99_s": float(np.percentile(times, 99)),
           "weights_bytes": params_bytes, "cache_bytes": per_stream * b, "gflop": costs["flops"] * b / 1e9,
           "params_half": costs["weights"], "wall_s": wall}


def bench_pipelined(name: str, streams: list[int], budget_s: float, max_steps: int, shards: int | None = None):
  """Times the pipelined StreamEngine's step (`pipeline=True`): every shard's encoder call and its
  decoder call (of the step before's codes) at once on threads, with the whole model; yields rows."""
  model = CAT.from_config(raw_config(name))
  cfg = model.config
  steps = st.steps_for(model)
  rng = np.random.default_rng(0)
  for b in streams:
    n = shards or default_shards(b, pipeline=True)
    enc = [init_encoder_state(cfg, b // n) for _ in range(n)]
    dec = [init_decoder_state(cfg, b // n) for _ in range(n)]
    frame = jnp.asarray(rng.normal(size=(b // n, cfg.downsample_rate, cfg.channels)).astype(np.float32) * 0.1)
    codes = jnp.asarray(rng.integers(0, cfg.codebook_size, (cfg.num_quantizers, b // n, 1)), jnp.int32)

    def step(state, _):
      kind, s = state
      if kind == "e":
        s, out, _ = steps.encode(s, frame, n_q=None)
      else:
        s, out = steps.decode(s, codes)
      return (kind, s), out

    times = time_steps(step, [("e", s) for s in enc] + [("d", s) for s in dec], (None,), budget_s, max_steps)
    yield {"config": name, "part": "pipelined", "streams": b, "shards": n, "steps": len(times),
           "median_s": statistics.median(times), "p99_s": float(np.percentile(times, 99))}


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
    piped = parts.pop("pipelined", None)
    total = limit = 0.0
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
      limit += max(t_flop, t_mem)
    if len(parts) == 2 and total == total:
      rt = total <= frame_s
      shards = parts["encode"]["shards"]
      print(f"{name:9} {b:>3} enc+dec {total * 1e3:7.2f} ms per {frame_s * 1e3:.0f} ms frame ({shards} shard"
            f"{'s' if shards > 1 else ''}), bound {limit * 1e3:.1f} ms: {total / limit:.1f}x the bound; "
            f"{b * frame_s / total:.2f}x real time in aggregate, {'REAL-TIME' if rt else 'not real-time'}")
      out.append({"config": name, "streams": b, "shards": shards, "enc_dec_s": total, "bound_s": limit,
                  "ratio": total / limit, "realtime": rt, "aggregate_realtime_factor": b * frame_s / total})
      if piped is not None:
        t = piped["median_s"]
        print(f"{name:9} {b:>3} pipelined {t * 1e3:7.2f} ms per frame (encoder and decoder calls at once, "
              f"StreamEngine(pipeline=True)), p99 {piped['p99_s'] * 1e3:.2f} ms: {t / limit:.1f}x the bound; "
              f"{b * frame_s / t:.2f}x real time in aggregate")
        out[-1].update(pipelined_s=t, pipelined_ratio=t / limit)
  return out


def poisson_serve(name: str, rate: float, capacity: int, k: int, arrivals: int, duration: float,
                  push_ms: float, seed: int = 0, pipeline: bool = False) -> dict:
  """Serves `arrivals` streams arriving at `rate` per second (wall clock) through one StreamEngine;
  returns the latency and step-time statistics."""
  from cat_jax.stream_engine import StreamEngine
  model = CAT.from_config(raw_config(name))
  cfg = model.config
  sr, dr = cfg.sampling_rate, cfg.downsample_rate
  eng = StreamEngine(model, capacity, chunk_frames=k, pipeline=pipeline)
  rng = np.random.default_rng(seed)
  t0 = time.perf_counter()  # warm-up: compiles the one program
  w = eng.open()
  eng.push(w, np.zeros((cfg.channels, k * dr), np.float32))
  eng.close(w)
  compile_s = time.perf_counter() - t0
  n = int(round(duration * sr))
  piece = max(1, int(round(push_ms / 1000 * sr)))
  starts = np.cumsum(rng.exponential(1.0 / rate, arrivals))
  events = []  # (time, order, stream, kind, a, b)
  for i, t in enumerate(starts):
    events.append((t, 0, i, "open", 0, 0))
    for j in range(-(-n // piece)):
      a, b = j * piece, min(n, (j + 1) * piece)
      events.append((t + b / sr, 1, i, "push", a, b))  # a piece is pushed once it has been "heard"
    events.append((t + n / sr, 2, i, "end", 0, 0))
  events.sort()
  audio = (rng.normal(size=(cfg.channels, n)) * 0.1).astype(np.float32)
  sid, pushes, got, lat, step_s, rejected = {}, {}, {}, [], [], 0
  ev, start = 0, time.perf_counter()

  def collect(i, codes):
    f0 = got[i]
    got[i] += codes.shape[-1]
    now = time.perf_counter() - start
    ends, times = pushes[i]
    for f in range(f0, got[i]):  # the push that brought the frame's last sample
      lat.append(now - times[int(np.searchsorted(ends, min((f + 1) * dr, n)))])

  while ev < len(events) or eng.streams:
    now = time.perf_counter() - start
    while ev < len(events) and events[ev][0] <= now:
      t, _, i, kind, a, b = events[ev]
      ev += 1
      if kind == "open":
        if eng.free_slots:
          sid[i], pushes[i], got[i] = eng.open(), ([], []), 0
        else:
          rejected += 1
      elif i in sid and kind == "push":
        eng.push(sid[i], audio[:, a:b])
        pushes[i][0].append(b)
        pushes[i][1].append(t)
      elif i in sid:
        eng.end(sid[i])
    if eng.ready():
      t1 = time.perf_counter()
      eng.step()
      step_s.append(time.perf_counter() - t1)
      for i, s in list(sid.items()):
        collect(i, eng.pull_codes(s))
        eng.pull_audio(s)
        if eng.done(s):
          eng.close(s)
          del sid[i]
    elif ev < len(events):
      time.sleep(max(0.0, min(events[ev][0] - (time.perf_counter() - start), 0.01)))
  wall = time.perf_counter() - start
  served = arrivals - rejected
  return {"config": name, "mode": "poisson", "pipeline": pipeline, "rate_per_s": rate, "capacity": capacity, "chunk_frames": k,
          "arrivals": arrivals, "rejected": rejected, "duration_s": duration, "push_ms": push_ms,
          "compile_s": compile_s, "wall_s": wall, "steps": len(step_s), "frames": len(lat),
          "step_p50_s": float(np.percentile(step_s, 50)) if step_s else None,
          "step_p99_s": float(np.percentile(step_s, 99)) if step_s else None,
          "latency_p50_s": float(np.percentile(lat, 50)) if lat else None,
          "latency_p99_s": float(np.percentile(lat, 99)) if lat else None,
          "audio_s_served": served * duration, "load": os.getloadavg()[0]}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--configs", default="tiny,100m,released", help="comma list of tiny | 100m | released | config path")
  p.add_argument("--streams", default="1,8,64", help="comma list of concurrent stream counts")
  p.add_argument("--parts", default="encode,decode")
  p.add_argument("--budget", type=float, default=8.0, help="seconds of timed steps per case (at least 5 steps)")
  p.add_argument("--max-steps", type=int, default=200)
  p.add_argument("--shards", type=int, default=None, help="program calls per step, run at once on threads "
                 "(default: StreamEngine's, one per core when that divides the streams)")
  p.add_argument("--mem-margin-gb", type=float, default=2.0, help="skip a case that would leave less free memory")
  p.add_argument("--json", default=None, help="also write all rows here")
  p.add_argument("--pipeline", action="store_true", help="also time the pipelined engine's step (encoder and "
                 "decoder calls at once, the whole model resident)")
  p.add_argument("--poisson", type=float, default=None, metavar="RATE",
                 help="serve streams arriving at RATE per second through a StreamEngine instead")
  p.add_argument("--arrivals", type=int, default=16, help="--poisson: streams in all")
  p.add_argument("--duration", type=float, default=2.0, help="--poisson: seconds of audio per stream")
  p.add_argument("--push-ms", type=float, default=80.0, help="--poisson: audio per push, ms")
  p.add_argument("--chunk-frames", type=int, default=1, help="--poisson: frames per stream and engine step")
  a = p.parse_args()
  streams = [int(s) for s in a.streams.split(",")]
  if a.poisson is not None:
    rows = []
    for name in a.configs.split(","):
      r = poisson_serve(name, a.poisson, streams[0], a.chunk_frames, a.arrivals, a.duration, a.push_ms,
                        pipeline=a.pipeline)
      rows.append(r)
      print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
      ms = (lambda v: float("nan") if v is None else v * 1e3)
      print(f"{name}: {r['arrivals'] - r['rejected']}/{r['arrivals']} streams served ({r['rejected']} rejected, "
            f"capacity {r['capacity']}), {r['steps']} steps, step p50 {ms(r['step_p50_s']):.2f} ms "
            f"p99 {ms(r['step_p99_s']):.2f} ms; push->codes latency p50 {ms(r['latency_p50_s']):.1f} ms "
            f"p99 {ms(r['latency_p99_s']):.1f} ms over {r['frames']} frames; load {r['load']:.1f}", flush=True)
    if a.json:
      with open(a.json, "w") as f:
        json.dump({"rows": rows, "jax": jax.__version__, "backend": jax.default_backend()}, f, indent=1)
    return
  cal = calibrate()
  rows = []
  for name in a.configs.split(","):
    for part in a.parts.split(","):
      t0 = time.perf_counter()
      for r in bench_part(name, part, streams, a.budget, a.max_steps, a.mem_margin_gb * 2**30, a.shards):
        rows.append(r)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
      print(f"# {name} {part}: {time.perf_counter() - t0:.0f} s including model build and compiles", flush=True)
    if a.pipeline:
      for r in bench_pipelined(name, streams, a.budget, a.max_steps, a.shards):
        rows.append(r)
        print(json.dumps({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
  summary = report(rows, cal, 1.0 / CATConfig.from_dict(raw_config(a.configs.split(",")[0])).frame_rate)
  if a.json:
    with open(a.json, "w") as f:
      json.dump({"machine": cal, "rows": rows, "summary": summary, "jax": jax.__version__,
                 "backend": jax.default_backend()}, f, indent=1)


if __name__ == "__main__":
  main()
