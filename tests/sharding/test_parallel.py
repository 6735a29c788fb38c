"""Sharded train steps on fake CPU meshes and on two loopback processes equal one device."""
import json

import numpy as np
import pytest

from sharding_harness import free_port, load, reference, run_worker, start_worker  # noqa: F401 (fixture)

PARAM_ATOL = 1e-5
LOSS_RTOL = 1e-5


def assert_same_run(ref: dict, got: dict):
  assert got["losses"].shape == ref["losses"].shape == (2,)
  np.testing.assert_allclose(got["losses"], ref["losses"], rtol=LOSS_RTOL)
  names = [k for k in ref if k.startswith("[")]
  assert names and sorted(names) == sorted(k for k in got if k.startswith("["))
  for k in names:
    assert got[k].shape == ref[k].shape, k
    np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=PARAM_ATOL, err_msg=k)


def test_reference_trains(reference):
  """The equality checks below are not vacuous: the loss is finite and falls."""
  assert np.all(np.isfinite(reference["losses"])) and reference["losses"][1] < reference["losses"][0]


def _meshes(tmp_path, shapes):
  out = tmp_path / "m"
  run_worker(["meshes", out, ",".join(shapes)], devices=8)
  return json.loads((tmp_path / "m.json").read_text()), {s: load(f"{out}.{s}.npz") for s in shapes}


@pytest.mark.integration
@pytest.mark.slow  # CI time: the default suite stays under 15 minutes on 2 cores
def test_mesh_2x2x2_matches_one_device_and_is_sharded(reference, tmp_path):
  info, runs = _meshes(tmp_path, ["2x2x2"])
  assert_same_run(reference, runs["2x2x2"])
  # decoder[0] linear1 kernel (layers, embed=32, mlp=64): fsdp splits embed, tensor splits mlp
  i = info["2x2x2"]
  assert i["kernel_spec"] == [None, "fsdp", "tensor"] and i["mu_spec"] == [None, "fsdp", "tensor"]
  assert i["kernel_shape"] == [1, 32, 64] and i["kernel_shard_shape"] == [1, 16, 32]


@pytest.mark.slow
def test_meshes_8x1x1_and_2x4x1_match_one_device(reference, tmp_path):
  info, runs = _meshes(tmp_path, ["8x1x1", "2x4x1"])
  for s in runs:
    assert_same_run(reference, runs[s])
  # pure data parallel: parameters replicated; fsdp=4: embed split four ways, mlp whole
  assert info["8x1x1"]["kernel_spec"] == [None, None, None]
  assert info["8x1x1"]["kernel_shard_shape"] == [1, 32, 64]
  assert info["2x4x1"]["kernel_spec"] == [None, "fsdp", None]
  assert info["2x4x1"]["kernel_shard_shape"] == [1, 8, 64]


@pytest.mark.integration
def test_two_processes_match_one_device(reference, tmp_path):
  """jax.distributed over loopback (gloo), 2 devices per process, each process feeding half the batch."""
  addr = f"127.0.0.1:{free_port()}"
  out = tmp_path / "mp.npz"
  procs = [start_worker(["process", out, addr, pid, 2], devices=2) for pid in range(2)]
  for p in procs:
    try:
      _, err = p.communicate(timeout=900)
    except Exception:
      for q in procs:
        q.kill()
      raise
    assert p.returncode == 0, err[-4000:]
  got = load(out)
  assert int(got.pop("devices")) == 4
  assert_same_run(reference, got)
