"""Manifests of audio files: JSONL (one object a line) or CSV with a header, each row a `path`
(relative to the manifest's folder) with an optional transcript `text` and `task`. Read by the
folder sources (sources.py) and by the corpus's evaluation splits (corpus.py)."""
from __future__ import annotations

import csv
import json
import os

from cat_jax.errors import ConfigError


def read_manifest(path: str) -> list[dict]:
  """JSONL (one object a line) or CSV with a header; needs `path`, optional `text` and `task`.
  Relative paths are taken from the manifest's folder."""
  root = os.path.dirname(os.path.abspath(path))
  rows = []
  with open(path, encoding="utf-8", newline="") as f:
    if path.endswith(".csv"):
      raw = list(csv.DictReader(f))
    else:
      raw = []
      for n, line in enumerate(f, 1):
        if line.strip():
          try:
            raw.append(json.loads(line))
          except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{n}: not a JSON object ({e.msg})") from None
  for n, r in enumerate(raw, 1):
    if not isinstance(r, dict) or not r.get("path"):
      raise ConfigError(f"{path}: row {n} has no 'path'")
    text = r.get("text") or ""
    rows.append({"path": os.path.join(root, r["path"]), "text": text,
                 "task": r.get("task") or ("asr" if text else "")})
  return rows
