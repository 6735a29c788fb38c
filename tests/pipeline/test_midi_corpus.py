import json
import os
import struct
import warnings

import numpy as np
import soundfile as sf

from cat_jax.data import corpus, midi


def test_midi_bytes_structure():
  notes = [midi.Note(0, 1, 60, 100, 0), midi.Note(0.5, 1, 64, 90, 1)]
  b = midi.midi_bytes(notes, bpm=120, programs={0: 40}, ticks_per_beat=480)
  assert b[:4] == b"MThd" and struct.unpack(">IHHH", b[4:14]) == (6, 0, 1, 480)
  assert b[14:18] == b"MTrk"
  (n,) = struct.unpack(">I", b[18:22])
  assert n == len(b) - 22
  track = b[22:]
  assert track[:7] == bytes([0, 0xFF, 0x51, 3]) + (500000).to_bytes(3, "big")  # 120 bpm
  assert bytes([0, 0xC0, 40]) in track and track.endswith(bytes([0xFF, 0x2F, 0]))
  assert midi._vlq(0) == b"\x00" and midi._vlq(127) == b"\x7f" and midi._vlq(128) == b"\x81\x00"
  assert midi._vlq(480) == b"\x83\x60"


def test_corpus_contents(corpus_dir, corpus_rows):
  by = {}
  for r in corpus_rows:
    by.setdefault(r["source"], []).append(r)
  assert set(by) == {"espeak", "alsa", "freedesktop", "fluidsynth", "asterisk"}
  assert len(by["alsa"]) == 9 and len(by["freedesktop"]) == 35 and len(by["fluidsynth"]) == 2
  speech_s = sum(sf.info(os.path.join(corpus_dir, r["path"])).duration for r in by["espeak"])
  assert speech_s >= 6.0 and len({r["language"] for r in by["espeak"]}) >= 2
  for r in corpus_rows:
    path = os.path.join(corpus_dir, r["path"])
    stem = os.path.splitext(path)[0]
    side = stem + (".txt" if r["task"] == "asr" else ".caption.txt")
    assert open(side, encoding="utf-8").read().strip() == r["text"]
  music, sr = sf.read(os.path.join(corpus_dir, by["fluidsynth"][0]["path"]))
  assert sr == 24000 and music.shape[1] == 2 and np.abs(music).max() > 0.05
  assert {r["text"] for r in by["alsa"]} >= {"front left", "rear right"}


def test_corpus_deterministic_and_skips_missing(tmp_path, monkeypatch):
  a = corpus.build_corpus(tmp_path / "a", seconds_of_speech=2, sources=("speech", "music"), music_pieces=1, seed=3)
  b = corpus.build_corpus(tmp_path / "b", seconds_of_speech=2, sources=("speech", "music"), music_pieces=1, seed=3)
  ra, rb = open(a).read(), open(b).read()
  assert ra == rb and len(ra.splitlines()) >= 2
  first = json.loads(ra.splitlines()[0])["path"]
  assert sf.read(tmp_path / "a" / first)[0].tolist() == sf.read(tmp_path / "b" / first)[0].tolist()
  monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
  with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    m = corpus.build_corpus(tmp_path / "c", seconds_of_speech=2, sources=("speech", "words"))
  assert any("skipping speech" in str(x.message) for x in w)
  rows = [json.loads(line) for line in open(m)]
  assert {r["source"] for r in rows} == {"alsa"}
