"""Offline preparation: decode, resample and channel-map a source once, into ArrayRecord shards
(+ info.json) that `arrayrecord:OUT` reads fast; and the `prepare` / `make-corpus` CLI subcommands."""
from __future__ import annotations

import argparse
import json
import os

import grain

from cat_jax.data import records, sources as sources_lib
from cat_jax.data.pipeline import DataStats, decoded_dataset
from cat_jax.errors import CATError, ConfigError

FORMAT = "cat_jax.audio_record.v1"
INFO_NAME = "info.json"


def shard_name(i: int, n: int) -> str:
  return f"data-{i:05d}-of-{n:05d}.array_record"


def prepare(src, out: str | os.PathLike, *, shards: int, sample_rate: int, channels: int, dtype: str = "int16",
            data_dir: str | None = None, min_seconds: float = 0.0, silence_db: float = -60.0,
            read_threads: int = 2) -> dict:
  """Writes every good clip of `src` (spec string or source) to `shards` shards in order, round-robin
  (clip k -> shard k % shards), skipping bad clips. Returns the description also written to info.json."""
  from array_record.python.array_record_module import ArrayRecordWriter
  if shards < 1:
    raise ConfigError(f"shards must be >= 1, got {shards}")
  if dtype not in records.DTYPES:
    raise ConfigError(f"dtype must be one of {records.DTYPES}, got {dtype!r}")
  source = sources_lib.open_source(src, data_dir=data_dir)
  out = os.fspath(out)
  os.makedirs(out, exist_ok=True)
  ds = decoded_dataset(source, sample_rate=sample_rate, channels=channels,
                       min_samples=max(1, int(min_seconds * sample_rate)), silence_db=silence_db)
  names = [shard_name(i, shards) for i in range(shards)]
  writers = [ArrayRecordWriter(os.path.join(out, n), "group_size:1") for n in names]
  counts, seconds, stats = [0] * shards, 0.0, DataStats()
  try:
    for ex in ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=16)):
      if "error" in ex:
        stats.add_bad(ex)
        continue
      k = stats.good % shards
      writers[k].write(records.pack(ex["audio"], sample_rate, text=ex["text"], task=ex["task"],
                                    path=ex["path"], dtype=dtype))
      counts[k] += 1
      stats.good += 1
      seconds += ex["audio"].shape[1] / sample_rate
  finally:
    for w in writers:
      w.close()
  info = {"format": FORMAT, "source": src if isinstance(src, str) else repr(source), "sample_rate": sample_rate,
          "channels": channels, "dtype": dtype, "num_records": stats.good, "seconds": round(seconds, 3),
          "shards": names, "records_per_shard": counts, "skipped": stats.bad,
          "skipped_examples": stats.bad_examples}
  with open(os.path.join(out, INFO_NAME), "w", encoding="utf-8") as f:
    json.dump(info, f, indent=1, ensure_ascii=False)
  return info


def _run_prepare(args: argparse.Namespace) -> int:
  try:
    info = prepare(args.src, args.out, shards=args.shards, sample_rate=args.sample_rate, channels=args.channels,
                   dtype=args.dtype, data_dir=args.data_dir)
  except CATError as e:
    print(f"error: {e}")
    return 2
  print(f"wrote {info['num_records']} clips ({info['seconds']:.1f} s) to {len(info['shards'])} shards in "
        f"{args.out}; skipped {sum(info['skipped'].values())} {info['skipped'] or ''}")
  return 0


def _run_make_corpus(args: argparse.Namespace) -> int:
  from cat_jax.data.corpus import build_corpus
  manifest = build_corpus(args.out, seconds_of_speech=args.seconds_of_speech, music_pieces=args.music_pieces,
                          seed=args.seed, recorded_max_files=args.recorded_max_files)
  with open(manifest, encoding="utf-8") as f:
    n = sum(1 for _ in f)
  print(f"wrote {n} clips and {manifest}")
  return 0


def register(subparsers) -> None:
  """Adds `prepare SRC OUT --shards N [--sample-rate --channels]` and `make-corpus OUT` to a CLI."""
  p = subparsers.add_parser("prepare", help="decode a source into ArrayRecord shards for training",
                            description=prepare.__doc__)
  p.add_argument("src", help="folder:PATH | tfds:NAME[:SPLIT] | arrayrecord:GLOB | a folder")
  p.add_argument("out", help="output folder (shards + info.json)")
  p.add_argument("--shards", type=int, default=1)
  p.add_argument("--sample-rate", type=int, default=24000)
  p.add_argument("--channels", type=int, default=1)
  p.add_argument("--dtype", choices=records.DTYPES, default="int16")
  p.add_argument("--data-dir", default=None, help="TFDS data_dir for tfds: sources")
  p.set_defaults(func=_run_prepare)
  c = subparsers.add_parser("make-corpus", help="build a real-audio corpus offline (espeak-ng, "
                            "alsa-utils, freedesktop sounds, fluidsynth music, asterisk recorded speech with "
                            "held-out splits)")
  c.add_argument("out")
  c.add_argument("--seconds-of-speech", type=float, default=60.0)
  c.add_argument("--music-pieces", type=int, default=6)
  c.add_argument("--seed", type=int, default=0)
  c.add_argument("--recorded-max-files", type=int, default=None,
                 help="at most this many asterisk recordings per language (default: all)")
  c.set_defaults(func=_run_make_corpus)
