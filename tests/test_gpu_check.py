"""bench/gpu_check.sh --cpu-smoke: the GPU check's whole path (both train stages, offline codec,
batched streams) at tiny shapes, printing one table with a number in every timed cell."""
import os
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.integration  # about a minute on 2 cores: in the default suite, as the issue asks
def test_gpu_check_cpu_smoke_prints_the_table(tmp_path):
  out = tmp_path / "rows.json"
  done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--json", str(out)],
                        capture_output=True, text=True, timeout=900, env=dict(os.environ))
  assert done.returncode == 0, done.stderr[-2000:]
  rows = [l for l in done.stdout.splitlines() if l.startswith("| ") and not l.startswith("| what")]
  names = [r.split("|")[1].strip() for r in rows]
  assert [n.split(" (")[0] for n in names] == ["train stage 1", "train stage 2", "encode+decode 1 s", "2 streams"]
  import json
  data = json.load(open(out))["rows"]
  for r in data[:2]:
    assert r["seconds"] > 0 and r["tokens_per_s"] > 0 and 0 < r["mfu_measured"] < 1
  assert data[2]["rtf"] > 0 and data[3]["realtime_streams"] > 0
  assert all(re.search(r"\d", c) for c in rows[0].split("|")[2:4])


def test_gpu_check_refuses_a_cpu_without_smoke():
  done = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh")], capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PATH="/usr/bin:/bin"))  # no nvidia-smi on PATH
  assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("gpu_check: no GPU here")
