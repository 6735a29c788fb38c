#!/usr/bin/env python3
"""Train CAT.

  python3 train.py --config=configs/tiny.py --workdir=runs/tiny [--config.num_steps=200 ...]
  python3 train.py      # the bundled default: corpus -> tiny training -> eval -> export -> reconstruct

Without a usable environment this script first sets one up (`.ci/setup.sh`: Debian audio packages
and a .venv with JAX, Flax and a CPU torch), then re-runs itself inside it. Rerunning the same
command resumes from WORKDIR's newest checkpoint; SIGTERM saves a checkpoint and exits.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _bootstrap():
  """Re-exec inside .venv unless this interpreter already has the stack."""
  try:
    import absl, flax, grain, jax, ml_collections, orbax.checkpoint, cat_jax  # noqa: F401
    return
  except ImportError:
    pass
  venv_python = os.path.join(HERE, ".venv", "bin", "python")
  if os.path.realpath(sys.executable) == os.path.realpath(venv_python) and os.environ.get("CAT_JAX_BOOTSTRAPPED"):
    raise SystemExit("train.py: the .venv is incomplete; run `bash .ci/setup.sh` and read its output")
  subprocess.check_call(["bash", os.path.join(HERE, ".ci", "setup.sh")])
  os.environ["CAT_JAX_BOOTSTRAPPED"] = "1"
  os.execv(venv_python, [venv_python, os.path.abspath(__file__)] + sys.argv[1:])


if __name__ == "__main__":
  _bootstrap()

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

config_flags.DEFINE_config_file("config", None, "a recipe in configs/ (e.g. configs/tiny.py)", lock_config=False)
flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and TensorBoard events go")
flags.DEFINE_integer("log_every", 10, "log metrics every N steps")
FLAGS = flags.FLAGS


def demo(workdir: str) -> None:
  """The README's main job: build the corpus, train configs/tiny.py for a few minutes, evaluate
  before and after, export to the reference layout, and reconstruct a clip with the export."""
  import glob
  import time

  import jax

  from cat_jax import CAT
  from cat_jax.audio import load_audio, write_audio
  from cat_jax.checkpoint import export_workdir
  from cat_jax.codec import abstract_model
  from cat_jax.data.corpus import build_corpus
  from cat_jax.eval.evaluate import evaluate, markdown_table
  from cat_jax.train import loop
  from cat_jax.train import state as state_lib
  from configs import tiny

  corpus = os.path.join(HERE, "runs", "corpus")
  if not os.path.exists(os.path.join(corpus, "manifest.jsonl")):
    t0 = time.perf_counter()
    build_corpus(corpus, seed=0)
    print(f"[demo] built the real-audio corpus in {corpus} ({time.perf_counter() - t0:.1f} s)")
  cfg = tiny.get_config()
  cfg.data.source = f"folder:{corpus}"
  cfg.num_steps = int(os.environ.get("CAT_JAX_DEMO_STEPS", cfg.num_steps))
  clips = [load_audio(p, 24000, 1) for p in sorted(glob.glob(os.path.join(corpus, "speech", "*.wav")))[:4]]
  trainer = state_lib.build_trainer(cfg)
  mc = trainer.model_config
  graphdef = abstract_model(mc)[0]

  def table(params, tag):
    rows = evaluate(CAT(mc, graphdef, params), clips, (1, 2, 4, 8), out_dir=os.path.join(workdir, f"eval_{tag}"))
    print(f"\n[demo] reconstruction quality {tag} training (4 speech clips):\n{markdown_table(rows)}")
    return rows

  before = table(jax.jit(lambda k: state_lib.init_state(trainer, k).codec)(jax.random.key(cfg.seed)), "before")
  t0 = time.perf_counter()
  res = loop.train(cfg, workdir, log_every=FLAGS.log_every)
  print(f"\n[demo] trained to step {res.step} in {time.perf_counter() - t0:.0f} s")
  after = table(res.state.codec, "after")
  for b, a in zip(before, after):
    print(f"[demo] {a['codebooks']} codebooks: mel {b['mel_loss']:.3f} -> {a['mel_loss']:.3f}, "
          f"STOI {b['stoi']:.3f} -> {a['stoi']:.3f}")
  export = os.path.join(workdir, "export")
  export_workdir(workdir, export)
  model = CAT.from_pretrained(export)
  x = clips[0]
  enc = model.encode(x[None])
  y = model.decode(enc.audio_codes).audio[0, :, : x.shape[-1]]
  write_audio(os.path.join(workdir, "reconstruction.wav"), y, model.config.sampling_rate)
  print(f"[demo] exported to {export}; reconstructed a {x.shape[-1] / 24000:.2f} s clip at "
        f"{model.config.bits_per_second():.0f} bit/s -> {os.path.join(workdir, 'reconstruction.wav')}")


def main(argv):
  del argv
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO; the progress line says enough
  from cat_jax.errors import CATError
  from cat_jax.train import loop
  try:
    if FLAGS.config is None:
      demo(FLAGS.workdir or os.path.join(HERE, "runs", "demo"))
      return
    if not FLAGS.workdir:
      raise app.UsageError("--workdir is required with --config")
    from cat_jax.parallel import maybe_initialize_distributed
    maybe_initialize_distributed(FLAGS.config)
    res = loop.train(FLAGS.config, FLAGS.workdir, log_every=FLAGS.log_every)
    print(f"[train] {'preempted at' if res.preempted else 'finished'} step {res.step}; workdir {FLAGS.workdir}")
  except CATError as e:
    print(f"train.py: error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  sys.path.insert(0, HERE)
  app.run(main)
