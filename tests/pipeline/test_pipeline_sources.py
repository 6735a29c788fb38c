"""Each source (folder with manifest, folder with sidecars, ArrayRecord, TFDS) yields correct batches."""
import collections
import json
import os

import numpy as np
import pytest

from cat_jax.audio import load_audio
from cat_jax.data import make_iterator, prepare, records, text
from cat_jax.data.sources import FolderSource
from conftest import batches, copy_subset, pick

SR, S, L = 24000, 48000, 128


def manifest(folder):
  with open(os.path.join(folder, "manifest.jsonl")) as f:
    return [json.loads(line) for line in f]


def check_batch(b, batch, channels):
  assert b["audio"].shape == (batch, S, channels) and b["audio"].dtype == np.float32
  assert b["lengths"].shape == (batch,) and b["lengths"].dtype == np.int32
  assert b["text"].shape == (batch, L) and b["text"].dtype == np.int32
  assert b["text_lengths"].shape == (batch,) and b["text_lengths"].dtype == np.int32
  for a, n in zip(b["audio"], b["lengths"]):
    assert 0 < n <= S
    assert np.all(a[n:] == 0) and np.abs(a[:n]).max() > 1e-3
  assert np.abs(b["audio"]).max() <= 0.99 + 1e-6


def decoded(bs):
  return [(text.decode(b["text"][i]), int(b["text_lengths"][i])) for b in bs for i in range(len(b["lengths"]))]


def test_folder_with_manifest(small_folder):
  rows = manifest(small_folder)
  it = make_iterator("folder:" + small_folder, sample_rate=SR, channels=1, segment_samples=S, batch_size=4,
                     seed=1, max_text_len=L)
  bs = batches(it, 4)  # two epochs of 8 clips
  for b in bs:
    check_batch(b, 4, 1)
  got = decoded(bs)
  want = collections.Counter(r["text"] for r in rows)
  assert collections.Counter(t for t, _ in got[:8]) == want  # epoch 1 covers every clip once
  assert collections.Counter(t for t, _ in got[8:]) == want  # epoch 2 as well,
  assert [t for t, _ in got[:8]] != [t for t, _ in got[8:]]  # in a new order
  assert all(n == len(t.encode()) + 2 for t, n in got)
  first_task = {r["text"]: r["task"] for r in rows}
  assert all(bs[0]["text"][i, 0] == text.TASKS[first_task[t]] for i, (t, _) in enumerate(got[:4]))
  # a clip shorter than the segment keeps its resampled length and is zero-padded
  word = next(r for r in rows if r["source"] == "alsa")
  expect = load_audio(os.path.join(small_folder, word["path"]), SR, 1).shape[1]
  lens = {t: int(b["lengths"][i]) for b in bs for i, t in enumerate(t for t, _ in decoded([b]))}
  assert expect < S and lens[word["text"]] == expect
  assert it.stats.good == 16 and it.stats.num_bad == 0


def test_folder_sidecars_stereo(small_folder, corpus_dir, corpus_rows, tmp_path):
  rows = pick(corpus_rows, 2)
  folder = copy_subset(rows, corpus_dir, str(tmp_path / "side"), manifest=False)
  src = FolderSource(folder)
  got = sorted((os.path.relpath(src[i]["path"], folder), src[i]["text"], src[i]["task"]) for i in range(len(src)))
  assert got == sorted((r["path"], r["text"], r["task"]) for r in rows)
  it = make_iterator("folder:" + folder, sample_rate=SR, channels=2, segment_samples=S, batch_size=4, seed=0,
                     max_text_len=L, gain_db=(-6.0, 0.0))
  b = next(it)
  check_batch(b, 4, 2)
  mono = [i for i, (t, _) in enumerate(decoded([b])) if t in {r["text"] for r in rows if r["source"] != "fluidsynth"}]
  assert mono and all(np.array_equal(b["audio"][i, :, 0], b["audio"][i, :, 1]) for i in mono)


def test_arrayrecord_prepare_and_read(small_folder, tmp_path):
  info = prepare("folder:" + small_folder, tmp_path / "ar", shards=2, sample_rate=SR, channels=1)
  assert info["num_records"] == 8 and info["records_per_shard"] == [4, 4] and info["skipped"] == {}
  assert json.load(open(tmp_path / "ar" / "info.json"))["shards"] == info["shards"]
  it = make_iterator(f"arrayrecord:{tmp_path}/ar/*.array_record", sample_rate=SR, channels=1, segment_samples=S,
                     batch_size=8, seed=0, max_text_len=L)
  b = next(it)
  check_batch(b, 8, 1)
  assert sorted(t for t, _ in decoded([b])) == sorted(r["text"] for r in manifest(small_folder))
  word = next(r for r in manifest(small_folder) if r["source"] == "alsa")
  lens = dict(zip((t for t, _ in decoded([b])), b["lengths"].tolist()))
  assert lens[word["text"]] == load_audio(os.path.join(small_folder, word["path"]), SR, 1).shape[1]


@pytest.mark.parametrize("dtype,tol", [("int16", 1 / 32768), ("float32", 0.0)])
def test_record_round_trip(dtype, tol):
  a = np.random.default_rng(0).uniform(-1, 1, (2, 1000)).astype(np.float32)
  r = records.unpack(records.pack(a, 16000, text="héllo", task="asr", path="x.wav", dtype=dtype))
  assert r["sr"] == 16000 and r["text"] == "héllo" and r["task"] == "asr" and r["path"] == "x.wav"
  assert r["audio"].shape == (2, 1000) and np.abs(r["audio"] - a).max() <= tol
  with pytest.raises(ValueError):
    records.unpack(b"RIFF" + bytes(10))


def test_tfds_source(small_folder, tmp_path):
  import tensorflow_datasets as tfds
  from cat_jax.data.tfds_build import build_tfds
  build_tfds("folder:" + small_folder, tmp_path / "tfds", name="cat_test_corpus", test_every=4)
  train = tfds.data_source("cat_test_corpus", split="train", data_dir=str(tmp_path / "tfds"))
  test = tfds.data_source("cat_test_corpus", split="test", data_dir=str(tmp_path / "tfds"))
  assert len(train) == 6 and len(test) == 2
  ex = train[0]
  assert ex["audio"].dtype == np.int16 and ex["audio"].ndim == 1 and int(ex["sample_rate"]) in (22050, 24000, 44100, 48000)
  it = make_iterator("tfds:cat_test_corpus", data_dir=str(tmp_path / "tfds"), sample_rate=SR, channels=1,
                     segment_samples=S, batch_size=6, seed=0, max_text_len=L)
  b = next(it)
  check_batch(b, 6, 1)
  texts = sorted(t for t, _ in decoded([b]))
  assert texts == sorted(train[i]["text"].decode() for i in range(6))
  assert set(texts) < {r["text"] for r in manifest(small_folder)}
