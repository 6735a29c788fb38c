"""Writes a source as a TFDS dataset (array_record files) that `tfds:NAME[:SPLIT]` reads through
`tfds.data_source`, without TensorFlow: audio is a `Tensor` feature (T,) or (T, C) plus a
`sample_rate` field (tfds.features.Audio needs TensorFlow)."""
from __future__ import annotations

import os
import re
import types

import grain
import numpy as np
import tensorflow_datasets as tfds

from cat_jax.data import sources as sources_lib, transforms as T
from cat_jax.errors import ConfigError


class _AudioBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Generic builder over a list of decoded clips; subclassed per dataset name by `build_tfds`."""
  VERSION = tfds.core.Version("1.0.0")
  channels: int = 1
  dtype = np.int16
  clips: dict = {}  # split -> list of (audio (C, T) float32, sr, text, task)

  def _info(self) -> tfds.core.DatasetInfo:
    shape = (None,) if self.channels == 1 else (None, self.channels)
    return tfds.core.DatasetInfo(builder=self, description="cat_jax audio clips with text", features=
                                 tfds.features.FeaturesDict({
                                     "audio": tfds.features.Tensor(shape=shape, dtype=self.dtype),
                                     "sample_rate": tfds.features.Scalar(dtype=np.int32),
                                     "text": tfds.features.Text(), "task": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(split) for split in self.clips}

  def _generate_examples(self, split):
    for i, (audio, sr, text, task) in enumerate(self.clips[split]):
      a = audio.T if self.channels > 1 else audio[0]
      if self.dtype == np.int16:
        a = np.round(np.clip(a, -1.0, 32767 / 32768) * 32768)
      yield i, {"audio": a.astype(self.dtype), "sample_rate": sr, "text": text, "task": task}


def build_tfds(src, data_dir: str | os.PathLike, *, name: str = "cat_audio", channels: int = 1,
               sample_rate: int | None = None, dtype: str = "int16", test_every: int = 0) -> str:
  """Decodes `src` (mixed to `channels`; resampled only if `sample_rate` is given) into TFDS dataset
  `name` under `data_dir`; every `test_every`-th good clip goes to split 'test'. Returns its folder."""
  if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
    raise ConfigError(f"TFDS dataset name must be snake_case, got {name!r}")
  source = sources_lib.open_source(src)
  ds = grain.MapDataset.source(source).map(T.Decode())
  if sample_rate:
    ds = ds.map(T.Resample(sample_rate))
  ds = ds.map(T.MixChannels(channels)).map(T.CheckAudio())
  clips = {"train": []}
  if test_every:
    clips["test"] = []
  good = 0
  for ex in ds:
    if "error" in ex:
      continue
    split = "test" if test_every and good % test_every == test_every - 1 else "train"
    clips[split].append((ex["audio"], int(ex["sr"]), ex["text"], ex["task"]))
    good += 1
  camel = "".join(w.capitalize() for w in name.split("_"))
  cls = types.new_class(camel, (_AudioBuilder,), {"skip_registration": True}, lambda ns: ns.update(
      name=name, channels=channels, clips=clips, dtype={"int16": np.int16, "float32": np.float32}[dtype]))
  builder = cls(data_dir=os.fspath(data_dir), file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder.data_dir
