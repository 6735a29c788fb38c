"""Session fixtures: one small real-audio corpus (espeak-ng, alsa, freedesktop, fluidsynth, a few asterisk
recordings), built in a tmp dir."""
import json
import os
import shutil

import numpy as np
import pytest


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
  from cat_jax.data.corpus import build_corpus
  out = tmp_path_factory.mktemp("corpus")
  build_corpus(out, seconds_of_speech=6.0, music_pieces=2, seed=0, recorded_max_files=3)
  return str(out)


@pytest.fixture(scope="session")
def corpus_rows(corpus_dir):
  with open(os.path.join(corpus_dir, "manifest.jsonl"), encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def pick(rows, per_source):
  """The first `per_source` rows of each corpus source, in manifest order."""
  out, seen = [], {}
  for r in rows:
    if seen.get(r["source"], 0) < per_source:
      seen[r["source"]] = seen.get(r["source"], 0) + 1
      out.append(r)
  return out


def copy_subset(rows, corpus_dir, dst, *, manifest=True):
  """Copies rows' audio (and sidecars) into dst; writes manifest.jsonl when asked. Returns dst."""
  os.makedirs(dst, exist_ok=True)
  for r in rows:
    src = os.path.join(corpus_dir, r["path"])
    stem = os.path.splitext(src)[0]
    os.makedirs(os.path.dirname(os.path.join(dst, r["path"])), exist_ok=True)
    for p in (src, stem + ".txt", stem + ".caption.txt"):
      if os.path.exists(p):
        shutil.copyfile(p, os.path.join(dst, os.path.relpath(p, corpus_dir)))
  if manifest:
    with open(os.path.join(dst, "manifest.jsonl"), "w", encoding="utf-8") as f:
      for r in rows:
        f.write(json.dumps(r) + "\n")
  return str(dst)


@pytest.fixture(scope="session")
def small_folder(corpus_rows, corpus_dir, tmp_path_factory):
  """Two clips of each synthetic/system source (8 clips: speech, words, sounds, music) with a manifest
  (the recorded speech has tests of its own: test_recorded_speech.py)."""
  rows = [r for r in corpus_rows if r["source"] != "asterisk"]
  return copy_subset(pick(rows, 2), corpus_dir, str(tmp_path_factory.mktemp("small")))


def batches(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)
