"""Times offline encode and decode of a clip with a CAT configuration (random weights).

  .venv/bin/python bench/bench_codec.py --config released --seconds 5.07

Reports compile time, steady-state seconds (median of --repeats), real-time factor, the
FLOPs XLA counts per call and the weight bytes each call must read, so the result can be
placed against this machine's compute and memory limits: the rate of the codec's largest
matmul, and the limit shape by shape (every weight matmul at the best rate XLA reaches at its
own shape, measured in the same run).
"""
from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from cat_jax import CAT, CATConfig  # noqa: E402
from cat_jax.codec import bucket, decode_fn, encode_fn, on_one_cpu, unrolled  # noqa: E402
from cat_jax.config import TransformerSpec  # noqa: E402
from cat_jax.stream_state import stage_rates  # noqa: E402
from bench_train_step import matmul_peak  # noqa: E402  (bench/ is on sys.path: the script's own folder)

CONFIGS = {
    "released": os.path.join(os.path.dirname(__file__), "..", "tests", "data", "released", "config.json"),
    "tiny": os.path.join(os.path.dirname(__file__), "..", "tests", "data", "golden_tiny", "config.json"),
}


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, list):
    cost = cost[0]
  return float(cost.get("flops", float("nan"))) if cost else float("nan")


def largest_matmul(cfg: CATConfig, seconds: float) -> tuple[int, int, int]:
  """(tokens, d, ffn): the feed-forward matmul of the encoder stage with the most weight FLOPs
  on a clip of `seconds`, the shape whose best rate is this codec's matmul limit."""
  frames = seconds * cfg.sampling_rate / cfg.downsample_rate
  stages = [(round(frames * r), m) for m, r in zip(cfg.encoder, stage_rates(cfg.encoder, True, cfg.downsample_rate))
            if isinstance(m, TransformerSpec)]
  tokens, m = max(stages, key=lambda s: s[0] * s[1].num_layers * s[1].d_model * s[1].ffn_hidden)
  return tokens, m.d_model, m.ffn_hidden


