"""`cat-jax plot WORKDIR [--out PNG]`: a training run's learning curves (cat_jax.train.plot)."""
from __future__ import annotations

from cat_jax.train import plot


def register(sub) -> None:
  p = sub.add_parser("plot", help="a training run's learning curves (WORKDIR/metrics.jsonl) -> PNG",
                     description=plot.__doc__)
  p.add_argument("workdir", help="the run's WORKDIR (holds metrics.jsonl)")
  p.add_argument("--out", help="output PNG (default: WORKDIR/curves.png)")
  p.set_defaults(func=run)


def run(args) -> int:
  plot.plot_run(args.workdir, args.out, verbose=True)
  return 0
