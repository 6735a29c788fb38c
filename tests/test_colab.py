"""The Colab notebooks (colab/*.ipynb): committed stripped, and executed headless with nbclient on CPU.

Each run appends test-sized values to the cell tagged `parameters`, appends a cell that dumps the
notebook's own `RESULTS` dict to JSON, and asserts on what the notebook computed.
"""
import ast
import json
import os
import pathlib
import resource
import shutil
import sys
import time

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).resolve().parents[1]
COLAB = ROOT / "colab"
GOLDEN_TINY = ROOT / "tests" / "data" / "golden_tiny"
NOTEBOOKS = ("inference", "train_tpu", "export_to_pytorch")
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="the bundled corpus needs espeak-ng")

# configs/tiny.py:ci with a one-stage codec, one mel scale and one narrow period discriminator: compiling
# the state init and the train step is most of the notebook's run time on CPU, and it grows with the
# number of distinct ops.
CHEAP_RECIPE = '''"""configs/tiny.py:ci shrunk to a one-stage codec: a train step that compiles fast on CPU (tests only)."""
import sys
sys.path.insert(0, {root!r})
from configs import tiny
from cat_jax.train import recipes


def get_config(arg=None):
  c = tiny.get_config("ci")
  c.model = recipes.codec_architecture(
      patch_sizes=(1920,), context_seconds=0.32, encoder=[(32, 1, 2, 64, 32)], decoder=[(32, 1, 2, 64, 1920)],
      quantizer={{"input_dim": 32, "rvq_dim": 16, "output_dim": 32, "num_quantizers": 4, "codebook_size": 16,
                 "codebook_dim": 4, "quantizer_type": "rlfq"}})
  c.disc.periods, c.disc.fft_sizes, c.disc.bands = [2], [512], [0.0, 0.25, 1.0]
  c.loss.mel.windows, c.loss.mel.n_mels = [256], [40]
  return c
'''


def _parameters_cell(nb):
  cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
  assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
  return cells[0]


def _assigned_names(source: str) -> set[str]:
  return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
          for t in node.targets if isinstance(t, ast.Name)}


def run_notebook(name: str, params: dict, tmp_path: pathlib.Path) -> dict:
  """Executes colab/NAME.ipynb in a python3 kernel of this interpreter, on CPU, with `params`;
  returns the notebook's RESULTS (and the wall time under '_seconds')."""
  nb = nbformat.read(COLAB / f"{name}.ipynb", as_version=4)
  cell = _parameters_cell(nb)
  unknown = set(params) - _assigned_names(cell.source)
  assert not unknown, f"{name}: no such parameters {sorted(unknown)}"
  cell.source += "\n\n# test values\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
  out = tmp_path / f"{name}_results.json"
  nb.cells.append(nbformat.v4.new_code_cell(
      f"import json\nwith open({str(out)!r}, 'w') as f:\n  json.dump(RESULTS, f, default=str)"))
  # HF_HUB_OFFLINE: the notebooks never reach for the Hub here (their offline fallbacks run); HF_HOME: no saved token
  env = dict(os.environ, JAX_PLATFORMS="cpu", IPYTHONDIR=str(tmp_path / "ipython"), HF_HUB_OFFLINE="1",
             HF_HOME=str(tmp_path / "hf_home"))
  env.pop("HF_TOKEN", None)
  env.pop("MPLBACKEND", None)  # the kernel's inline backend draws the figures, as on Colab
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=False,
                                   resources={"metadata": {"path": str(ROOT)}})
  t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
  client.execute(env=env)
  cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)  # the kernel, reaped at shutdown
  results = json.loads(out.read_text())
  results["_seconds"] = time.perf_counter() - t0
  kernel_cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
  print(f"[colab] {name}: {results['_seconds']:.1f} s wall, kernel CPU {kernel_cpu:.1f} s, "
        f"load average {os.getloadavg()[0]:.1f}")
  assert os.path.realpath(results["python"]) == os.path.realpath(sys.executable)  # the kernel runs this venv
  assert results["backend"] == "cpu"
  return results


# ---- the committed files ------------------------------------------------------------------------

