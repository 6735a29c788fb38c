"""The README's main job (`python3 train.py` with no flags): train configs/speech_cpu.py:demo on
real recorded speech (the corpus is built offline on first use), export it to the reference
layout, and score the export on a voice and language it never heard, beside Codec2 and Opus on
the same clips; writes reconstructions (wav), input/output mel pictures and the learning curves.

CAT_JAX_DEMO_STEPS=N shortens the run to N stage-1 steps (smoke tests).
"""
from __future__ import annotations

import os
import time

from cat_jax import CAT
from cat_jax.audio import write_audio
from cat_jax.data.corpus import validation_clips
from cat_jax.data.sources import parse_spec
from cat_jax.eval import baselines
from cat_jax.eval.evaluate import evaluate, markdown_table, mel_comparison
from cat_jax.train import loop, train_config
from cat_jax.train.export import export_workdir
from cat_jax.train.plot import plot_run


def run(recipe, workdir: str, *, log_every: int = 10) -> None:
  """Trains `recipe` (configs/speech_cpu.py:demo: its data.eval_source is a corpus split manifest)
  in `workdir`, exports it to WORKDIR/export and evaluates the export (WORKDIR/eval,
  WORKDIR/reconstructions)."""
  cfg = recipe.copy_and_resolve_references()
  if os.environ.get("CAT_JAX_DEMO_STEPS"):  # a shorter run (smoke tests): stage 1 only
    cfg.num_steps = cfg.schedule.stage1_steps = int(os.environ["CAT_JAX_DEMO_STEPS"])
    cfg.schedule.stage2_steps = 0
    cfg.optim.gen.decay_steps = cfg.optim.disc.decay_steps = cfg.num_steps
  cfg = train_config.parse(cfg)
  t0 = time.perf_counter()
  res = loop.train(cfg, workdir, log_every=log_every)
  print(f"\n[demo] trained to step {res.step} in {time.perf_counter() - t0:.0f} s")
  export = os.path.join(workdir, "export")
  export_workdir(workdir, export)
  model = CAT.from_pretrained(export)
  clips = validation_clips(parse_spec(cfg.data.eval_source)[1], model.config.sampling_rate)
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
