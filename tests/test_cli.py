"""`cat-jax` subcommands on real files, and their one-line errors."""
import numpy as np
import pytest

from cat_jax import CAT
from cat_jax.audio import read_audio, write_audio
from cat_jax.checkpoint import params_equal
from cat_jax.cli import main
from tests.conftest import GOLDEN_TINY


@pytest.fixture()
def speech_wav(tmp_path, golden):
  path = tmp_path / "speech.flac"
  write_audio(path, golden["input_values"][0], 24000, subtype="PCM_24")
  return path


def test_encode_decode_reconstruct_files(tmp_path, speech_wav, tiny_model, capsys):
  codes_path = tmp_path / "codes.npz"
  assert main(["encode", str(speech_wav), str(codes_path), "--model", str(GOLDEN_TINY)]) == 0
  audio, sr = read_audio(speech_wav)
  with np.load(codes_path) as z:
    codes = z["codes"]
    assert int(z["length"]) == 24000 and int(z["sample_rate"]) == 24000
  np.testing.assert_array_equal(codes, tiny_model.encode(audio[None]).audio_codes[:, 0])
  out = tmp_path / "out.wav"
  assert main(["decode", str(codes_path), str(out), "--model", str(GOLDEN_TINY), "--num-quantizers", "4"]) == 0
  dec, sr = read_audio(out)
  assert sr == 24000 and dec.shape == (1, 24000)
  ref = tiny_model.decode(codes[:4, None]).audio[0, :, :24000]
  np.testing.assert_allclose(dec, np.clip(ref, -1, 1), atol=1 / 32767 + 1e-6)  # 16-bit wav
  assert main(["reconstruct", str(speech_wav), str(tmp_path / "rec.wav"), "--model", str(GOLDEN_TINY)]) == 0
  assert "8 codebooks = 600 bit/s" in capsys.readouterr().out


def test_resamples_and_downmixes_input(tmp_path, tiny_model, golden):
  x = golden["input_values"][0, 0]
  stereo = np.stack([x, x])
  import soxr
  path = tmp_path / "stereo48k.wav"
  write_audio(path, soxr.resample(stereo.T, 24000, 48000).T, 48000, subtype="FLOAT")
  assert main(["encode", str(path), str(tmp_path / "c.npz"), "--model", str(GOLDEN_TINY)]) == 0
  with np.load(tmp_path / "c.npz") as z:
    assert z["codes"].shape == (8, 13) and int(z["length"]) == 24000


def test_convert_round_trip_is_bit_exact(tmp_path, tiny_model):
  assert main(["convert", str(GOLDEN_TINY), str(tmp_path / "orbax")]) == 0
  assert main(["convert", str(tmp_path / "orbax"), str(tmp_path / "hf"), "--max-shard-bytes", "300000"]) == 0
  back = CAT.from_pretrained(tmp_path / "hf")
  assert params_equal(back.params, tiny_model.params)


@pytest.mark.parametrize("argv, message", [
    (["encode", "missing.wav", "o.npz"], "audio file not found: missing.wav"),
    (["decode", "missing.npz", "o.wav"], "codes file not found"),
    (["encode", "EMPTY", "o.npz"], "empty"),
    (["encode", "GARBAGE", "o.npz"], "cannot decode"),
    (["decode", "BADCODES", "o.wav"], r"lie in \[0, 64\)"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
  (tmp_path / "empty.wav").write_bytes(b"")
  write_audio(tmp_path / "empty.wav", np.zeros((1, 0), np.float32), 24000)
  (tmp_path / "garbage.wav").write_bytes(b"RIFF1234WAVEjunk" * 20)
  np.savez(tmp_path / "bad.npz", codes=np.full((8, 5), 99, np.int32))
  subst = {"EMPTY": tmp_path / "empty.wav", "GARBAGE": tmp_path / "garbage.wav", "BADCODES": tmp_path / "bad.npz"}
  argv = [str(subst.get(a, a)) for a in argv] + ["--model", str(GOLDEN_TINY)]
  assert main(argv) == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1
  assert __import__("re").search(message, err), err
  assert main(["encode", "x.wav", "y.npz", "--model", str(tmp_path / "nomodel")]) == 2
  assert "model directory not found" in capsys.readouterr().err


def test_cli_keeps_compiled_programs_in_the_user_cache(tmp_path, speech_wav, monkeypatch):
  import os
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
  env.update(XDG_CACHE_HOME=str(tmp_path / "cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  done = subprocess.run([sys.executable, "-m", "cat_jax.cli", "encode", str(speech_wav), str(tmp_path / "c.npz"),
                         "--model", str(GOLDEN_TINY)], env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert os.listdir(tmp_path / "cache" / "cat_jax" / "xla")  # the encode program was stored

  import jax
  from cat_jax.cli import use_compile_cache
  before = jax.config.jax_compilation_cache_dir
  monkeypatch.setenv("CAT_JAX_COMPILE_CACHE", "0")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "off"))
  assert use_compile_cache() == before and not (tmp_path / "off").exists()


def test_cpu_machines_quiet_the_tpu_probes(monkeypatch):
  import glob
  from cat_jax.cli.app import quiet_accelerator_probes
  for k in ("TPU_SKIP_MDS_QUERY", "TPU_MIN_LOG_LEVEL", "TPU_STDERR_LOG_LEVEL", "TPU_LOG_DIR"):
    monkeypatch.delenv(k, raising=False)
  monkeypatch.setenv("TPU_MIN_LOG_LEVEL", "0")  # the user's choice wins
  monkeypatch.setattr(glob, "glob", lambda pattern: [])
  assert quiet_accelerator_probes() == {"TPU_SKIP_MDS_QUERY": "1", "TPU_STDERR_LOG_LEVEL": "3",
                                        "TPU_LOG_DIR": "disabled"}
  import os
  assert os.environ["TPU_LOG_DIR"] == "disabled" and os.environ["TPU_MIN_LOG_LEVEL"] == "0"
  monkeypatch.delenv("TPU_LOG_DIR")
  monkeypatch.setattr(glob, "glob", lambda pattern: ["/dev/accel0"] if "accel" in pattern else [])
  assert quiet_accelerator_probes() == {} and "TPU_LOG_DIR" not in os.environ  # a TPU VM: untouched
