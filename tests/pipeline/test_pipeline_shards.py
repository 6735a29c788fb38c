"""Two simulated processes: disjoint shards that together cover the data, per-process batch = global / 2."""
import collections
import json
import os

import pytest

from cat_jax.data import make_iterator, text
from cat_jax.data.pipeline import example_dataset
from cat_jax.data.sources import FolderSource
from cat_jax.errors import ConfigError
from conftest import batches

KW = dict(sample_rate=24000, channels=1, segment_samples=4800, seed=3, max_text_len=128)


def test_shards_disjoint_and_cover(small_folder):
  src = FolderSource(small_folder)
  paths = []
  for i in range(2):
    ds = example_dataset(src, shard_index=i, shard_count=2, **KW)
    paths.append({ds[k]["path"] for k in range(len(src) // 2)})  # one epoch of this shard
  assert not paths[0] & paths[1]
  assert paths[0] | paths[1] == {src[k]["path"] for k in range(len(src))}

  with open(os.path.join(small_folder, "manifest.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  for i in range(2):
    it = make_iterator("folder:" + small_folder, batch_size=4, shard_index=i, shard_count=2, **KW)
    bs = batches(it, 2)  # 2 batches of 2 = this shard's epoch
    assert all(b["audio"].shape == (2, 4800, 1) for b in bs)
    got = collections.Counter(text.decode(b["text"][j]) for b in bs for j in range(2))
    assert got == collections.Counter(r["text"] for r in rows[i::2])


def test_bad_shard_arguments(small_folder):
  with pytest.raises(ConfigError, match="multiple of shard_count"):
    make_iterator("folder:" + small_folder, batch_size=3, shard_index=0, shard_count=2, **KW)
  with pytest.raises(ConfigError, match="shard_index"):
    make_iterator("folder:" + small_folder, batch_size=4, shard_index=2, shard_count=2, **KW)
  with pytest.raises(ConfigError, match="unknown source"):
    make_iterator("s3:bucket", batch_size=4, **KW)
  with pytest.raises(ConfigError, match="no files match"):
    make_iterator("arrayrecord:/nonexistent/*.array_record", batch_size=4, **KW)
