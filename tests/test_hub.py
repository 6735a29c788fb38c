"""Hub ids (cat_jax/hub.py), offline: a cache laid out the way huggingface_hub lays it out
(models--ORG--NAME/{refs,snapshots,blobs}) resolves to the same model as the folder, a pinned
revision picks its snapshot, and each failure is one line. No test here reaches the network."""
import hashlib
import os
import types

import numpy as np
import pytest

from cat_jax import CAT, hub
from cat_jax.checkpoint import params_equal
from cat_jax.errors import CheckpointError

REPO = "OpenMOSS-Team/tiny-cat"
OLD, NEW = "a" * 40, "b" * 40  # two commits: OLD holds the golden tiny model, NEW (main) a re-seeded one


def lay_out_cache(cache, repo_id, snapshots: dict, refs: dict):
  """huggingface_hub's cache: blobs named by content hash, snapshots/<commit>/<file> linking to
  them, refs/<branch> holding a commit. snapshots: {commit: {file name: bytes}}."""
  root = cache / ("models--" + repo_id.replace("/", "--"))
  (root / "blobs").mkdir(parents=True, exist_ok=True)
  for commit, files in snapshots.items():
    snap = root / "snapshots" / commit
    snap.mkdir(parents=True)
    for name, data in files.items():
      blob = hashlib.sha256(data).hexdigest()
      (root / "blobs" / blob).write_bytes(data)
      os.symlink(os.path.join("..", "..", "blobs", blob), snap / name)
  (root / "refs").mkdir(exist_ok=True)
  for ref, commit in refs.items():
    (root / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
  return root


def folder_files(path):
  return {f: (path / f).read_bytes() for f in os.listdir(path)}


@pytest.fixture(scope="module")
def reseeded(tiny_model):
  return CAT.from_config(tiny_model.config, seed=1)


@pytest.fixture()
def cache(tmp_path, tiny_model, reseeded, monkeypatch):
  """An offline Hub cache with REPO at OLD (golden tiny) and NEW = main (re-seeded)."""
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  tiny_model.save_pretrained(tmp_path / "old")
  reseeded.save_pretrained(tmp_path / "new", max_shard_size=200_000)  # sharded, with its index
  cache = tmp_path / "hub"
  lay_out_cache(cache, REPO, {OLD: folder_files(tmp_path / "old"), NEW: folder_files(tmp_path / "new")},
                {"main": NEW, "v1": OLD})
  return cache


def test_hub_id_resolves_from_the_cache_like_the_folder(cache, tmp_path, tiny_model, reseeded):
  folder = CAT.from_pretrained(tmp_path / "new")
  by_id = CAT.from_pretrained(REPO, cache_dir=cache)
  assert by_id.config == folder.config and params_equal(by_id.params, folder.params)
  assert params_equal(by_id.params, reseeded.params)
  codes = by_id.encode(np.zeros((1, 1, 3840), np.float32)).audio_codes
  np.testing.assert_array_equal(codes, folder.encode(np.zeros((1, 1, 3840), np.float32)).audio_codes)


@pytest.mark.parametrize("how", ["revision", "at", "tag"])
def test_pinned_revision_picks_its_snapshot(cache, tiny_model, how):
  if how == "revision":
    model = CAT.from_pretrained(REPO, revision=OLD, cache_dir=cache)
  elif how == "at":
    model = CAT.from_pretrained(f"{REPO}@{OLD}", cache_dir=cache)
  else:
    model = CAT.from_pretrained(REPO, revision="v1", cache_dir=cache)
  assert params_equal(model.params, tiny_model.params)


def test_load_codec_cli_and_init_from_read_hub_ids(cache, tiny_model, reseeded, monkeypatch, tmp_path, golden):
  from cat_jax.audio import write_audio
  from cat_jax.cli import main
  from cat_jax.loader import load_codec
  from cat_jax.train import loop
  from tests.train.conftest import load_config
  monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # the standard cache variable, read when loading
  assert params_equal(load_codec(REPO).params, reseeded.params)
  assert params_equal(load_codec(REPO, revision=OLD).params, tiny_model.params)
  cfg = load_config("tiny")  # the recipe's model is golden tiny's architecture
  cfg.init_from = f"{REPO}@v1"
  assert params_equal(loop._init_codec_params(cfg), tiny_model.params)
  wav = tmp_path / "x.wav"
  write_audio(wav, golden["input_values"][0], 24000, subtype="FLOAT")
  assert main(["encode", str(wav), str(tmp_path / "c.npz"), "--model", f"{REPO}@{OLD}"]) == 0
  with np.load(tmp_path / "c.npz") as z:
    np.testing.assert_array_equal(z["codes"], tiny_model.encode(golden["input_values"][:1]).audio_codes[:, 0])


def test_missing_id_offline_is_one_line(cache, capsys, tmp_path, golden):
  from cat_jax.audio import write_audio
  wav = tmp_path / "x.wav"
  write_audio(wav, golden["input_values"][0], 24000, subtype="FLOAT")
  with pytest.raises(CheckpointError) as err:
    CAT.from_pretrained("OpenMOSS-Team/not-cached", cache_dir=cache)
  msg = str(err.value)
  assert "\n" not in msg and msg.startswith("OpenMOSS-Team/not-cached: no local folder of that name, "
                                            "HF_HUB_OFFLINE is set and it is not in the Hub cache")
  with pytest.raises(CheckpointError, match="^OpenMOSS-Team/tiny-cat@" + "c" * 40 + ": no local folder"):
    CAT.from_pretrained(REPO, revision="c" * 40, cache_dir=cache)
  from cat_jax.cli import main
  os.environ["HF_HUB_CACHE"] = str(cache)
  try:
    assert main(["encode", str(wav), str(tmp_path / "c.npz"), "--model", "OpenMOSS-Team/not-cached"]) == 2
  finally:
    del os.environ["HF_HUB_CACHE"]
  err_line = capsys.readouterr().err.strip()
  assert "\n" not in err_line and err_line.startswith("cat-jax encode: error: OpenMOSS-Team/not-cached: no local")


def test_repository_without_safetensors(tmp_path, tiny_model, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  tiny_model.save_pretrained(tmp_path / "m")
  files = {"config.json": (tmp_path / "m" / "config.json").read_bytes(), "pytorch_model.bin": b"pickle"}
  lay_out_cache(tmp_path / "hub", "org/pickles", {NEW: files}, {"main": NEW})
  with pytest.raises(CheckpointError, match=r"^org/pickles holds no safetensors weights .*never pickles or remote code\)$"):
    CAT.from_pretrained("org/pickles", cache_dir=tmp_path / "hub")


@pytest.mark.parametrize("error, message", [
    ("GatedRepoError", "^org/gated is a gated Hugging Face repository: accept its terms"),
    ("RepositoryNotFoundError", "^org/gated: no local folder of that name and no such Hugging Face repository"),
    ("RevisionNotFoundError", "^org/gated: the Hugging Face repository org/gated has no revision .main."),
])
def test_hub_refusals_are_one_line(monkeypatch, error, message):
  import huggingface_hub
  from huggingface_hub import errors
  response = types.SimpleNamespace(headers={}, request=None, status_code=403)

  def refuse(*a, **kw):
    raise getattr(errors, error)("403 Client Error\nmore lines", response=response)
  monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
  with pytest.raises(CheckpointError, match=message) as err:
    CAT.from_pretrained("org/gated", local_files_only=False)
  assert "\n" not in str(err.value)


def test_only_weights_and_config_are_fetched(monkeypatch, tmp_path):
  import huggingface_hub
  seen = {}

  def fake(repo, **kw):
    seen.update(kw, repo=repo)
    raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")
  monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
  monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
  with pytest.raises(CheckpointError, match="the Hugging Face Hub cannot be reached"):
    CAT.from_pretrained("org/name", revision="abc", cache_dir=tmp_path)
  assert seen["repo"] == "org/name" and seen["revision"] == "abc" and seen["local_files_only"] is False
  assert sorted(seen["allow_patterns"]) == ["*.safetensors", "config.json", "model.safetensors.index.json"]
  assert seen["cache_dir"] == str(tmp_path)


def test_paths_are_not_hub_ids(tmp_path):
  assert hub.is_repo_id("OpenMOSS-Team/MOSS-Audio-Tokenizer") and hub.is_repo_id("a/b@v1.0")
  for path in ("./a/b", "/abs/dir", "~/x/y", "a/b/c", "model", "../a", "a/.."):
    assert not hub.is_repo_id(path), path
  with pytest.raises(CheckpointError, match="model directory not found"):
    CAT.from_pretrained(tmp_path / "org" / "name")  # a PathLike is always a path


def test_weight_dtype_options(tmp_path, tiny_model, golden):
  """bfloat16 storage halves the weights' memory; float32 compute over it stays close to the float32
  model, bfloat16 compute too (coarser). load_codec passes the options for every layout."""
  import jax
  import jax.numpy as jnp

  from cat_jax.checkpoint import save_params
  from cat_jax.loader import load_codec
  from tests.conftest import GOLDEN_TINY
  half = CAT.from_pretrained(GOLDEN_TINY, param_dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(half.params)} == {jnp.dtype(jnp.bfloat16)} and half.dtype is None
  nbytes = lambda m: sum(x.nbytes for x in jax.tree.leaves(m.params))
  assert nbytes(half) * 2 == nbytes(tiny_model)
  codes = golden["audio_codes"][:, :1]
  ref = tiny_model.decode(codes).audio
  for compute, tol in ((None, 0.02), ("float32", 0.02), ("bfloat16", 0.03)):  # measured 0.7%, 0.7%, 0.9%
    m = CAT.from_pretrained(GOLDEN_TINY, param_dtype="bfloat16", dtype=compute)
    out = m.decode(codes).audio
    assert out.dtype == np.float32
    rel = np.linalg.norm(np.asarray(out, np.float32) - ref) / np.linalg.norm(ref)
    assert rel < tol, (compute, rel)
  enc = half.encode(golden["input_values"][:1]).audio_codes
  agree = (enc[0] == tiny_model.encode(golden["input_values"][:1]).audio_codes[0]).mean()
  assert agree > 0.9  # the first codebook barely moves under bfloat16 weights (all equal here)
  save_params(tmp_path / "orbax", tiny_model.config, tiny_model.params)
  for path in (GOLDEN_TINY, tmp_path / "orbax"):
    m = load_codec(path, param_dtype="bf16", dtype="float32")
    assert {x.dtype for x in jax.tree.leaves(m.params)} == {jnp.dtype(jnp.bfloat16)} and m.dtype == jnp.float32
    np.testing.assert_array_equal(m.state_dict()["decoder.0.input_proj.weight"],
                                  half.state_dict()["decoder.0.input_proj.weight"])
  with pytest.raises(CheckpointError, match="unknown dtype 'float16'; expected float32 or bfloat16"):
    load_codec(GOLDEN_TINY, param_dtype="float16")


def test_export_push_to_hub_builds_the_exact_upload(tmp_path, tiny_model, monkeypatch, capsys):
  """`cat-jax export --push-to-hub ORG/NAME --private`: the export's files and the Hub card, handed
  to the upload call (replaced here: no network). The run's checkpoint is stood in for."""
  import ml_collections

  from cat_jax.cli import main, models
  from cat_jax.train import checkpoints
  from cat_jax.train.export import MODEL_CARD
  wd, out = tmp_path / "run", tmp_path / "export"
  (wd / "eval_val_voice").mkdir(parents=True)
  table = "| bit/s | codebooks | STOI |\n|---|---|---|\n| 600 | 8 | 0.7000 |\n| 700 | codec2_700 | 0.6000 |"
  (wd / "eval_val_voice" / "results.md").write_text(table + "\n")

  def fake_export(workdir, dst, step, ema, max_shard):
    assert workdir == str(wd) and step == 6 and not ema
    files = tiny_model.save_pretrained(dst, max_shard_size=max_shard)
    (out / "README.md").write_text(MODEL_CARD.format(name="export", sr=24000, channels=1, frame_rate=12.5, nq=8,
                                                     cb=64, bps_min=75, bps_max=600, params=1, step=6, ema=""))
    (out / "notes.txt").write_text("not uploaded")
    return files + ["README.md"], 6
  run_cfg = ml_collections.ConfigDict({"data": {"source": "corpus:runs/corpus/manifest.jsonl", "eval_source": None},
                                       "schedule": {"stage1_steps": 4}, "num_steps": 6, "batch_size": 2,
                                       "segment_seconds": 1.0, "compute_dtype": "float32", "init_from": None})
  monkeypatch.setattr(models, "export_workdir", fake_export)
  monkeypatch.setattr(checkpoints, "read_run_config", lambda w, s: (run_cfg, 6 if s is None else s))
  calls = []
  monkeypatch.setattr(hub, "upload", lambda repo, folder, files, private=False, token=None:
                      calls.append((repo, folder, files, private)) or "https://huggingface.co/org/cat/commit/1")
  assert main(["export", "--checkpoint", str(wd), "--out", str(out), "--step", "6", "--max-shard-bytes", "300000",
               "--push-to-hub", "org/cat", "--private"]) == 0
  (repo, folder, files, private), = calls
  shards = sorted(f for f in os.listdir(out) if f.startswith("model-"))
  assert repo == "org/cat" and folder == str(out) and private and len(shards) > 1
  assert files == sorted(["README.md", "config.json", "model.safetensors.index.json", *shards])
  card = (out / "README.md").read_text()
  assert card.startswith("---\nlibrary_name: cat_jax\nlicense: apache-2.0\npipeline_tag: audio-to-audio\n")
  assert "\n---\n# export\n" in card and "8 codebooks of 64 entries" in card
  assert ("## Training\n\n- training data: corpus:runs/corpus/manifest.jsonl\n- step: 6\n- steps planned: 6\n"
          "- stage-1 steps: 4\n- batch size: 2\n- segment (s): 1.0\n- compute dtype: float32\n") in card
  assert "## Evaluation\n\n### eval_val_voice\n\n" + table + "\n" in card
  assert "https://huggingface.co/org/cat" in capsys.readouterr().out
  assert main(["export", "--checkpoint", str(wd), "--out", str(out), "--push-to-hub", "not a repo"]) == 2
  assert "--push-to-hub wants ORG/NAME, got 'not a repo'" in capsys.readouterr().err
