"""The codes file of `cat-jax encode` / `stream-encode`: an .npz with `codes` (n_q, frames) int32,
`sample_rate`, `num_quantizers` and `length` (samples of the original audio)."""
from __future__ import annotations

import os

import numpy as np

from cat_jax.errors import CodesError


def save_codes(path: str, codes: np.ndarray, sample_rate: int, length: int) -> None:
  np.savez(path, codes=np.asarray(codes, np.int32), sample_rate=np.int64(sample_rate),
           num_quantizers=np.int64(codes.shape[0]), length=np.int64(length))


def load_codes(path: str, sample_rate: int | None = None) -> tuple[np.ndarray, int | None]:
  """-> (codes (n_q, frames), length in samples or None). With `sample_rate`, codes written for
  another rate are refused."""
  if not os.path.exists(path):
    raise CodesError(f"codes file not found: {path}")
  try:
    with np.load(path) as z:
      data = {k: z[k] for k in z.files}
  except Exception as e:  # not an npz, truncated
    raise CodesError(f"cannot read codes from {path}: {e}") from None
  if "codes" not in data:
    raise CodesError(f"{path} has no 'codes' array (found {sorted(data)})")
  codes = data["codes"]
  if codes.ndim != 2:
    raise CodesError(f"{path}: codes must be (num_quantizers, frames), got shape {codes.shape}")
  if sample_rate is not None and "sample_rate" in data and int(data["sample_rate"]) != sample_rate:
    raise CodesError(f"{path} was encoded at {int(data['sample_rate'])} Hz but the model runs at {sample_rate} Hz")
  return codes, (int(data["length"]) if "length" in data else None)
