"""Learning curves of a training run: `cat-jax plot WORKDIR` reads WORKDIR/metrics.jsonl and draws
the training losses, and the eval metrics (STOI, PESQ-WB, mel per codebook count) against step and
wall-clock minutes, into one PNG."""
from __future__ import annotations

import json
import math
import os
import sys

from cat_jax.errors import CATError

METRICS_FILE = "metrics.jsonl"
# Generator total, its terms, and the discriminator's loss (cat_jax.train.step).
TRAIN_KEYS = ("loss", "mel", "sem", "commit", "codebook", "adv", "feat", "disc_loss")
# (panel title, key prefix before "@<codebooks>") of the eval rows (cat_jax.train.loop.evaluate).
EVAL_PANELS = (("STOI", "eval/paper/stoi@"), ("PESQ-WB", "eval/paper/pesq_wb@"), ("eval mel", "eval/mel@"))


def _num(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_metrics(workdir: str | os.PathLike) -> tuple[list[dict], int]:
  """The usable rows of WORKDIR/metrics.jsonl and the number of malformed lines skipped."""
  workdir = os.fspath(workdir)
  if not os.path.isdir(workdir):
    raise CATError(f"run directory not found: {workdir}")
  path = os.path.join(workdir, METRICS_FILE)
  if not os.path.isfile(path):
    raise CATError(f"no {METRICS_FILE} in {workdir} (not a training run, or nothing logged yet)")
  rows, bad = [], 0
  with open(path, errors="replace") as f:
    for line in f:
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except ValueError:
        row = None
      if not isinstance(row, dict) or not _num(row.get("step")):
        bad += 1
        continue
      rows.append(row)
  if not rows and not bad:
    raise CATError(f"{path} is empty")
  if not rows:
    raise CATError(f"{path} has no usable lines ({bad} malformed)")
  if bad:
    print(f"warning: skipped {bad} malformed line(s) of {path}", file=sys.stderr)
  return rows, bad


def _series(rows: list[dict], key: str) -> list[tuple[float, float, float | None]]:
  """(step, value, time) of `key`, sorted by step; a step logged twice (a resume) keeps the last."""
  pts = {}
  for r in rows:
    if _num(r.get(key)):
      pts[r["step"]] = (r["step"], float(r[key]), r["time"] if _num(r.get("time")) else None)
  return [pts[s] for s in sorted(pts)]


def _eval_keys(rows: list[dict], prefix: str) -> list[str]:
  """Keys `prefix<n>` present in rows, by codebook count n; `eval/mel` alone when no per-count mel."""
  counts = {int(k[len(prefix):]) for r in rows for k in r
            if k.startswith(prefix) and k[len(prefix):].isdigit()}
  if not counts and prefix == "eval/mel@" and any("eval/mel" in r for r in rows):
    return ["eval/mel"]
  return [f"{prefix}{n}" for n in sorted(counts)]


def plot_metrics(rows: list[dict], out: str | os.PathLike) -> list[str]:
  """Draws metrics rows to a PNG at `out`; returns the series drawn (key, or key + ' vs minutes')."""
  from matplotlib.figure import Figure  # no pyplot: leaves the process's backend alone (renders with Agg)
  train = {k: _series(rows, k) for k in TRAIN_KEYS}
  train = {k: s for k, s in train.items() if any(v != 0 for _, v, _ in s)}  # e.g. adv is 0 in stage 1
  evals = [(title, {k: _series(rows, k) for k in _eval_keys(rows, prefix)}) for title, prefix in EVAL_PANELS]
  has_eval = any(keys for _, keys in evals)
  times = [r["time"] for r in rows if _num(r.get("time"))]
  has_time = any(t is not None for _, keys in evals for s in keys.values() for _, _, t in s)
  if not train and not has_eval:
    raise CATError(f"nothing to plot: no training losses ({', '.join(TRAIN_KEYS)}) or eval metrics")
  n_rows = bool(train) + has_eval + has_time
  fig = Figure(figsize=(14, 3.8 * n_rows))
  grid = fig.add_gridspec(n_rows, 3)
  drawn, row = [], 0
  if train:
    ax = fig.add_subplot(grid[0, :])
    positive = all(v >= 0 for s in train.values() for _, v, _ in s)
    for k, s in train.items():
      pts = [(x, v) for x, v, _ in s if v > 0 or not positive]
      ax.plot([x for x, _ in pts], [v for _, v in pts], label=k, lw=1.2 if k == "loss" else 0.9)
      drawn.append(k)
    if positive:
      ax.set_yscale("log")
    ax.set_title("training losses")
    ax.set_xlabel("step")
    ax.grid(True, alpha=0.3)
    ax.legend(ncol=len(train), fontsize="small")
    row = 1
  t0 = min(times, default=0.0)
  for axis in (["step"] if has_eval else []) + (["minutes"] if has_time else []):
    for col, (title, keys) in enumerate(evals):
      ax = fig.add_subplot(grid[row, col])
      for k, s in keys.items():
        pts = ([(x, v) for x, v, _ in s] if axis == "step" else
               [((t - t0) / 60, v) for _, v, t in s if t is not None])
        if pts:
          ax.plot(*zip(*pts), marker="o", ms=3, label=k.rsplit("@", 1)[-1] if "@" in k else k)
          drawn.append(k if axis == "step" else f"{k} vs minutes")
      if not keys:
        ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
      else:
        ax.legend(title="codebooks" if any("@" in k for k in keys) else None, fontsize="small")
      ax.set_title(f"{title} vs {'wall-clock minutes' if axis == 'minutes' else 'step'}")
      ax.set_xlabel(axis)
      ax.grid(True, alpha=0.3)
    row += 1
  fig.tight_layout()
  out = os.fspath(out)
  try:
    if os.path.dirname(out):
      os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=100, format="png")
  except OSError as e:
    raise CATError(f"cannot write {out}: {e.strerror or e}") from None
  return drawn


def plot_run(workdir: str | os.PathLike, out: str | os.PathLike | None = None, verbose: bool = False) -> str:
  """Draws WORKDIR/metrics.jsonl to `out` (default WORKDIR/curves.png); returns the PNG's path."""
  rows, _ = read_metrics(workdir)
  out = os.fspath(out) if out is not None else os.path.join(os.fspath(workdir), "curves.png")
  drawn = plot_metrics(rows, out)
  if verbose:
    print(f"{os.fspath(workdir)}: {len(rows)} rows, {len(drawn)} series -> {out}")
  return out
