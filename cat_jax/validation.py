"""Checks of what a user hands the codec (audio arrays, codes, codebook counts, padding masks),
shared by `CAT.encode/decode`, the streaming helpers and the command line. Each returns the
input in the form the model takes, or raises a CATError that names the problem."""
from __future__ import annotations

import numpy as np

from cat_jax.config import CATConfig
from cat_jax.errors import AudioError, CodesError


def check_audio(audio, channels: int, single_item: bool = False) -> np.ndarray:
  """audio (B, C, T) or (B, T), finite and non-empty, with the model's `channels` -> float32 (B, C, T).
  With `single_item` (the v2 API) a 2-D array of a multi-channel model is one item (C, T), and a
  1-D array one mono item (T,)."""
  try:
    x = np.asarray(audio, dtype=np.float32)
  except (TypeError, ValueError) as e:
    raise AudioError(f"audio must be a float array, got {type(audio).__name__}: {e}") from None
  if single_item and x.ndim == 1:
    x = x[None, None, :]
  if single_item and x.ndim == 2 and channels > 1:
    x = x[None]
  if x.ndim == 2:
    x = x[:, None, :]
  if x.ndim != 3:
    raise AudioError(f"audio must be (B, C, T) or (B, T), got shape {x.shape}")
  if x.shape[0] == 0 or x.shape[2] == 0:
    raise AudioError(f"audio is empty (shape {x.shape})")
  if x.shape[1] != channels:
    raise AudioError(f"audio has {x.shape[1]} channel(s) but the model takes {channels}")
  if not np.isfinite(x).all():
    raise AudioError("audio contains NaN or Inf samples")
  return x


def check_num_quantizers(n: int | None, limit: int) -> int:
  """A codebook count in 1..limit (None: all `limit`)."""
  if n is None:
    return limit
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= limit:
    raise CodesError(f"num_quantizers must be an integer in 1..{limit}, got {n!r}")
  return int(n)


def check_codes(codes, config: CATConfig, num_quantizers: int | None = None) -> np.ndarray:
  """codes (n_q, B, frames) or (n_q, frames), integers in [0, codebook_size), at most the model's
  codebooks -> int32 (n_q, B, frames), cut to the first `num_quantizers` when given."""
  c = np.asarray(codes)
  if not np.issubdtype(c.dtype, np.integer):
    raise CodesError(f"codes must be integers, got dtype {c.dtype}")
  if c.ndim == 2:
    c = c[:, None, :]
  if c.ndim != 3 or 0 in c.shape:
    raise CodesError(f"codes must be (n_q, B, frames) or (n_q, frames) and non-empty, got shape {c.shape}")
  if c.shape[0] > config.num_quantizers:
    raise CodesError(f"codes have {c.shape[0]} quantizers; the model has {config.num_quantizers}")
  if num_quantizers is not None:
    n = check_num_quantizers(num_quantizers, config.num_quantizers)
    if n > c.shape[0]:
      raise CodesError(f"num_quantizers={n} but the codes hold only {c.shape[0]} quantizers")
    c = c[:n]
  k = config.codebook_size
  if c.min() < 0 or c.max() >= k:
    raise CodesError(f"codes must lie in [0, {k}), found values in [{c.min()}, {c.max()}]")
  return c.astype(np.int32)


def mask_lengths(mask, b: int, t: int, what: str = "padding_mask") -> np.ndarray:
  """Valid lengths (B,) of a (B, T) padding mask; all T when `mask` is None."""
  if mask is None:
    return np.full((b,), t, np.int64)
  m = np.asarray(mask)
  if m.shape != (b, t):
    raise AudioError(f"{what} must have shape {(b, t)}, got {m.shape}")
  return m.astype(bool).sum(-1).astype(np.int64)
