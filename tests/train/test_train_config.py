"""The typed training config: every recipe in configs/ parses and builds its trainer abstractly;
unknown, misspelled and bad keys are one-line errors naming the dotted key; the saved run config
round-trips; the stage-2 batch is honoured."""
import json
import pathlib

import jax
import ml_collections
import pytest

from cat_jax.errors import ConfigError
from cat_jax.train import parallel
from cat_jax.train import state as state_lib
from cat_jax.train import train_config

RELEASED = pathlib.Path(__file__).resolve().parents[1] / "data" / "released"

# Every get_config argument of every recipe (the recipes reject any other argument).
RECIPES = [("tiny", None), ("tiny", "ci"), ("base", None), ("base", "runlocal"), ("moss_audio_tokenizer", None),
           ("moss_audio_tokenizer", "runlocal"), ("speech_cpu", None), ("speech_cpu", "demo"), ("speech_cpu", "ci"),
           ("finetune_decoder", None), ("finetune_decoder", "tiny"), ("finetune_decoder", "runlocal")]


def _as_written(config_fn, name, arg, golden_dir):
  """The recipe as a user runs it: finetune_decoder with the init_from its docstring asks for."""
  c = config_fn(name, arg)
  if name == "finetune_decoder":
    c.init_from = str(golden_dir if arg == "tiny" else RELEASED)
  return c


def _error(cfg) -> str:
  with pytest.raises(ConfigError) as e:
    train_config.parse(cfg)
  msg = str(e.value)
  assert "\n" not in msg, msg
  return msg


@pytest.mark.parametrize("name,arg", RECIPES)
def test_every_recipe_builds_its_trainer_abstractly(config_fn, golden_dir, name, arg):
  cfg = train_config.parse(_as_written(config_fn, name, arg, golden_dir))
  trainer = state_lib.build_trainer(cfg)
  state = parallel.abstract_state(trainer)  # jax.eval_shape of init_state: no weights allocated
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(state))
  for part in (state.codec, state.lm, state.disc):
    assert state_lib.num_params(part) > 0
  assert cfg.num_steps > 0 and cfg.segment_frames() >= 1
  for stage in (1, 2):
    assert cfg.stage_batch_size(stage) >= 1


def test_abstract_step_at_the_stage2_batch(fast_cfg):
  """The stage-2 step traces at schedule.stage2_batch_size (no compile)."""
  c = fast_cfg.copy_and_resolve_references()
  c.batch_size, c.schedule.stage1_batch_size, c.schedule.stage2_batch_size = 4, 4, 2
  cfg = train_config.parse(c)
  trainer = state_lib.build_trainer(cfg)
  state = parallel.abstract_state(trainer)
  b, t = cfg.stage_batch_size(2), cfg.segment_samples()
  batch = {"audio": jax.ShapeDtypeStruct((b, t, 1), "float32"), "lengths": jax.ShapeDtypeStruct((b,), "int32"),
           "text": jax.ShapeDtypeStruct((b, 8), "int32"), "text_lengths": jax.ShapeDtypeStruct((b,), "int32")}
  from cat_jax.train import step as step_lib
  _, m = jax.eval_shape(lambda s, x: step_lib.train_step(trainer, s, x, stage=2), state, batch)
  assert m["loss"].shape == () and m["adversarial"].shape == ()


def test_stage_batches(config_fn):
  moss = train_config.parse(config_fn("moss_audio_tokenizer"))
  assert (moss.stage_batch_size(1), moss.stage_batch_size(2)) == (1536, 768)  # TRAINING.md: 1536, then 768
  assert (moss.stage(519_999), moss.stage(520_000)) == (1, 2)
  c = config_fn("moss_audio_tokenizer")
  c.batch_size = 256  # what --config.batch_size=256 does: the stage-1 batch follows (a FieldReference)
  assert c.schedule.stage1_batch_size == 256 and train_config.parse(c).stage_batch_size(2) == 768
  tiny = config_fn("tiny")
  tiny.batch_size = 8
  assert train_config.parse(tiny).stage_batch_size(2) == 8  # tiny keeps one batch for both stages
  raw = config_fn("tiny").to_dict()
  raw["schedule"]["stage1_batch_size"] = 3  # untied from batch_size=4
  assert _error(raw).startswith("schedule.stage1_batch_size=3: differs from batch_size=4")


