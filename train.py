#!/usr/bin/env python3
"""Train CAT.

  python3 train.py --config=configs/tiny.py --workdir=runs/tiny [--config.num_steps=200 ...]
  python3 train.py      # the bundled default: real-speech corpus -> configs/speech_cpu.py:demo -> export
                        #   -> scored on an unseen voice beside Codec2 and Opus -> wavs, mel pictures, curves

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
  """The README's main job: train configs/speech_cpu.py:demo on real speech (the corpus is built
  offline on first use), export it to the reference layout, and score the export on a voice and
  language it never heard, beside Codec2 and Opus on the same clips; writes reconstructions (wav),
  input/output mel pictures and the learning curves."""
  import time

  from cat_jax import CAT
  from cat_jax.audio import write_audio
  from cat_jax.checkpoint import export_workdir
  from cat_jax.data.corpus import validation_clips
  from cat_jax.eval import baselines
  from cat_jax.eval.evaluate import evaluate, markdown_table, mel_comparison
  from cat_jax.train import loop
  from cat_jax.train.plot import plot_run
  from configs import speech_cpu

  cfg = speech_cpu.get_config("demo")
  if os.environ.get("CAT_JAX_DEMO_STEPS"):  # a shorter run (smoke tests): stage 1 only
    cfg.num_steps = cfg.schedule.stage1_steps = int(os.environ["CAT_JAX_DEMO_STEPS"])
    cfg.schedule.stage2_steps = 0
    cfg.optim.gen.decay_steps = cfg.optim.disc.decay_steps = cfg.num_steps
  t0 = time.perf_counter()
  res = loop.train(cfg, workdir, log_every=FLAGS.log_every)
  print(f"\n[demo] trained to step {res.step} in {time.perf_counter() - t0:.0f} s")
  export = os.path.join(workdir, "export")
  export_workdir(workdir, export)
  model = CAT.from_pretrained(export)
  clips = validation_clips(cfg.data.eval_source.partition(":")[2], model.config.sampling_rate)
  names = []
  for name in baselines.parse_baselines("codec2,opus"):
    try:
      baselines.check_available(name)
      names.append(name)
    except baselines.BaselineUnavailableError as e:
      print(f"[demo] {e}; its row is left out")
  n = model.config.num_quantizers
  rows = evaluate(model, [c for _, c in clips], sorted({1, max(1, n // 2), n}), baselines=names,
                  out_dir=os.path.join(workdir, "eval"))
  secs = sum(c.shape[-1] for _, c in clips) / model.config.sampling_rate
  print(f"\n[demo] {len(clips)} clips ({secs:.0f} s) of a voice and language never trained on "
        f"(asterisk ru), the exported model beside classic codecs:\n{markdown_table(rows)}")
  out = os.path.join(workdir, "reconstructions")
  os.makedirs(out, exist_ok=True)
  pairs = []
  for name, x in clips[:3]:
    y = model.decode(model.encode(x[None]).audio_codes).audio[0, :, : x.shape[-1]]
    write_audio(os.path.join(out, f"{name}.input.wav"), x, model.config.sampling_rate)
    write_audio(os.path.join(out, f"{name}.output.wav"), y, model.config.sampling_rate)
    pairs.append((name, x.mean(0), y.mean(0)))
  png = mel_comparison(pairs, model.config.sampling_rate, os.path.join(out, "mel.png"))
  curves = plot_run(workdir)
  print(f"[demo] exported to {export} ({model.config.bits_per_second():.0f} bit/s); reconstructions and {png}; "
        f"learning curves {curves}")


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
