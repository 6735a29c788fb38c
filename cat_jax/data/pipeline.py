"""The training input pipeline: source -> shard -> shuffle per epoch -> decode ... tokenize ->
(worker processes) -> skip and count bad clips -> batch.

    it = make_iterator("folder:/data/speech", sample_rate=24000, channels=1, segment_samples=24000,
                       batch_size=32, seed=0, max_text_len=128, num_workers=2,
                       shard_index=jax.process_index(), shard_count=jax.process_count())
    batch = next(it)   # numpy: audio (B, S, C) f32, lengths (B,) i32, text (B, L) i32, text_lengths (B,) i32
    state = it.get_state(); ...; it.set_state(state)   # resume exactly
    it.stats           # clips used, bad clips by reason, the first bad paths

Every random choice is a function of (seed, element index), so batches do not depend on the number
of workers; bad clips are dropped after the workers, in order, so batch composition does not either.
"""
from __future__ import annotations

import dataclasses
import logging

import grain
import numpy as np

from cat_jax.data import sources as sources_lib
from cat_jax.data import text as text_lib
from cat_jax.data import transforms as T
from cat_jax.errors import AudioError, ConfigError

BATCH_KEYS = ("audio", "lengths", "text", "text_lengths")
log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataStats:
  """Clips that went into batches, clips skipped by reason, and the first few skipped (path: why)."""
  good: int = 0
  bad: dict = dataclasses.field(default_factory=dict)
  bad_examples: list = dataclasses.field(default_factory=list)
  max_examples: int = 10

  @property
  def num_bad(self) -> int:
    return sum(self.bad.values())

  def add_bad(self, element: dict) -> None:
    reason = element["error"]
    self.bad[reason] = self.bad.get(reason, 0) + 1
    if len(self.bad_examples) < self.max_examples:
      msg = f"{element['path']}: {reason}" + (f" ({element['detail']})" if element.get("detail") else "")
      self.bad_examples.append(msg)
      log.warning("data: skipping bad clip %s", msg)

  def summary(self) -> str:
    by = ", ".join(f"{k}={v}" for k, v in sorted(self.bad.items())) or "none"
    return f"{self.good} clips used, {self.num_bad} skipped ({by})"

  def to_state(self) -> dict:
    return {"good": self.good, "bad": dict(self.bad), "bad_examples": list(self.bad_examples)}

  def load_state(self, s: dict) -> None:
    self.good, self.bad, self.bad_examples = int(s["good"]), dict(s["bad"]), list(s["bad_examples"])


class AudioIterator(grain.DatasetIterator):
  """Batches the examples of a grain iterator, skipping and counting error elements.
  State = the inner iterator's state + the counts, so a resumed run continues batch for batch."""

  def __init__(self, parent: grain.DatasetIterator, batch_size: int, epoch_size: int):
    super().__init__(parent)
    self.batch_size = batch_size
    self.epoch_size = epoch_size  # a whole epoch of bad clips in a row means there is nothing to train on
    self.stats = DataStats()
    self._bad_run = 0

  def __next__(self) -> dict:
    rows = []
    while len(rows) < self.batch_size:
      ex = next(self._parent)
      if "error" in ex:
        self.stats.add_bad(ex)
        self._bad_run += 1
        if self._bad_run >= self.epoch_size:
          raise AudioError(f"no usable audio: the last {self._bad_run} clips (a whole epoch) were all bad; "
                           f"{self.stats.summary()}; e.g. {'; '.join(self.stats.bad_examples[:3])}")
      else:
        rows.append(ex)
        self.stats.good += 1
        self._bad_run = 0
    return {k: np.stack([r[k] for r in rows]) for k in BATCH_KEYS}

  def resize(self, batch_size: int) -> None:
    """Later batches hold `batch_size` examples (of this process): the loop switches to the stage-2
    batch this way. The example stream, and so the resumable state, does not depend on it."""
    if batch_size < 1:
      raise ConfigError(f"batch_size must be positive, got {batch_size}")
    self.batch_size = batch_size

  def get_state(self) -> dict:
    return {"pipeline": self._parent.get_state(), "stats": self.stats.to_state()}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["pipeline"])
    self.stats.load_state(state["stats"])

  def close(self) -> None:
    close = getattr(self._parent, "close", None)
    if close is not None:
      close()

  def __str__(self) -> str:
    return f"AudioIterator(batch_size={self.batch_size})"