@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stripped_valid_and_parameterised(name):
  path = COLAB / f"{name}.ipynb"
  nb = nbformat.read(path, as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4 and nb.metadata.kernelspec.name == "python3"
  assert path.stat().st_size < 40_000
  code = [c for c in nb.cells if c.cell_type == "code"]
  for c in code:
    assert c.outputs == [] and c.execution_count is None, f"{name}: cell {c.id} has outputs"
    ast.parse(c.source)
  names = _assigned_names(_parameters_cell(nb).source)
  assert "REPO_URL" in names and code[0] is _parameters_cell(nb)
  install = code[1].source
  assert 'find_spec("cat_jax") is None' in install and "pip" in install and "REPO_URL" in install
  assert "jax.devices()" in code[2].source and "default_backend" in code[2].source


# ---- executed (CPU, test-sized) -----------------------------------------------------------------

@pytest.mark.integration
def test_inference_notebook(tmp_path):
  """Offline, the default (the released tokenizer by Hub id) falls back to the bundled golden_tiny weights:
  codes, a bitrate sweep clamped to its 8 codebooks, streaming == offline."""
  r = run_notebook("inference", {"CLIP_SECONDS": 0.48, "NUM_QUANTIZERS": [1, 4, 8, 16, 32],
                                 "WORKDIR": str(tmp_path / "wd")}, tmp_path)
  assert r["model"]["origin"] == "bundled" and r["model"]["dir"] == "tests/data/golden_tiny"
  assert r["model"]["weight_dtype"] == "float32"  # "auto": bfloat16 only past 2 GB of weights
  assert r["model"]["num_quantizers"] == 8 and not r["model"]["trained_here"]
  frames = -(-r["clip"]["samples"] // r["model"]["downsample_rate"])
  assert r["clip"]["samples"] <= 11520 and frames == r["codes"]["expected_frames"]
  assert r["codes"]["shape"] == [8, 1, frames]
  assert 0 <= r["codes"]["min"] <= r["codes"]["max"] < r["model"]["codebook_size"]
  b = r["bitrates"]
  assert b["used"] == [1, 4, 8] and "16, 32" in b["note"]
  assert sorted(b["mel_distance"], key=int) == ["1", "4", "8"]
  assert all(np.isfinite(v) and v > 0 for v in b["mel_distance"].values())
  assert b["bits_per_second"]["8"] == 8 * b["bits_per_second"]["1"]
  s = r["streaming"]
  assert s["max_abs_diff"] < 1e-5 and s["chunks"] == frames and s["shape"] == s["offline_shape"]


@pytest.mark.integration
def test_export_notebook(tmp_path):
  """An Orbax params checkpoint of golden_tiny -> reference layout -> CATTorch: same codes and audio."""
  from cat_jax import CAT
  from cat_jax.checkpoint import save_params
  model = CAT.from_pretrained(GOLDEN_TINY)
  save_params(tmp_path / "orbax", model.config, model.params)
  r = run_notebook("export_to_pytorch", {"CHECKPOINT": str(tmp_path / "orbax"), "OUT_DIR": str(tmp_path / "out"),
                                         "CLIP_SECONDS": 0.48, "HUB_REPO": "org/cat-test"}, tmp_path)
  assert r["export"]["kind"] == "Orbax params"
  assert r["hub"] == {"pushed": False, "reason": "no Hugging Face token"}  # the push is skipped without a token
  assert {"config.json", "model.safetensors"} <= set(r["export"]["files"])
  assert (tmp_path / "out" / "hf" / "model.safetensors").exists()
  t = r["torch"]
  assert t["version"].startswith("2.13.0") and t["roundtrip_equal"]
  assert t["num_params"] == t["jax_num_params"] == model.num_params
  cmp = r["compare"]
  assert cmp["codes_equal"] and cmp["codes_shape"][0] == 8
  assert cmp["audio_max_abs_diff"] < 1e-4 and cmp["hidden_max_abs_diff"] < 1e-4


def _cache_dir(tmp_path) -> str:
  """Empty when the session has a compilation cache (conftest: JAX_COMPILATION_CACHE_DIR, which the kernel inherits)."""
  return "" if os.environ.get("JAX_COMPILATION_CACHE_DIR") else str(tmp_path / "jax_cache")


def _check_train(r, steps: int, resume_steps: int, checkpoint_every: int):
  run1, run2 = r["run1"], r["resume"]
  assert run1["steps"] == list(range(1, steps + 1)) and run1["final_step"] == steps
  assert all(np.isfinite(run1["losses"])) and all(np.isfinite(run2["losses"]))
  ck = r["checkpoint"]
  assert ck["saved_step"] == steps and steps in ck["steps"]
  assert ck["steps"] == sorted({*range(checkpoint_every, steps + 1, checkpoint_every), steps})
  assert os.path.isdir(os.path.join(ck["dir"], str(steps), "state"))
  assert ck["restored_equal"]  # the checkpoint holds exactly the trained parameters
  assert os.path.isdir(os.path.join(ck["params_dir"], "params"))
  # the resumed run starts after the saved step (a fresh start would log step 1 again)
  assert run2["from_step"] == steps and run2["steps"] == list(range(steps + 1, steps + resume_steps + 1))
  assert run2["final_step"] == steps + resume_steps
  # on_log saw exactly what metrics.jsonl recorded, every step of both runs
  assert r["metrics_jsonl"] == [[s, l] for s, l in zip(run1["steps"] + run2["steps"], run1["losses"] + run2["losses"])]


@needs_espeak
@pytest.mark.integration
@pytest.mark.slow  # CI time: the default suite stays under 15 minutes on 2 cores
def test_train_notebook(tmp_path):
  """A one-stage codec recipe: 2 steps, checkpoint, resume for 1 more."""
  recipe = tmp_path / "cheap_recipe.py"
  recipe.write_text(CHEAP_RECIPE.format(root=str(ROOT)))
  r = run_notebook("train_tpu", {
      "CONFIG": str(recipe), "CORPUS_DIR": str(tmp_path / "corpus"), "CORPUS_SECONDS": 4.0,
      "CORPUS_SOURCES": ["speech"], "TRAIN_STEPS": 2, "RESUME_STEPS": 1, "CHECKPOINT_EVERY": 2, "LOG_EVERY": 1,
      "EVAL_EVERY": 0, "WORKDIR": str(tmp_path / "run"), "JAX_CACHE_DIR": _cache_dir(tmp_path)}, tmp_path)
  assert r["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1} and r["batch_size"] == 2
  assert r["data"]["batch_audio_shape"] == [2, 5760, 1]  # 0.24 s segments: 3 frames of 1920 samples
  _check_train(r, 2, 1, 2)


# ---- slow: the full recipes and the paths between the notebooks --------------------------------

@pytest.mark.slow
@needs_espeak
def test_train_then_export_then_inference_notebooks(tmp_path):
  """configs/tiny.py:ci trained by train_tpu, exported by export_to_pytorch, coded by inference."""
  wd = tmp_path / "run"
  r = run_notebook("train_tpu", {
      "CONFIG": "configs/tiny.py:ci", "CORPUS_DIR": str(tmp_path / "corpus"), "CORPUS_SECONDS": 8.0,
      "TRAIN_STEPS": 4, "RESUME_STEPS": 2, "CHECKPOINT_EVERY": 2, "LOG_EVERY": 1, "EVAL_EVERY": 0,
      "WORKDIR": str(wd), "JAX_CACHE_DIR": _cache_dir(tmp_path)}, tmp_path)
  _check_train(r, 4, 2, 2)
  e = run_notebook("export_to_pytorch", {"CHECKPOINT": str(wd), "OUT_DIR": str(tmp_path / "out"),
                                         "CLIP_SECONDS": 0.96}, tmp_path)
  assert e["export"]["kind"] == "training run, step 6" and "README.md" in e["export"]["files"]
  assert e["torch"]["roundtrip_equal"] and e["compare"]["codes_equal"]
  assert e["compare"]["audio_max_abs_diff"] < 1e-4
  i = run_notebook("inference", {"MODEL_DIR": str(tmp_path / "out" / "hf"), "CLIP_SECONDS": 0.96,
                                 "WORKDIR": str(tmp_path / "inf")}, tmp_path)
  assert i["bitrates"]["used"] == [1, 4, 8] and i["streaming"]["max_abs_diff"] < 1e-5


@pytest.mark.slow
@needs_espeak
def test_inference_notebook_trains_a_model_without_weights(tmp_path):
  r = run_notebook("inference", {"MODEL_DIR": "", "OFFLINE_MODEL": "", "TRAIN_CONFIG": "configs/tiny.py:ci", "TRAIN_STEPS": 3,
                                 "CLIP_SECONDS": 0.48, "WORKDIR": str(tmp_path / "wd")}, tmp_path)
  assert r["model"]["trained_here"] and r["model"]["dir"] == str(tmp_path / "wd" / "export")
  assert (tmp_path / "wd" / "export" / "model.safetensors").exists()
  assert r["bitrates"]["used"] == [1, 4, 8] and r["streaming"]["max_abs_diff"] < 1e-5


@pytest.mark.slow
def test_export_notebook_without_checkpoint_makes_one(tmp_path):
  r = run_notebook("export_to_pytorch", {"CHECKPOINT": "", "OUT_DIR": str(tmp_path / "out"), "CLIP_SECONDS": 0.48},
                   tmp_path)
  assert r["export"]["kind"] == "Orbax params" and (tmp_path / "out" / "orbax_params" / "params").is_dir()
  assert r["compare"]["codes_equal"] and r["compare"]["audio_max_abs_diff"] < 1e-4
