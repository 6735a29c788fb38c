"""Offline preparation: decode, resample and channel-map a source once, into ArrayRecord shards
(+ info.json) that `arrayrecord:OUT` reads fast (`cat-jax prepare`, see cat_jax.cli.data)."""
from __future__ import annotations

import json
import os

import grain

from cat_jax.data import records, sources as sources_lib
from cat_jax.data.pipeline import DataStats, decoded_dataset
from cat_jax.errors import ConfigError

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