def decoded_dataset(source, *, sample_rate: int, channels: int, min_samples: int = 1,
                    silence_db: float = -60.0) -> grain.MapDataset:
  """Source items -> checked (C, T) clips at the model rate and channels (or error elements), in order."""
  return (grain.MapDataset.source(source)
          .map(T.Decode()).map(T.Resample(sample_rate)).map(T.MixChannels(channels))
          .map(T.CheckAudio(min_samples, silence_db)))


def example_dataset(source, *, sample_rate: int, channels: int, segment_samples: int, seed: int,
                    max_text_len: int, shard_index: int = 0, shard_count: int = 1, loudness_db: float | None = -20.0,
                    gain_db: tuple[float, float] | None = None, min_seconds: float = 0.1,
                    silence_db: float = -60.0) -> grain.MapDataset:
  """An endless MapDataset of training examples for one shard (one process), reshuffled every epoch."""
  ds = grain.MapDataset.source(source)[shard_index::shard_count]  # strided: shards are disjoint, cover all
  ds = ds.shuffle(seed=seed % 2**32).repeat(None)
  ds = (ds.map(T.Decode()).map(T.Resample(sample_rate)).map(T.MixChannels(channels))
        .map(T.CheckAudio(max(1, int(min_seconds * sample_rate)), silence_db)))
  if loudness_db is not None:
    ds = ds.map(T.Normalize(loudness_db))
  ds = ds.random_map(T.RandomCrop(segment_samples), seed=(seed + 1) % 2**32)
  if gain_db is not None:
    ds = ds.random_map(T.RandomGain(*gain_db), seed=(seed + 2) % 2**32)
  return ds.map(T.Tokenize(max_text_len))


def _mark_flags_parsed() -> None:
  """grain reads an absl flag in its workers; an unparsed FLAGS object would raise there."""
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_iterator(source, *, sample_rate: int, channels: int, segment_samples: int, batch_size: int,
                  seed: int = 0, max_text_len: int = text_lib.MAX_TEXT_LEN, num_workers: int = 0,
                  shard_index: int = 0, shard_count: int = 1, data_dir: str | None = None,
                  loudness_db: float | None = -20.0, gain_db: tuple[float, float] | None = None, min_seconds: float = 0.1,
                  silence_db: float = -60.0, read_threads: int = 2, prefetch: int = 64,
                  tfds_fields: dict | None = None, tfds_sample_rate: int | None = None) -> AudioIterator:
  """An endless, resumable iterator of numpy batches for process `shard_index` of `shard_count`.

  `batch_size` is the GLOBAL batch; each process gets batch_size // shard_count examples. `source` is a
  spec string ('folder:PATH', 'tfds:NAME[:SPLIT]' with `data_dir`, 'arrayrecord:GLOB') or a source object.
  `gain_db=(lo, hi)` turns on gain augmentation; `loudness_db=None` turns off loudness normalisation.
  """
  if batch_size < 1 or batch_size % shard_count:
    raise ConfigError(f"batch_size={batch_size} must be a positive multiple of shard_count={shard_count}")
  if not 0 <= shard_index < shard_count:
    raise ConfigError(f"shard_index={shard_index} must be in [0, {shard_count})")
  if segment_samples < 1:
    raise ConfigError(f"segment_samples must be positive, got {segment_samples}")
  if num_workers < 0:
    raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
  src = sources_lib.open_source(source, data_dir=data_dir, tfds_fields=tfds_fields,
                                tfds_sample_rate=tfds_sample_rate)
  if len(src) < shard_count:
    raise ConfigError(f"source has {len(src)} items, fewer than shard_count={shard_count}")
  ds = example_dataset(src, sample_rate=sample_rate, channels=channels, segment_samples=segment_samples,
                       seed=seed, max_text_len=max_text_len, shard_index=shard_index, shard_count=shard_count,
                       loudness_db=loudness_db, gain_db=gain_db, min_seconds=min_seconds, silence_db=silence_db)
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch))
  if num_workers > 0:
    _mark_flags_parsed()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  epoch = len(range(shard_index, len(src), shard_count))
  return AudioIterator(iter(it_ds), batch_size // shard_count, epoch)
