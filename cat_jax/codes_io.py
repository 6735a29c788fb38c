"""The codes file of `cat-jax encode` / `stream-encode`: an .npz with `codes` (n_q, frames) int32,
`sample_rate`, `num_quantizers`, `length` (samples of the original audio) and `model` (a
fingerprint of the architecture that made them, `model_fingerprint`). Written atomically."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import zipfile

import numpy as np

from cat_jax.errors import CodesError


def model_fingerprint(config) -> str:
  """16 hex digits of the SHA-256 of the config's architecture JSON (carried-along extras such as
  the attention backend left out): codes of one architecture decode with another only by mistake."""
  plain = config.replace(extra={}, decoder_from_reversed=False).to_dict()
  return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def codes_output_path(path: str | os.PathLike) -> str:
  """The file a codes output names: PATH.npz as given; a name without an extension gets `.npz`
  (the caller prints the returned path). A directory, another extension, or a folder that cannot
  be made is a CodesError, raised before any work."""
  from cat_jax.audio import check_output_folder
  path = os.fspath(path)
  stem, ext = os.path.splitext(path)
  if os.path.isdir(path) or path.endswith(os.sep):
    raise CodesError(f"output {path} is a directory; give a file name such as {os.path.join(path, 'codes.npz')}")
  if not ext:
    path += ".npz"
  elif ext.lower() != ".npz":
    raise CodesError(f"codes are written as .npz; output {path} ends in {ext!r} (use {stem}.npz)")
  check_output_folder(path, CodesError)
  return path


def save_codes(path: str, codes: np.ndarray, sample_rate: int, length: int, fingerprint: str | None = None) -> str:
  """Writes the codes file at exactly `path` (temp file + rename: never half-written). -> path."""
  path = os.fspath(path)
  arrays = dict(codes=np.asarray(codes, np.int32), sample_rate=np.int64(sample_rate),
                num_quantizers=np.int64(np.shape(codes)[0]), length=np.int64(length))
  if fingerprint is not None:
    arrays["model"] = np.array(fingerprint)
  from cat_jax.audio import file_mode
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    os.chmod(tmp, file_mode())
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def load_codes(path: str, sample_rate: int | None = None, *, config=None,
               force: bool = False) -> tuple[np.ndarray, int | None]:
  """-> (codes (n_q, frames), length in samples or None). With `sample_rate` (or `config`), codes
  written for another rate are refused. With `config`, a `length` outside 1..frames x
  downsample_rate is refused, and so are codes made by another architecture (a fingerprint
  mismatch) unless `force`, which warns on stderr instead."""
  if not os.path.exists(path):
    raise CodesError(f"codes file not found: {path}")
  if os.path.isdir(path):
    raise CodesError(f"expected a codes .npz file, got a directory: {path}")
  if not zipfile.is_zipfile(path):
    raise CodesError(f"{path} is not a codes file (an .npz written by cat-jax encode)")
  try:
    with np.load(path, allow_pickle=False) as z:
      data = {k: z[k] for k in z.files}
  except Exception as e:  # truncated, or members that need pickle
    raise CodesError(f"cannot read codes from {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
  if "codes" not in data:
    raise CodesError(f"{path} has no 'codes' array (found {sorted(data)})")
  codes = data["codes"]
  if codes.ndim != 2:
    raise CodesError(f"{path}: codes must be (num_quantizers, frames), got shape {codes.shape}")
  if config is not None:
    sample_rate = config.sampling_rate
  if sample_rate is not None and "sample_rate" in data and int(data["sample_rate"]) != sample_rate:
    raise CodesError(f"{path} was encoded at {int(data['sample_rate'])} Hz but the model runs at {sample_rate} Hz")
  length = None
  if "length" in data:
    try:
      length = int(data["length"])
    except (TypeError, ValueError):
      raise CodesError(f"{path}: length must be one integer, got {data['length']!r}") from None
  if config is not None:
    most = codes.shape[1] * config.downsample_rate
    if length is not None and not 1 <= length <= most:
      raise CodesError(f"{path}: length {length} is not in 1..{most} (samples of {codes.shape[1]} frames)")
    made_by = str(data["model"]) if "model" in data else None
    if made_by is not None and made_by != model_fingerprint(config):
      msg = (f"{path} was encoded by another model (fingerprint {made_by}; this model's is "
             f"{model_fingerprint(config)})")
      if not force:
        raise CodesError(msg + "; pass --force to decode anyway")
      print(f"warning: {msg}; decoding anyway (--force)", file=sys.stderr)
  return codes, length
