"""Files in and out of the command line: output paths checked before any work, written
atomically at exactly the printed path; codes files carry the model's fingerprint and a checked
length; anything else given as codes gets one line of ours."""
import json
import os
import shutil

import numpy as np
import pytest

from cat_jax.audio import write_audio
from cat_jax.cli import main
from cat_jax.codes_io import load_codes, model_fingerprint, save_codes
from cat_jax.errors import CodesError
from tests.conftest import GOLDEN_TINY

MODEL = ["--model", str(GOLDEN_TINY)]


@pytest.fixture()
def wav(tmp_path, golden):
  path = tmp_path / "in.wav"
  write_audio(path, golden["input_values"][0], 24000)
  return path


def _one_line(capsys, pattern):
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and __import__("re").search(pattern, err), err
  return err


def test_encode_writes_exactly_the_path_it_prints(tmp_path, wav, tiny_model, capsys):
  assert main(["encode", str(wav), str(tmp_path / "out" / "codes"), *MODEL]) == 0  # folder made, .npz added
  printed = capsys.readouterr().out.strip().rsplit("-> ", 1)[1]
  assert printed == str(tmp_path / "out" / "codes.npz") and os.listdir(tmp_path / "out") == ["codes.npz"]
  with np.load(printed) as z:
    assert str(z["model"]) == model_fingerprint(tiny_model.config) and int(z["length"]) == 24000
  assert main(["decode", printed, str(tmp_path / "dec" / "a.flac"), *MODEL]) == 0
  assert os.listdir(tmp_path / "dec") == ["a.flac"]  # no temp file left beside it


@pytest.mark.parametrize("cmd, out, pattern", [
    ("encode", "DIR", "is a directory"),
    ("encode", "x.wav", r"codes are written as \.npz"),
    ("decode", "DIR", "is a directory"),
    ("decode", "out.xyz", r"cannot write audio as \.xyz"),
    ("decode", "noext", "without an extension"),
    ("reconstruct", "FILE/a.wav", "is a file, not a folder"),
    ("stream-encode", "x.txt", r"\.npz"),
    ("stream-decode", "DIR", "is a directory"),
])
def test_bad_output_paths_are_refused_before_any_work(tmp_path, capsys, cmd, out, pattern):
  (tmp_path / "d").mkdir()
  (tmp_path / "f").write_text("x")
  out = out.replace("DIR", str(tmp_path / "d")).replace("FILE", str(tmp_path / "f"))
  # the model does not exist: the output is refused first, so nothing was loaded or computed
  assert main([cmd, "in.any", out if os.path.isabs(out) else str(tmp_path / out), "--model", "nomodel"]) == 2
  _one_line(capsys, pattern)
  assert sorted(os.listdir(tmp_path)) == ["d", "f"] and os.listdir(tmp_path / "d") == []


def test_failed_writes_leave_nothing_half_written(tmp_path, monkeypatch):
  with pytest.raises(Exception):
    write_audio(tmp_path / "a.wav", np.zeros((1, 100), np.float32), 24000, subtype="NO_SUCH_SUBTYPE")
  assert os.listdir(tmp_path) == []
  good = save_codes(str(tmp_path / "c.npz"), np.zeros((2, 3), np.int32), 24000, 100)
  before = (tmp_path / "c.npz").read_bytes()
  def half_then_fail(f, **arrays):
    f.write(b"PK\x03\x04 half")
    raise OSError("disk full")
  monkeypatch.setattr(np, "savez", half_then_fail)
  with pytest.raises(OSError, match="disk full"):
    save_codes(good, np.ones((2, 3), np.int32), 24000, 100)
  assert os.listdir(tmp_path) == ["c.npz"] and (tmp_path / "c.npz").read_bytes() == before


@pytest.mark.parametrize("length, pattern", [(0, r"length 0 is not in 1\.\.9600"), (-5, "length -5"),
                                             (10**9, "length 1000000000")])
