#!/usr/bin/env python3
"""Train CAT.

  python3 train.py --config=configs/tiny.py --workdir=runs/tiny [--config.num_steps=200 ...]
  python3 train.py      # the bundled default (cat_jax/train/demo.py): real-speech corpus -> configs/speech_cpu.py:demo
                        #   -> export -> scored on an unseen voice beside Codec2 and Opus -> wavs, mel pictures, curves

The recipe is parsed once into a typed config (cat_jax/train/train_config.py): an unknown key or a
bad value stops here with one line naming it. Rerunning the same command resumes from WORKDIR's
newest checkpoint; SIGTERM saves a checkpoint and exits. Set-up (Debian audio packages, the .venv
with JAX, Flax and a CPU torch) is `bash .ci/setup.sh`; run from another interpreter, this script
re-runs itself in that .venv, running the set-up script first on a fresh machine.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _use_venv():
  """Re-exec in .venv/bin/python when this interpreter lacks the stack (nothing is installed here)."""
  try:
    import absl, flax, jax, ml_collections, cat_jax  # noqa: F401
    return
  except ImportError as e:
    missing = e.name
  venv_python = os.path.join(HERE, ".venv", "bin", "python")
  if os.path.realpath(sys.prefix) == os.path.realpath(os.path.join(HERE, ".venv")):  # already in it
    raise SystemExit(f"train.py: {missing} is missing from .venv; rerun `bash .ci/setup.sh`")
  if not os.path.exists(venv_python):  # a fresh machine: the one set-up script, then this command again
    import subprocess
    print(f"train.py: {missing} is not installed; setting up with `bash .ci/setup.sh` (once)", flush=True)
    if subprocess.call(["bash", os.path.join(HERE, ".ci", "setup.sh")]) != 0:
      raise SystemExit("train.py: set-up failed (see above); fix it and rerun `bash .ci/setup.sh`")
  os.execv(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:])


if __name__ == "__main__":
  _use_venv()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "a recipe in configs/ (e.g. configs/tiny.py)", lock_config=False)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and TensorBoard events go")
flags.DEFINE_integer("log_every", 10, "log metrics every N steps")
FLAGS = flags.FLAGS
_IN_MAIN = []  # set once flags are parsed: an AttributeError before that is a bad --config.KEY override


def _bad_override(e: Exception) -> str:
  """config_flags' error for --config.KEY=... naming no key of the recipe, as one line with the dotted key."""
  import re
  text = str(e).replace("\\", "")
  name = (re.findall(r"'(\w+)'", text) or ["?"])[0]
  close = re.findall(r'Did you mean "(\w+)"', text)
  keys = [a[len("--config."):].split("=")[0] for a in sys.argv[1:] if a.startswith("--config.")]
  key = next((k for k in keys if name in k.split(".")), name)
  hint = f"; did you mean {'.'.join(close[0] if p == name else p for p in key.split('.'))!r}?" if close else ""
  return f"train.py: error: unknown training-config key {key!r} (--config.{key}=...){hint}"


def main(argv):
  del argv
  _IN_MAIN.append(True)
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; the progress line says enough
  from cat_jax.errors import CATError
  from cat_jax.train import loop, train_config
  from cat_jax.train.parallel import maybe_initialize_distributed
  try:
    if FLAGS.config is None:
      from cat_jax.train import demo
      from configs import speech_cpu
      demo.run(speech_cpu.get_config("demo"), FLAGS.workdir or os.path.join(HERE, "runs", "demo"),
               log_every=FLAGS.log_every)
      return
    if not FLAGS.workdir:
      raise app.UsageError("--workdir is required with --config")
    cfg = train_config.parse(FLAGS.config)
    maybe_initialize_distributed(cfg)  # before anything touches a device
    res = loop.train(cfg, FLAGS.workdir, log_every=FLAGS.log_every)
    print(f"[train] {'preempted at' if res.preempted else 'finished'} step {res.step}; workdir {FLAGS.workdir}")
  except CATError as e:
    print(f"train.py: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  sys.path.insert(0, HERE)
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:
    if _IN_MAIN:
      raise
    print(_bad_override(e), file=sys.stderr)
    sys.exit(2)
