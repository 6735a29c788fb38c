"""`cat-jax plot`: learning curves of a run's metrics.jsonl as a PNG, and its one-line errors."""
import json

import pytest

from cat_jax.cli import main
from cat_jax.train import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows(with_time=True):
  """A synthetic run: training rows every 10 steps (adversarial from step 50), eval rows every 40."""
  rows = []
  for step in range(10, 101, 10):
    adv = step >= 50
    r = {"step": step, "loss": 10.0 / step, "mel": 5.0 / step, "sem": 0.0, "commit": 0.1, "codebook": 0.2,
         "adv": 0.5 if adv else 0.0, "feat": 0.3 if adv else 0.0, "disc_loss": 0.4 if adv else 0.0,
         "grad_norm/gen": 1.0}
    rows.append(r)
    if step % 40 == 0:
      e = {"step": step, "eval/mel": 1.0 / step}
      for n in (1, 4):
        e.update({f"eval/mel@{n}": 2.0 / (step * n), f"eval/paper/stoi@{n}": 0.5 + step / 1000 + n / 100,
                  f"eval/paper/pesq_wb@{n}": 1.5 + step / 100, f"eval/paper/sdr@{n}": 3.0})
      rows.append(e)
  if with_time:
    for i, r in enumerate(rows):
      r["time"] = 1.7e9 + 30.0 * i
  return rows


def _write(workdir, rows=None, extra_lines=()):
  workdir.mkdir(exist_ok=True)
  lines = [json.dumps(r) for r in (_rows() if rows is None else rows)] + list(extra_lines)
  (workdir / "metrics.jsonl").write_text("".join(l + "\n" for l in lines))
  return workdir


def _check_png(path):
  import matplotlib.image
  data = path.read_bytes()
  assert data[:8] == PNG_MAGIC and 10_000 < len(data) < 5_000_000
  img = matplotlib.image.imread(str(path))
  assert img.ndim == 3 and img.shape[0] >= 600 and img.shape[1] >= 1000


def test_cli_writes_curves_png(tmp_path, capsys):
  wd = _write(tmp_path / "run")
  assert main(["plot", str(wd)]) == 0
  _check_png(wd / "curves.png")
  assert "curves.png" in capsys.readouterr().out
  out = tmp_path / "figs" / "c.png"
  assert main(["plot", str(wd), "--out", str(out)]) == 0
  _check_png(out)


def test_series_drawn(tmp_path):
  drawn = plot.plot_metrics(_rows(), tmp_path / "c.png")
  for k in ("loss", "mel", "commit", "codebook", "adv", "feat", "disc_loss"):
    assert k in drawn
  assert "sem" not in drawn and "grad_norm/gen" not in drawn  # all-zero term; not a loss
  for n in (1, 4):
    for k in (f"eval/paper/stoi@{n}", f"eval/paper/pesq_wb@{n}", f"eval/mel@{n}"):
      assert k in drawn and f"{k} vs minutes" in drawn
  assert "eval/paper/sdr@4" not in drawn
  assert plot.plot_run(_write(tmp_path / "run"), tmp_path / "p.png") == str(tmp_path / "p.png")


def test_no_time_no_wall_clock_panels(tmp_path):
  drawn = plot.plot_metrics(_rows(with_time=False), tmp_path / "c.png")
  assert "eval/paper/stoi@4" in drawn and not any(d.endswith("vs minutes") for d in drawn)
  _check_png(tmp_path / "c.png")


def test_resumed_run_keeps_last_value_per_step(tmp_path):
  rows = _rows() + [{"step": 40, "loss": 99.0, "time": 1.8e9}]
  assert [v for _, v, _ in plot._series(rows, "loss")][3] == 99.0
  assert [s for s, _, _ in plot._series(rows, "loss")] == list(range(10, 101, 10))


def test_malformed_lines_are_skipped_with_a_warning(tmp_path, capsys):
  wd = _write(tmp_path / "run", extra_lines=["{not json", "[1, 2]", '{"loss": 1.0}', '{"step": "x"}', '{"step": 1'])
  assert main(["plot", str(wd)]) == 0
  assert "skipped 5 malformed line(s)" in capsys.readouterr().err
  _check_png(wd / "curves.png")


@pytest.mark.parametrize("case, message", [
    ("missing", "run directory not found"),
    ("no_file", "no metrics.jsonl"),
    ("empty", "is empty"),
    ("garbage", "no usable lines (2 malformed)"),
    ("nothing", "nothing to plot"),
])
def test_errors_are_one_line(tmp_path, capsys, case, message):
  wd = tmp_path / "run"
  if case != "missing":
    wd.mkdir()
  if case == "empty":
    (wd / "metrics.jsonl").write_text("\n")
  elif case == "garbage":
    (wd / "metrics.jsonl").write_text("oops\n{\"loss\": 1}\n")
  elif case == "nothing":
    _write(wd, [{"step": 1, "lr/gen": 0.1}])
  assert main(["plot", str(wd)]) == 2
  err = capsys.readouterr().err
  assert len(err.strip().splitlines()) == 1 and err.startswith("cat-jax plot: error: ") and message in err
  assert not (wd / "curves.png").exists()
