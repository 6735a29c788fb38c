"""evaluate() on the golden tiny model with real speech; reports; the `eval` subcommand."""
import csv

import numpy as np
import pytest

from cat_jax.audio import write_audio
from cat_jax.cli import evaluate as cli_eval
from cat_jax.cli import main
from cat_jax.errors import CodesError
from cat_jax.eval import evaluate as ev
from cat_jax.eval.metrics import METRICS, compute_all


@pytest.fixture(scope="module")
def clips(golden, speech24k):
  """Two real speech clips at 24 kHz: the golden input (1 s) and espeak (about 1 s, mono (1, T))."""
  return [golden["input_values"][0, 0], speech24k[None, :24000]]


def test_default_quantizers():
  assert ev.default_quantizers(8) == (1, 2, 4, 8)
  assert ev.default_quantizers(32) == (1, 2, 4, 8, 16, 32)
  assert ev.default_quantizers(6) == (1, 2, 4, 6)


def test_evaluate_rows_reports_and_png(tiny_model, clips, tmp_path):
  rows = ev.evaluate(tiny_model, clips, (8, 1, 2), out_dir=tmp_path)
  assert [r["codebooks"] for r in rows] == [1, 2, 8]
  assert [r["bitrate"] for r in rows] == [75.0, 150.0, 600.0]  # n * log2(64) * 12.5 Hz
  assert all(r["clips"] == 2 for r in rows)
  for r in rows:
    assert all(np.isfinite(r[k]) for k in METRICS), r
    assert 0.0 <= r["stoi"] <= 1.0 and r["mel_loss"] > 0 and r["sc"] > 0
  with open(tmp_path / "results.csv") as f:
    table = list(csv.reader(f))
  assert table[0] == [k for k, _ in ev.COLUMNS]
  assert [float(v) for line in table[1:] for v in line] == pytest.approx(
      [float(r[k]) for r in rows for k, _ in ev.COLUMNS], rel=1e-12)
  md = (tmp_path / "results.md").read_text().splitlines()
  assert md[0] == "| bit/s | codebooks | STOI | PESQ-NB | PESQ-WB | mel loss | STFT dist | SI-SDR | SDR | SC | F0 match |"
  assert len(md) == 2 + len(rows) and md[2].startswith("| 75 | 1 | ")
  png = (tmp_path / "bitrate_quality.png").read_bytes()
  assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_prefix_decodes_match_the_reference_and_rows_average_them(tiny_model, golden):
  """One encode, prefix decodes == the PyTorch reference's decodes with 3 and all 8 codebooks."""
  x = golden["input_values"][0, 0]  # full-length clip (24000 samples)
  n_part = int(golden["nq_partial"])
  ys = ev.reconstruct(tiny_model, x[None], (n_part, 8))
  np.testing.assert_allclose(ys[8][0], golden["decoded_audio"][0, 0, : x.size], atol=1e-4)
  np.testing.assert_allclose(ys[n_part][0], golden["decoded_audio_nq_partial"][0, 0, : x.size], atol=1e-4)
  ys_half = ev.reconstruct(tiny_model, 0.5 * x[None], (n_part, 8))
  rows = ev.evaluate(tiny_model, [x, 0.5 * x], (n_part, 8))
  for row in rows:
    n = row["codebooks"]
    a, b = compute_all(x, ys[n][0], 24000), compute_all(0.5 * x, ys_half[n][0], 24000)
    for k in METRICS:
      assert row[k] == pytest.approx((a[k] + b[k]) / 2, rel=1e-6), (n, k)


def test_evaluate_resamples_clips_given_at_another_rate(tiny_model, speech16k, speech24k):
  rows = ev.evaluate(tiny_model, [speech16k[:16000]], (2,), sr=16000)
  assert rows[0]["clips"] == 1 and np.isfinite(rows[0]["stft_dist"])
  for bad in ((1, 9), (1, None)):  # None means "all" to one count, not inside a list of counts
    with pytest.raises(CodesError, match="1..8"):
      ev.evaluate(tiny_model, [speech24k], bad)


def test_eval_subcommand(tiny_model, golden_dir, clips, tmp_path, capsys, monkeypatch):
  data = tmp_path / "data"
  write_audio(data / "a.wav", clips[0][None], 24000)
  write_audio(data / "sub" / "b.flac", clips[1], 24000)
  (data / "notes.txt").write_text("not audio")
  assert ev.find_audio(data) == [str(data / "a.wav"), str(data / "sub" / "b.flac")]
  load_codec = cli_eval.load_codec
  monkeypatch.setattr(cli_eval, "load_codec", lambda path, **kw: tiny_model if path == str(golden_dir) and not kw
                      else load_codec(path, **kw))  # reuse the fixture's compiled functions
  out = tmp_path / "out"
  assert main(["eval", "--model", str(golden_dir), "--data", str(data),
               "--num-quantizers", "2,1", "--max-clips", "1", "--out", str(out)]) == 0
  printed = capsys.readouterr().out.splitlines()
  assert printed[0].startswith("| bit/s |") and len(printed) == 4
  with open(out / "results.csv") as f:
    assert [line[1] for line in list(csv.reader(f))[1:]] == ["1", "2"]
  assert (out / "bitrate_quality.png").stat().st_size > 0

  def fails(*argv):
    rc = main(["eval", "--data", str(data), *argv])
    return rc, capsys.readouterr().err

  rc, err = fails("--model", str(golden_dir), "--num-quantizers", "1,99")
  assert rc == 2 and "1..8" in err
  rc, err = fails("--checkpoint", str(tmp_path))
  assert rc == 2 and "no training checkpoint in" in err
  assert main(["eval", "--model", str(golden_dir), "--data", str(tmp_path / "missing")]) == 2
  assert "not found" in capsys.readouterr().err
