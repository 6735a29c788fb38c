"""Slow: a shortened configs/speech_cpu.py on the real recorded speech; STOI on the unseen voice rises.

Run with `pytest -m slow -s tests/train/test_speech_cpu.py` (about 8 minutes on two cores).
"""
import json
import os
import sys

import pytest

from cat_jax.data import asterisk

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
@pytest.mark.skipif(asterisk.missing() is not None, reason=str(asterisk.missing()))
def test_speech_cpu_learns_on_unseen_voice(tmp_path):
  sys.path.insert(0, ROOT)
  from cat_jax.train import loop
  from configs import speech_cpu
  cfg = speech_cpu.get_config()
  cfg.schedule.stage1_steps, cfg.schedule.stage2_steps = 600, 20
  cfg.num_steps = cfg.optim.gen.decay_steps = cfg.optim.disc.decay_steps = 620
  cfg.eval_every, cfg.checkpoint_every = 300, 310
  loop.train(cfg, str(tmp_path), log_every=20)
  rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  key = "eval/paper/stoi@4"
  stoi = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
  print("STOI on the unseen voice by step:", stoi)
  assert [s for s, _ in stoi] == [300, 600]
  assert stoi[-1][1] > stoi[0][1] + 0.02 and stoi[-1][1] > 0.55
  adv = [r for r in rows if r["step"] > 600 and "adv" in r]
  assert adv and all(r["adv"] > 0 for r in adv)  # the adversarial stage ran