def matmul_shapes(cfg: CATConfig, seconds: float) -> collections.Counter:
  """{(m, k, n): count} of the weight matmuls of one offline encode + decode of a clip of
  `seconds` (frames bucketed as CAT pads them): per Transformer stage its projections, q/k/v,
  attention output and feed-forward products, once per layer."""
  frames = bucket(-(-int(round(seconds * cfg.sampling_rate)) // cfg.downsample_rate))
  shapes = collections.Counter()
  for specs, down in ((cfg.encoder, True), (cfg.decoder, False)):
    rates = stage_rates(specs, down, cfg.downsample_rate)
    for m, r in zip(specs, rates):
      if not isinstance(m, TransformerSpec):
        continue
      n, d = frames * r, m.d_model  # r: this stage's tokens per token frame
      hidden = m.dim_feedforward if m.gating == "none" else m.ffn_hidden
      per_layer = [(n, d, 3 * d), (n, d, d), (n, d, hidden if m.gating == "none" else 2 * hidden), (n, hidden, d)]
      for shape in per_layer:
        shapes[shape] += m.num_layers
      if m.has_input_proj:
        shapes[(n, m.input_dimension, d)] += 1
      if m.has_output_proj:
        shapes[(n, d, m.output_dimension)] += 1
  return shapes


def bench(model: CAT, params, seconds: float, repeats: int, dtype, unroll: bool) -> dict:
  cfg = model.config
  t = int(round(seconds * cfg.sampling_rate))
  frames = -(-t // cfg.downsample_rate)
  fb = bucket(frames)
  audio = np.zeros((1, fb * cfg.downsample_rate, cfg.channels), np.float32)
  audio[0, :t, :] = np.random.default_rng(0).normal(size=(t, cfg.channels)).astype(np.float32) * 0.1
  lengths = jnp.array([t], jnp.int32)
  unroll = unroll and on_one_cpu(params)
  graphdef, params = unrolled(model.graphdef, params) if unroll else (model.graphdef, params)
  out = {"unrolled": unroll}
  t0 = time.perf_counter()
  enc = jax.jit(functools.partial(encode_fn, graphdef), static_argnames=("n_q", "dtype")).lower(
      params, audio, lengths, n_q=cfg.num_quantizers, dtype=dtype).compile()
  out["encode_compile_s"] = time.perf_counter() - t0
  out["encode_gflops"] = _flops(enc) / 1e9
  codes = jax.block_until_ready(enc(params, audio, lengths))[0]
  flen = jnp.array([frames], jnp.int32)
  t0 = time.perf_counter()
  dec = jax.jit(functools.partial(decode_fn, graphdef), static_argnames=("dtype",)).lower(
      params, codes, flen, dtype=dtype).compile()
  out["decode_compile_s"] = time.perf_counter() - t0
  out["decode_gflops"] = _flops(dec) / 1e9
  for name, fn, args in (("encode", enc, (params, audio, lengths)), ("decode", dec, (params, codes, flen))):
    jax.block_until_ready(fn(*args))  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t0)
      cpu.append(time.process_time() - c0)
    s = statistics.median(times)
    out[f"{name}_cpu_s"] = statistics.median(cpu)  # CPU seconds over all threads: steadier on a busy machine
    out[f"{name}_s"] = s
    out[f"{name}_rtf"] = s / seconds
    out[f"{name}_gflop_per_s"] = out[f"{name}_gflops"] / s
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--config", default="released", help="released | tiny | path to config.json")
  p.add_argument("--seconds", type=float, default=5.07)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--dtypes", default="float32,bfloat16")
  p.add_argument("--json", default=None, help="also write the results here")
  p.add_argument("--scan", action="store_true", help="scan the stacked layers (the accelerator path) instead of "
                 "running them unrolled on per-layer views (what CAT does on a CPU)")
  a = p.parse_args()
  cfg = CATConfig.from_json(CONFIGS.get(a.config, a.config))
  t0 = time.perf_counter()
  model = CAT.from_config(cfg, seed=0)
  jax.block_until_ready(model.params)
  init_s = time.perf_counter() - t0
  n = model.num_params
  enc_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(model.params["encoder"]))
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
        f"{jax.devices()[0].platform}, load {os.getloadavg()[0]:.1f}; layers {'scanned' if a.scan else 'unrolled'}")
  print(f"config: {a.config}, {n:,} parameters ({n * 4 / 2**30:.2f} GiB float32), init {init_s:.1f} s; "
        f"clip {a.seconds} s")
  results = {"config": a.config, "params": n, "seconds": a.seconds}
  for name in a.dtypes.split(","):
    dtype = jnp.dtype(name)
    params = model.params if dtype == jnp.float32 else jax.tree.map(lambda x: x.astype(dtype), model.params)
    r = bench(model, params, a.seconds, a.repeats, None if dtype == jnp.float32 else dtype, not a.scan)
    wbytes = enc_params * dtype.itemsize
    print(f"[{name}] encode: compile {r['encode_compile_s']:.1f} s, {r['encode_s']:.3f} s "
          f"(RTF {r['encode_rtf']:.3f}), {r['encode_gflops']:.0f} GFLOP -> {r['encode_gflop_per_s']:.0f} GFLOP/s, "
          f"weights read {wbytes / 2**30:.2f} GiB -> {wbytes / r['encode_s'] / 2**30:.1f} GiB/s; "
          f"{r['encode_cpu_s']:.2f} CPU-s")
    print(f"[{name}] decode: compile {r['decode_compile_s']:.1f} s, {r['decode_s']:.3f} s "
          f"(RTF {r['decode_rtf']:.3f}), {r['decode_gflops']:.0f} GFLOP -> {r['decode_gflop_per_s']:.0f} GFLOP/s; "
          f"{r['decode_cpu_s']:.2f} CPU-s")
    shape = largest_matmul(cfg, a.seconds)
    r["matmul_limit_gflop_per_s"] = matmul_peak(1.5, dtype, shape=shape) / 1e9
    total_s, total_gflop = r["encode_s"] + r["decode_s"], r["encode_gflops"] + r["decode_gflops"]
    both = total_gflop / total_s
    print(f"[{name}] matmul limit at the codec's largest shape ({shape[0]}, {shape[1]}) @ ({shape[1]}, {shape[2]}): "
          f"{r['matmul_limit_gflop_per_s']:.0f} GFLOP/s; encode+decode at {both:.0f} GFLOP/s = "
          f"{100 * both / r['matmul_limit_gflop_per_s']:.0f}% of it")
    # The limit shape by shape: every weight matmul at the best rate XLA reaches at its own shape
    # (the 12.5 Hz stage multiplies 64 tokens at a time, slower than 512), the rest at the largest's.
    shapes = matmul_shapes(cfg, a.seconds)
    limit_s, mm_gflop = 0.0, 0.0
    for (m, k, n), count in sorted(shapes.items()):
      gflop = 2 * m * k * n * count / 1e9
      limit_s += gflop / (matmul_peak(0.3, dtype, shape=(m, k, n)) / 1e9)
      mm_gflop += gflop
    limit_s += max(total_gflop - mm_gflop, 0.0) / r["matmul_limit_gflop_per_s"]
    r["shape_limit_s"] = limit_s
    print(f"[{name}] limit shape by shape ({len(shapes)} weight-matmul shapes, {mm_gflop:.0f} of the "
          f"{total_gflop:.0f} GFLOP, each at its best XLA rate; the rest at the largest's): {limit_s:.3f} s "
          f"for encode+decode; measured {total_s:.3f} s = {100 * limit_s / total_s:.0f}% of the limit")
    results[name] = r
    del params
  if a.json:
    with open(a.json, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