def test_codes_length_is_checked(tmp_path, tiny_model, capsys, length, pattern):
  path = save_codes(str(tmp_path / "c.npz"), np.zeros((8, 5), np.int32), 24000, length)  # 5 frames x 1920
  with pytest.raises(CodesError, match=pattern):
    load_codes(path, config=tiny_model.config)
  assert main(["decode", path, str(tmp_path / "o.wav"), *MODEL]) == 2
  _one_line(capsys, pattern)
  assert not (tmp_path / "o.wav").exists()


def test_codes_of_another_model_are_refused_unless_forced(tmp_path, wav, capsys):
  other = tmp_path / "other"
  shutil.copytree(GOLDEN_TINY, other)
  cfg = json.loads((other / "config.json").read_text())
  cfg["causal_transformer_context_duration"] = 0.64  # same tensors, another model
  (other / "config.json").write_text(json.dumps(cfg))
  assert main(["encode", str(wav), str(tmp_path / "c.npz"), "--model", str(other)]) == 0
  capsys.readouterr()
  assert main(["decode", str(tmp_path / "c.npz"), str(tmp_path / "o.wav"), *MODEL]) == 2
  _one_line(capsys, "encoded by another model .*--force")
  assert not (tmp_path / "o.wav").exists()
  assert main(["decode", str(tmp_path / "c.npz"), str(tmp_path / "o.wav"), *MODEL, "--force"]) == 0
  assert "warning: " in capsys.readouterr().err and (tmp_path / "o.wav").exists()
  np.savez(tmp_path / "old.npz", codes=np.zeros((8, 5), np.int32))  # no fingerprint: an older file, accepted
  assert main(["decode", str(tmp_path / "old.npz"), str(tmp_path / "o2.wav"), *MODEL]) == 0


def test_a_file_that_is_not_codes_gets_our_line(tmp_path, capsys):
  (tmp_path / "codes.txt").write_text("1 2 3\n")
  np.save(tmp_path / "bare.npy", np.zeros((8, 5), np.int32))
  for name in ("codes.txt", "bare.npy"):
    assert main(["decode", str(tmp_path / name), str(tmp_path / "o.wav"), *MODEL]) == 2
    err = _one_line(capsys, "is not a codes file")
    assert "pickle" not in err


def test_long_files_show_a_progress_bar_on_a_terminal(tmp_path, wav, monkeypatch, capsys):
  import sys
  from cat_jax.cli import coding
  monkeypatch.setattr(coding, "LONG_FILE_SECONDS", 0.5)  # the 1 s clip counts as long: 0.32 s chunks
  monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
  assert main(["encode", str(wav), str(tmp_path / "c.npz"), *MODEL]) == 0
  err = capsys.readouterr().err
  assert "encode" in err and "/4 " in err and "chunk" in err, err  # 13 frames in chunks of 4
  assert main(["decode", str(tmp_path / "c.npz"), str(tmp_path / "o.wav"), *MODEL]) == 0
  assert "decode" in capsys.readouterr().err
  monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file: no bar
  assert main(["encode", str(wav), str(tmp_path / "c.npz"), *MODEL]) == 0
  assert "chunk" not in capsys.readouterr().err


def test_fingerprint_follows_the_architecture_only(tiny_model, tmp_path):
  from cat_jax import CATConfig
  cfg = tiny_model.config
  tiny_model.save_pretrained(tmp_path / "m")
  assert model_fingerprint(CATConfig.from_json(tmp_path / "m" / "config.json")) == model_fingerprint(cfg)
  assert model_fingerprint(cfg.replace(extra={**cfg.extra, "attention_implementation": "eager"})) == \
      model_fingerprint(cfg)  # a carried-along field, not the model
  other = cfg.replace(causal_transformer_context_duration=0.64)
  assert len(model_fingerprint(other)) == 16 and model_fingerprint(other) != model_fingerprint(cfg)
