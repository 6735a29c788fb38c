"""cat_jax.aot: topology names, XLA out-of-memory parsing, the fit search; a real TPU AOT
compile of the tiny recipe where libtpu is installed (slow)."""
import importlib.util
import math
import subprocess
import sys

import pytest

from cat_jax import aot
from cat_jax.errors import CATError, ConfigError

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None


@pytest.mark.parametrize("name,gen,topo", [
    ("v5p-64", "v5p", "v5p:2x4x4"), ("v5p-8", "v5p", "v5p:2x2x1"), ("v5p-128", "v5p", "v5p:4x4x4"),
    ("v4-64", "v4", "v4:2x4x4"), ("v5e-4", "v5e", "v5e:2x2"), ("v6e-64", "v6e", "v6e:8x8"),
    ("v5e-8", "v5e", "v5e:2x4"), ("v5p:4x4x8", "v5p", "v5p:4x4x8"),
])
def test_topology_name(name, gen, topo):
  assert aot.topology_name(name) == (gen, topo)


@pytest.mark.parametrize("name", ["v7-64", "v5p", "v5p-x", "v5e-6", "v5p-3", "v4-0"])
def test_topology_name_rejects(name):
  with pytest.raises(ConfigError):
    aot.topology_name(name)


OOM = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
       "Used 103.25G of 95.74G hbm. Exceeded hbm capacity by 7.51G.\n\nTotal hbm usage >= 103.77G:\n"
       "    reserved        530.00M \n    program          99.75G \n    arguments         3.50G \n\n"
       "Output size 3.50G; shares 3.50G with arguments.")


def test_parse_oom():
  u = aot.parse_oom(OOM)
  g = 1 << 30
  assert u["used"] == pytest.approx(103.25 * g) and u["capacity"] == pytest.approx(95.74 * g)
  assert u["program"] == pytest.approx(99.75 * g) and u["arguments"] == pytest.approx(3.5 * g)
  assert aot.parse_oom("INTERNAL: something else") is None


def test_try_compile_reports_oom_usage(monkeypatch):
  def boom(*a, **k):
    raise RuntimeError(OOM)
  monkeypatch.setattr(aot, "compile_step", boom)
  r = aot.try_compile(None, None, None, 1536, 1, 95 << 30)
  assert not r.fits and r.batch == 1536
  assert r.total_gb == pytest.approx(103.25) and r.args_gb == pytest.approx(3.5)
  assert "Ran out of memory" in r.note and r.compile_s >= 0

  def other(*a, **k):
    raise RuntimeError("INVALID_ARGUMENT: not a memory problem")
  monkeypatch.setattr(aot, "compile_step", other)
  with pytest.raises(RuntimeError, match="INVALID_ARGUMENT"):
    aot.try_compile(None, None, None, 8, 1, 95 << 30)


def _fake(mem, hbm, args=2.0, known=True):
  """try_batch over a made-up memory curve; records the batches it was asked for."""
  calls = []

  def try_batch(b):
    calls.append(b)
    total = mem(b)
    fits = total <= hbm
    shown = total if (fits or known) else math.nan
    return aot.Report(b, fits, 1.0, args, 0.0, 0.0, 0.0, shown, 1.0)
  return try_batch, calls


