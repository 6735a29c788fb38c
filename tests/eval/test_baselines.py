"""Baseline codecs (Codec 2, Opus) beside the model: delay alignment, the tools, evaluate's rows, CLI."""
import csv
import shutil

import numpy as np
import pytest

from cat_jax.audio import write_audio
from cat_jax.cli import main
from cat_jax.errors import CATError
from cat_jax.eval import baselines as bl
from cat_jax.eval import evaluate as ev
from cat_jax.eval.metrics import METRICS, stoi


def _needs(*tools):
  missing = [t for t in tools if shutil.which(t) is None]
  if missing:
    pytest.skip(f"{'/'.join(missing)} not installed")


def _speech_like(sr: int = 16000, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
  """Syllable-rate bursts of a gliding harmonic tone plus noise: no periodicity to fool a lag search."""
  rng = np.random.default_rng(seed)
  t = np.arange(int(sr * seconds)) / sr
  f0 = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
  phase = 2 * np.pi * np.cumsum(f0) / sr
  voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
  envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) ** 2
  return (0.3 * envelope * (voiced + 0.3 * rng.standard_normal(t.size))).astype(np.float32)


@pytest.mark.parametrize("lag", [123, -77])
def test_align_removes_a_known_delay(lag):
  x = _speech_like()
  noise = 0.01 * np.random.default_rng(1).standard_normal(x.size).astype(np.float32)
  shifted = np.concatenate([np.zeros(lag, np.float32), x[:-lag]] if lag > 0
                           else [x[-lag:], np.zeros(-lag, np.float32)])  # delayed / advanced, same length
  est = shifted + noise
  y, found = bl.align(x, est, 1600)
  assert found == lag and bl.find_lag(x, est, 1600) == lag
  assert y.shape == x.shape
  inner = slice(max(0, -lag), x.size - max(0, lag))  # where est holds x
  np.testing.assert_allclose(y[inner], x[inner], atol=0.05)
  assert np.corrcoef(y[inner], x[inner])[0, 1] > 0.99
  assert bl.align(x, est, 50)[1] != lag  # outside the search range: not found


def test_parse_names_groups_and_bitrates():
  assert bl.parse_baselines("codec2,opus") == ["codec2_700C", "codec2_1600", "codec2_3200", "opus_6", "opus_8"]
  assert bl.parse_baselines(" opus_6, opus ,codec2_700c") == ["opus_6", "opus_8", "codec2_700C"]
  assert bl.parse_baselines("") == [] and bl.parse_baselines(()) == []
  assert [bl.bitrate(n) for n in bl.BASELINES] == [700, 1600, 3200, 6000, 8000]
  with pytest.raises(CATError, match=r"unknown baseline 'nope'; valid: codec2, opus, codec2_700C") as e:
    bl.parse_baselines("opus,nope")
  assert "\n" not in str(e.value)
  with pytest.raises(CATError, match="unknown baseline"):
    bl.run_baseline("mp3_128", np.zeros(1600, np.float32), 16000)


class _Stub:
  """Just enough of a model for evaluate's argument checks (it fails before coding anything)."""
  class config:  # noqa: N801
    num_quantizers, sampling_rate = 8, 24000


def test_missing_tool_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(shutil, "which", lambda name: None)
  with pytest.raises(bl.BaselineUnavailableError,
                     match=r"^baseline codec2_3200 needs c2enc/c2dec \(apt-get install codec2\)$"):
    bl.run_baseline("codec2_3200", np.zeros(1600, np.float32), 16000)
  with pytest.raises(bl.BaselineUnavailableError, match=r"opusenc/opusdec \(apt-get install opus-tools\)"):
    ev.evaluate(_Stub(), [np.zeros(100)], (1,), baselines=["opus"])
  assert issubclass(bl.BaselineUnavailableError, CATError)


@pytest.mark.parametrize("name, sr, min_stoi", [("opus_6", 16000, 0.8), ("codec2_3200", 24000, 0.8)])
def test_run_baseline_on_speech(name, sr, min_stoi, speech16k, speech24k):
  _needs(*bl.TOOLS[bl.BASELINES[name][0]][:2])
  x = {16000: speech16k, 24000: speech24k}[sr]
  y = bl.run_baseline(name, x, sr)
  assert y.shape == x.shape and y.dtype == np.float32 and np.abs(y).max() > 0.05
  aligned, lag = bl.align(x, y, int(bl.MAX_LAG_S * sr))
  assert (abs(lag) < 0.002 * sr) if name.startswith("opus") else (0 < lag < 0.05 * sr)  # codec2 delays
  assert stoi(x, aligned, sr) > min_stoi
  if lag:
    assert stoi(x, y, sr) < stoi(x, aligned, sr)  # the alignment is what makes it score


def test_evaluate_with_baselines(tiny_model, speech24k, tmp_path):
  _needs("c2enc", "c2dec", "opusenc", "opusdec")
  rows = ev.evaluate(tiny_model, [speech24k[:24000]], (1,), baselines=["codec2_3200", "opus_6"],
                     out_dir=tmp_path)
  assert [(r["system"], r["bitrate"], r["codebooks"]) for r in rows] == [
      ("cat_jax", 75.0, 1), ("codec2_3200", 3200.0, None), ("opus_6", 6000.0, None)]
  for r in rows:
    assert r["clips"] == 1 and all(np.isfinite(r[k]) for k in METRICS), r
  assert rows[2]["stoi"] > rows[0]["stoi"]  # opus at 6 kbit/s beats the tiny test model at 75 bit/s
  md = (tmp_path / "results.md").read_text().splitlines()
  assert md[0].startswith("| system | bit/s | codebooks | STOI |")
  assert md[2].startswith("| cat_jax | 75 | 1 |") and md[3].startswith("| codec2_3200 | 3200 | - |")
  with open(tmp_path / "results.csv") as f:
    table = list(csv.reader(f))
  assert table[0][:3] == ["system", "bitrate", "codebooks"] and table[3][:3] == ["opus_6", "6000.0", ""]
  assert (tmp_path / "bitrate_quality.png").stat().st_size > 10_000


def test_eval_subcommand_rejects_unknown_baseline(tmp_path, capsys):
  write_audio(tmp_path / "a.wav", _speech_like(24000)[None], 24000)
  assert main(["eval", "--data", str(tmp_path / "a.wav"), "--baselines", "opus,nope"]) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("cat-jax eval: error: unknown baseline 'nope'; valid: codec2, opus,")