def test_unknown_and_misspelled_keys(config_fn):
  c = config_fn("tiny")
  c.loss.recc = 15.0
  assert _error(c) == "unknown training-config key 'loss.recc'; did you mean 'loss.rec'?"
  c = config_fn("tiny")
  c.optim.gen.warmup = 10
  assert _error(c) == "unknown training-config key 'optim.gen.warmup'; did you mean 'optim.gen.warmup_steps'?"
  c = config_fn("tiny")
  c.warmup_steps = 10  # at the wrong level
  assert _error(c) == "unknown training-config key 'warmup_steps'; did you mean 'optim.gen.warmup_steps'?"
  c = config_fn("tiny")
  c.frobnicate = 1
  assert _error(c).startswith("unknown training-config key 'frobnicate' (known here: model, data, ")
  c = config_fn("tiny")
  c.mesh.dcn = 2
  assert "'mesh.dcn'" in _error(c) and "'mesh.dcn_data'" in _error(c)


def test_bad_data_source(config_fn):
  for bad, why in (("synthetic_speech", "unknown source kind"), ("tfds", "tfds needs a dataset name"),
                   ("folder:", "folder needs a path"), ("s3:bucket/x", "unknown source kind 's3'")):
    c = config_fn("tiny")
    c.data.source = bad
    msg = _error(c)
    assert msg.startswith(f"data.source={bad!r}: {why}"), msg
  c = config_fn("speech_cpu")
  c.data.eval_source = "nowhere"
  assert _error(c).startswith("data.eval_source='nowhere': unknown source kind")


@pytest.mark.parametrize("arg", [None, "tiny", "runlocal"])
def test_init_from_required_with_frozen_parts(config_fn, arg):
  c = config_fn("finetune_decoder", arg)
  assert c.init_from is None and c.trainable == "decoder"
  assert _error(c) == ("init_from=None: must name a trained codec with trainable='decoder' (the frozen parts "
                       "would stay random)")
  c = config_fn("tiny")
  c.trainable = "decoder+lm"
  assert _error(c).startswith("init_from=None: must name a trained codec with trainable='decoder+lm'")
  c.init_from = "runs/some_codec"  # a str field: --config.init_from=DIR overrides it
  assert train_config.parse(c).init_from == "runs/some_codec"


def test_types_and_ranges_name_the_field(config_fn):
  cases = [("batch_size", 2.5, "batch_size=2.5: expected an integer"),
           ("remat", 1, "remat=1: expected true or false"),
           ("optim.gen.lr", -1.0, "optim.gen.lr=-1.0: must be > 0"),
           ("optim.disc.decay", "linear", "optim.disc.decay='linear': unknown lr decay"),
           ("loss.mel.n_mels", [10, 40], "loss.mel.n_mels=(10, 40): needs one entry per window"),
           ("data.gain_db", [1.0], "data.gain_db=[1.0]: expected 2 values"),
           ("compute_dtype", "float16", "compute_dtype='float16': expected one of"),
           ("trainable", "decoder+heads", "trainable='decoder+heads': unknown part(s) ['heads']"),
           ("quantizer_dropout", 1.5, "quantizer_dropout=1.5: must be in [0, 1]"),
           ("loss.wave_low", 1.0, "loss.wave_lowpass_hz=0.0: must be > 0 when wave_low is set"),
           ("model.quantizer_kwargs.num_quantizers", 0, "model: quantizer num_quantizers must be a positive")]
  for key, value, want in cases:
    raw = config_fn("tiny").to_dict()
    *parents, leaf = key.split(".")
    node = raw
    for p in parents:
      node = node[p]
    node[leaf] = value
    with pytest.raises(ConfigError) as e:
      train_config.parse(raw)
    assert str(e.value).startswith(want), (key, str(e.value))
  raw = config_fn("tiny").to_dict()
  del raw["schedule"]["stage1_steps"]
  with pytest.raises(ConfigError, match=r"^missing required training-config key 'schedule.stage1_steps'$"):
    train_config.parse(raw)


