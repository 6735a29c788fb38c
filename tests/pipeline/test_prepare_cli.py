"""The `cat-jax prepare` and `make-corpus` subcommands."""
import json
import os

from cat_jax.cli import main


def test_prepare_subcommand(small_folder, tmp_path, capsys):
  assert main(["prepare", "folder:" + small_folder, str(tmp_path / "out"), "--shards", "3",
               "--sample-rate", "16000", "--channels", "2"]) == 0
  info = json.load(open(tmp_path / "out" / "info.json"))
  assert info["num_records"] == 8 and info["records_per_shard"] == [3, 3, 2]
  assert info["sample_rate"] == 16000 and info["channels"] == 2
  assert sorted(os.listdir(tmp_path / "out")) == sorted(info["shards"] + ["info.json"])
  assert "wrote 8 clips" in capsys.readouterr().out
  assert main(["prepare", "folder:" + str(tmp_path / "nope"), str(tmp_path / "o2")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("cat-jax prepare: error:") and "neither a folder" in err


def test_make_corpus_subcommand(tmp_path, capsys):
  assert main(["make-corpus", str(tmp_path / "c"), "--seconds-of-speech", "1",
               "--music-pieces", "1", "--recorded-max-files", "2"]) == 0
  rows = [json.loads(line) for line in open(tmp_path / "c" / "manifest.jsonl")]
  assert {r["source"] for r in rows} == {"espeak", "alsa", "freedesktop", "fluidsynth", "asterisk"}
  assert f"wrote {len(rows)} clips" in capsys.readouterr().out
