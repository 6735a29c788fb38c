"""Throughput of the full data pipeline (decode, resample, mix, normalise, crop, tokenise, batch) on
the offline corpus with 0, 1 and 2 worker processes: clips/s and seconds of audio per second.

  .venv/bin/python bench/bench_data.py [--corpus DIR] [--batches 30] [--batch-size 16] [--segment 1.0]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def run(spec: str, workers: int, args) -> dict:
  from cat_jax.data import make_iterator
  sr = args.sample_rate
  t0 = time.perf_counter()
  it = make_iterator(spec, sample_rate=sr, channels=args.channels, segment_samples=int(args.segment * sr),
                     batch_size=args.batch_size, seed=0, max_text_len=256, num_workers=workers,
                     gain_db=(-6.0, 6.0))
  next(it)  # start-up: worker processes, first batch
  start = time.perf_counter() - t0
  t0, clips, samples = time.perf_counter(), 0, 0
  for _ in range(args.batches):
    b = next(it)
    clips += len(b["lengths"])
    samples += int(b["lengths"].sum())
  dt = time.perf_counter() - t0
  it.close()
  return {"workers": workers, "startup_s": start, "clips_s": clips / dt, "audio_s_s": samples / sr / dt}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--corpus", help="corpus folder (default: build one in a temp dir)")
  p.add_argument("--batches", type=int, default=30)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--segment", type=float, default=1.0, help="segment seconds")
  p.add_argument("--sample-rate", type=int, default=24000)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--workers", default="0,1,2")
  p.add_argument("--arrayrecord", action="store_true", help="also time the prepared ArrayRecord source")
  args = p.parse_args()
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  from cat_jax.data import build_corpus, prepare
  with tempfile.TemporaryDirectory() as tmp:
    corpus = args.corpus
    if corpus is None:
      t0 = time.perf_counter()
      corpus = os.path.join(tmp, "corpus")
      build_corpus(corpus, seconds_of_speech=60)
      print(f"built corpus in {time.perf_counter() - t0:.1f} s")
    specs = ["folder:" + corpus]
    if args.arrayrecord:
      info = prepare("folder:" + corpus, os.path.join(tmp, "ar"), shards=2, sample_rate=args.sample_rate,
                     channels=args.channels)
      specs.append("arrayrecord:" + os.path.join(tmp, "ar"))
      print(f"prepared {info['num_records']} clips, {info['seconds']:.0f} s of audio")
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} batch={args.batch_size} "
          f"segment={args.segment}s sr={args.sample_rate} channels={args.channels} batches={args.batches}")
    print(f"{'source':<12} {'workers':>7} {'start s':>8} {'clips/s':>8} {'audio s/s':>10}")
    for spec in specs:
      for w in (int(x) for x in args.workers.split(",")):
        r = run(spec, w, args)
        print(f"{spec.split(':')[0]:<12} {w:>7} {r['startup_s']:>8.1f} {r['clips_s']:>8.1f} {r['audio_s_s']:>10.1f}")


if __name__ == "__main__":
  main()
