"""Corrupt, empty, zero-length, silent, NaN and missing files are skipped, counted and reported."""
import collections
import logging
import os

import numpy as np
import pytest
import soundfile as sf

from cat_jax.data import make_iterator, prepare, text
from cat_jax.errors import AudioError
from conftest import batches, copy_subset, pick


def test_bad_files_skipped_and_counted(corpus_dir, corpus_rows, tmp_path, caplog):
  good = pick([r for r in corpus_rows if r["source"] in ("alsa", "espeak")], 2)
  folder = copy_subset(good, corpus_dir, str(tmp_path / "bad"), manifest=False)
  with open(os.path.join(folder, "corrupt.wav"), "wb") as f:
    f.write(b"RIFF\x24\x00\x00\x00WAVEfmt " + np.random.default_rng(0).bytes(300))
  open(os.path.join(folder, "empty.flac"), "wb").close()
  sf.write(os.path.join(folder, "zero.wav"), np.zeros((0, 1), np.float32), 16000)
  sf.write(os.path.join(folder, "silent.wav"), np.zeros((16000, 1), np.float32), 16000)
  sf.write(os.path.join(folder, "nan.wav"), np.full((800, 1), np.nan, np.float32), 16000, subtype="FLOAT")
  bad = {"corrupt.wav": "corrupt", "empty.flac": "empty", "zero.wav": "empty", "silent.wav": "silent",
         "nan.wav": "corrupt", "missing.wav": "unreadable"}
  with open(os.path.join(folder, "manifest.csv"), "w") as f:
    f.write("path,text,task\n")
    for r in good:
      f.write(f"{r['path']},{r['text']},{r['task']}\n")
    for name in bad:
      f.write(f"{name},,\n")

  with caplog.at_level(logging.WARNING, logger="cat_jax.data.pipeline"):
    it = make_iterator("folder:" + folder, sample_rate=24000, channels=1, segment_samples=4800, batch_size=2,
                       seed=0, max_text_len=96)
    bs = batches(it, 4)  # 8 good clips = two epochs, so every bad file has been met at least once
  texts = collections.Counter(text.decode(b["text"][i]) for b in bs for i in range(2))
  assert texts == collections.Counter({r["text"]: 2 for r in good})
  st = it.stats
  assert st.good == 8 and set(st.bad) == {"corrupt", "empty", "silent", "unreadable"}
  want = collections.Counter(bad.values())
  assert all(want[k] <= st.bad[k] <= 2 * want[k] for k in want)
  first = {os.path.basename(e.split(":")[0]): e.split(": ")[1].split(" ")[0] for e in st.bad_examples[:6]}
  assert first == bad
  assert st.num_bad >= 6 and f"{st.good} clips used, {st.num_bad} skipped" in st.summary()
  assert sum("skipping bad clip" in r.message for r in caplog.records) == min(st.num_bad, 10)

  info = prepare("folder:" + folder, tmp_path / "ar", shards=1, sample_rate=24000, channels=1)
  assert info["num_records"] == 4 and info["skipped"] == dict(want)


def test_all_bad_source_is_a_clear_error(tmp_path):
  for i in range(3):
    sf.write(tmp_path / f"silent{i}.wav", np.zeros((1600, 1), np.float32), 16000)
  open(tmp_path / "empty.wav", "wb").close()
  it = make_iterator(f"folder:{tmp_path}", sample_rate=24000, channels=1, segment_samples=4800, batch_size=2,
                     seed=0, max_text_len=8)
  with pytest.raises(AudioError, match=r"no usable audio.*silent=3"):
    next(it)
