"""Decoder fine-tuning from a trained codec (`init_from`): encoder and quantizer stay fixed so
existing codes keep their meaning. get_config('tiny') builds on configs/tiny.py, else on the
released 1.6 B recipe (configs/moss_audio_tokenizer.py). Set --config.init_from=DIR, or a Hub id
such as OpenMOSS-Team/MOSS-Audio-Tokenizer (optionally @REVISION) for the released weights."""
import importlib.util
import os


def _load(name):
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"cat_configs_{name}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _base(arg):
  """(base recipe config, init_from or None) for the argument: 'tiny', 'nano' / 'nano_ci'
  (configs/nano.py, 48 kHz stereo v2), 'dir=DIR' (a trained codec's directory: its config.json is
  the model, DIR the init_from; built on the Nano recipe for a v2 file, else on the 1.6 B one), or
  anything else for the released 1.6 B recipe."""
  if arg == "tiny":
    return _load("tiny").get_config(None), None
  if arg in ("nano", "nano_ci"):
    return _load("nano").get_config("ci" if arg == "nano_ci" else None), None
  if arg and arg.startswith("dir="):
    import json
    path = arg[len("dir="):]
    with open(os.path.join(path, "config.json")) as f:
      raw = json.load(f)
    from cat_jax.config import CATConfig
    v2 = CATConfig.from_dict(raw).v2
    c = _load("nano" if v2 else "moss_audio_tokenizer").get_config(None)
    c.model = raw
    return c, path
  return _load("moss_audio_tokenizer").get_config(arg), None


def get_config(arg=None):
  c, init_from = _base(arg)
  if init_from is not None:
    c.init_from = init_from
  # c.init_from (from the base recipe, None) is required: a trained codec of this architecture
  # (reference layout, Orbax params or a training workdir); without it the config is rejected.
  c.trainable = "decoder"  # frozen parts get exactly zero update (cat_jax/train/optimizer.py)
  c.loss.sem = 0.0  # the LM only shapes encoder/quantizer, which are frozen here
  # The decoder is already trained: go straight to the adversarial stage (TRAINING.md stage 2 recipe).
  c.schedule.stage1_steps = 0
  c.schedule.stage2_steps = 2000 if arg == "tiny" else 50_000  # ours
  c.num_steps = c.schedule.stage2_steps
  c.batch_size = c.schedule.stage2_batch_size or c.batch_size  # TRAINING.md stage 2 batch (stage1_batch_size follows)
  c.optim.gen.lr = c.optim.disc.lr = c.optim.gen.lr * 0.5 if arg == "tiny" else 1e-5  # gentler (ours)
  return c