@pytest.mark.parametrize("start", [1536, 256, 4000 // 32 * 32])
def test_search_linear_memory_few_compiles(start):
  mem = lambda b: 2.0 + 0.05 * b  # fits up to 1860 -> 1856 on multiples of 32
  try_batch, calls = _fake(mem, 95.0)
  lo, hi = aot.search(try_batch, try_batch(start), 32, 4096, 95.0)
  assert (lo, hi) == (1856, 1888)
  assert len(calls) <= 4  # bisection from [0, 4096] would need 7
  assert all(b % 32 == 0 for b in calls)


def test_search_curved_memory_and_unknown_usage():
  mem = lambda b: 2.0 + 0.02 * b + 2e-5 * b * b  # convex: the secant undershoots, still exact
  for known in (True, False):
    try_batch, calls = _fake(mem, 95.0, known=known)
    lo, hi = aot.search(try_batch, try_batch(3200), 32, 4096, 95.0)
    best = max(b for b in range(0, 4097, 32) if mem(b) <= 95.0)
    assert (lo, hi) == (best, best + 32)
    assert len(calls) == len(set(calls))


def test_search_nothing_fits_and_cap():
  try_batch, _ = _fake(lambda b: 200.0 + b, 95.0, args=200.0)
  assert aot.search(try_batch, try_batch(64), 32, 4096, 95.0) == (0, 32)
  try_batch, calls = _fake(lambda b: 2.0 + 1e-3 * b, 95.0)
  assert aot.search(try_batch, try_batch(256), 32, 1024, 95.0) == (1024, None)
  assert calls[-1] == 1024


@pytest.mark.skipif(HAS_LIBTPU, reason="libtpu installed: the topology is described, no error")
def test_missing_libtpu_is_one_line_error():
  with pytest.raises(CATError, match="libtpu"):
    aot.tpu_devices("v5e-4")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LIBTPU, reason="needs libtpu (pip install -e '.[tpu]')")
def test_aot_compile_tiny_on_v5e(tmp_path):
  out = tmp_path / "aot.jsonl"
  p = subprocess.run([sys.executable, "-m", "cat_jax.aot", "--config=configs/tiny.py:ci", "--config.batch_size=4", "--topology=v5e-4",
                      "--stage=1", f"--out={out}"], capture_output=True, text=True, timeout=1800)
  assert p.returncode == 0, p.stderr[-2000:]
  import json
  row = json.loads(out.read_text().splitlines()[0])
  assert row["fits"] and row["chips"] == 4 and row["topology"] == "v5e:2x2"
  assert 0 < row["total_gb"] < 16 and row["flops"] > 0


def test_transformer_flops_by_hand():
  # d=4, 1 layer, ffn 8, no projections, 3 tokens, 3 keys: 6*(4*16 + 2*32)*3 + 12*1*4*3*3
  assert aot._transformer_flops(4, 1, 8, False, 4, 4, 3, 3) == 2304 + 432
  assert aot._transformer_flops(4, 1, 8, True, 4, 4, 3, 3) == 6 * (64 + 96) * 3 + 432  # gated: 3 matrices
  assert aot._transformer_flops(4, 1, 8, False, 2, 6, 3, 3) == 2736 + 6 * (8 + 24) * 3  # in/out projections


def test_model_flops_scales_with_batch_depth_and_window():
  import copy
  import pathlib
  from cat_jax.train import state as state_lib
  path = pathlib.Path(__file__).parent.parent / "configs" / "moss_audio_tokenizer.py"
  spec = importlib.util.spec_from_file_location("cat_configs_released_aot", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config()
  mc = state_lib.model_config(cfg)
  f1 = aot.model_flops(cfg, mc, 1)
  assert aot.model_flops(cfg, mc, 1536) == pytest.approx(1536 * f1)
  # the released codec: ~1.1 TFLOP forward per 11.68 s clip in its Transformers, times 3 for training
  assert 3.5e12 < f1 < 5e12
  deeper = copy.deepcopy(cfg)
  deeper.lm.num_layers *= 2
  f2 = aot.model_flops(deeper, state_lib.model_config(deeper), 1)
  assert f2 > f1
  short = copy.deepcopy(cfg)
  short.segment_seconds = cfg.segment_seconds / 2
  assert aot.model_flops(short, state_lib.model_config(short), 1) < 0.6 * f1


def test_import_defines_no_flags():
  """Importing cat_jax.aot (e.g. for model_flops in a benchmark) registers no absl flag."""
  code = ("from absl import flags; import cat_jax.aot; "
          "print(sorted(set(flags.FLAGS) & {'config', 'topology', 'stage'}))")
  p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
  assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_stage_jobs_compile_each_stage_at_its_batch():
  import pathlib
  path = pathlib.Path(__file__).parent.parent / "configs" / "moss_audio_tokenizer.py"
  spec = importlib.util.spec_from_file_location("cat_configs_released_jobs", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config()
  assert aot.stage_jobs(cfg, None) == [(1, 1536), (2, 768)]  # TRAINING.md: 1536, then 768
  assert aot.stage_jobs(cfg, 2) == [(2, 768)]
  cfg.schedule.stage2_batch_size = cfg.batch_size
  assert aot.stage_jobs(cfg, None) == [(None, 1536)]  # one lax.cond program over both stages
  with pytest.raises(ConfigError, match="--stage=3"):
    aot.stage_jobs(cfg, 3)
