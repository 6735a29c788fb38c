"""Real recorded speech in the corpus: asterisk voices with transcripts and held-out splits."""
import json
import os

import pytest
import soundfile as sf

from cat_jax.data import asterisk, corpus
from cat_jax.data.sources import open_source

pytestmark = pytest.mark.skipif(asterisk.missing() is not None, reason=str(asterisk.missing()))


def _rows(path):
  return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
  out = tmp_path_factory.mktemp("recorded")
  corpus.build_corpus(out, sources=("recorded",), recorded_max_files=40)
  return out


def test_splits_hold_out_a_voice_and_files(recorded):
  train = _rows(recorded / "recorded_train.jsonl")
  val_file, val_voice = _rows(recorded / "val_file.jsonl"), _rows(recorded / "val_voice.jsonl")
  assert _rows(recorded / "manifest.jsonl") == train  # only training rows are trained on
  assert {r["speaker"] for r in val_voice} == {asterisk.HELD_OUT_SPEAKER} and {r["language"] for r in val_voice} == {"ru"}
  assert asterisk.HELD_OUT_SPEAKER not in {r["speaker"] for r in train + val_file}
  assert {r["speaker"] for r in train} == {"allison", "carlo"} and {r["language"] for r in train} == {"en", "es", "it"}
  assert val_file and not {r["path"] for r in val_file} & {r["path"] for r in train}
  assert len(train) + len(val_file) == 120 and len(val_voice) == 40


def test_audio_and_transcripts(recorded):
  texts = asterisk.transcripts("en")
  rows = _rows(recorded / "recorded_train.jsonl") + _rows(recorded / "val_voice.jsonl")
  for r in rows[:: max(1, len(rows) // 12)]:
    info = sf.info(os.path.join(recorded, r["path"]))
    assert info.samplerate == 16000 and info.channels == 1 and info.duration > 0.2
    assert r["task"] == "asr" and r["text"] and not r["text"].startswith(("[", "("))
    side = os.path.splitext(os.path.join(recorded, r["path"]))[0] + ".txt"
    assert open(side, encoding="utf-8").read().strip() == r["text"]
  en = next(r for r in rows if r["language"] == "en")
  name = os.path.basename(en["path"])[:-5].replace("__", "/")
  assert texts[name] == en["text"]
  assert any(r["language"] == "ru" and any("\u0400" <= ch <= "\u04ff" for ch in r["text"]) for r in rows)


def test_corpus_source_builds_itself(tmp_path, monkeypatch):
  calls = []

  def fake_build(out):  # stands in for the minute-long build; writes what the real one would
    calls.append(out)
    os.makedirs(out, exist_ok=True)
    sf.write(os.path.join(out, "a.wav"), [0.1, -0.1] * 800, 16000)
    with open(os.path.join(out, "val_voice.jsonl"), "w") as f:
      f.write(json.dumps({"path": "a.wav", "text": "hi"}) + "\n")

  monkeypatch.setattr(corpus, "build_corpus", fake_build)
  src = open_source(f"corpus:{tmp_path}/c/val_voice.jsonl")
  assert len(src) == 1 and src[0]["text"] == "hi" and calls == [str(tmp_path / "c")]
  open_source(f"corpus:{tmp_path}/c/val_voice.jsonl")  # found: not built again
  assert len(calls) == 1
  with pytest.raises(Exception, match="expected DIR/NAME"):
    open_source(f"corpus:{tmp_path}/c/other.jsonl")