def test_defaults_live_in_one_place(config_fn):
  """The recipes' loss/optim/disc blocks are the dataclass defaults; a key a recipe leaves out
  takes the same default."""
  cfg = train_config.parse(config_fn("moss_audio_tokenizer"))
  assert cfg.loss == train_config.LossConfig() and cfg.disc == train_config.DiscConfig()
  assert cfg.optim.disc.clip == 10.0 and cfg.optim.gen.clip == 1e3
  assert cfg.data.max_text_len == train_config.MAX_TEXT_LEN == 128
  raw = config_fn("tiny").to_dict()
  del raw["loss"]["stft"], raw["loss"]["mel"]["clamp_eps"]  # a key a recipe leaves out takes the default
  parsed = train_config.parse(raw)
  assert parsed.loss.stft == 0.0 and parsed.loss.mel.clamp_eps == train_config.MelLossConfig().clamp_eps


@pytest.mark.parametrize("name,arg", [("tiny", "ci"), ("speech_cpu", None), ("moss_audio_tokenizer", None)])
def test_saved_run_config_round_trips(config_fn, name, arg):
  """loop.py saves cfg.to_dict() as JSON in the run metadata; resume and export parse it back (as
  the ConfigDict read_run_config returns), and runs saved before the typed config (the recipe's
  own JSON) parse to the same config."""
  recipe = config_fn(name, arg)
  cfg = train_config.parse(recipe)
  saved = json.loads(json.dumps(cfg.to_dict()))
  assert train_config.parse(ml_collections.ConfigDict(saved)) == cfg
  old = ml_collections.ConfigDict(json.loads(recipe.to_json_best_effort()))
  assert train_config.parse(old) == cfg
  assert train_config.parse(cfg) is cfg


def test_train_py_errors_are_one_line(tmp_path):
  """train.py: a misspelled --config.KEY override, a recipe missing its init_from and a bad
  data.source each stop with one line naming the key (exit status 2), before any training."""
  import subprocess
  import sys
  root = pathlib.Path(__file__).resolve().parents[2]

  def run(*args):
    p = subprocess.run([sys.executable, str(root / "train.py"), f"--workdir={tmp_path}", *args], capture_output=True,
                       text=True, timeout=300, cwd=root)
    assert p.returncode == 2, p.stdout + p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    return lines[0]

  assert run(f"--config={root}/configs/tiny.py:ci", "--config.loss.recc=1") == (
      "train.py: error: unknown training-config key 'loss.recc' (--config.loss.recc=...); did you mean 'loss.rec'?")
  assert run(f"--config={root}/configs/finetune_decoder.py:tiny").startswith("train.py: error: init_from=None: ")
  assert run(f"--config={root}/configs/tiny.py:ci", "--config.data.source=tfds").startswith(
      "train.py: error: data.source='tfds': ")
  assert not any(tmp_path.iterdir())  # nothing was written


def test_stage2_programs_values(config_fn):
  c = config_fn("tiny", "ci")
  assert train_config.parse(c).stage2_programs == 3
  c.stage2_programs = 2  # what runs saved before the three-program split hold: the same split
  assert train_config.parse(c).stage2_programs == 3
  c.stage2_programs = 4
  assert _error(c) == "stage2_programs=4: must be 1 or 3"
