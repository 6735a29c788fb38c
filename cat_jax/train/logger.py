"""Run logging: one JSON object per logged step in WORKDIR/metrics.jsonl (with wall-clock `time`),
TensorBoard event files (tensorboardX, no TensorFlow) and a tqdm progress line. Only process 0 writes."""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np


def _scalars(metrics: dict) -> dict[str, float]:
  """Flattens metrics to floats; vector metrics (e.g. per-codebook usage) become name/i."""
  out = {}
  for k, v in metrics.items():
    a = np.asarray(v)
    if a.ndim == 0:
      out[k] = float(a)
    else:
      for i, x in enumerate(a.reshape(-1)):
        out[f"{k}/{i}"] = float(x)
  return out


def cut_back(path: str, step: int) -> int:
  """Keeps the rows of a metrics.jsonl at or before `step` (the step a run resumes from: the rows
  past it were logged by a run whose later state was lost) and drops torn lines; rewrites the
  file atomically. -> the number of rows dropped."""
  if not os.path.exists(path):
    return 0
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  keep = []
  for line in lines:
    try:
      row = json.loads(line)
      if isinstance(row, dict) and int(row["step"]) <= step:
        keep.append(line)
    except (ValueError, KeyError, TypeError):
      pass  # a line cut short by a kill
  if len(keep) == len(lines):
    return 0
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in keep))
  os.replace(path + ".tmp", path)
  return len(lines) - len(keep)


class MetricLogger:
  """Appends to WORKDIR/metrics.jsonl and TensorBoard; a run resumed at `start_step` first cuts
  both back to that step, so each step is logged once."""

  def __init__(self, workdir: str, total_steps: int, start_step: int = 0, enabled: bool = True):
    self.enabled = enabled
    self.workdir = workdir
    self._t0, self._s0 = time.perf_counter(), start_step
    self._writer = self._bar = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    dropped = cut_back(path, start_step)
    if dropped:
      print(f"[train] metrics.jsonl: dropped {dropped} row(s) logged after step {start_step}", flush=True)
    self._jsonl = open(path, "a")
    from tensorboardX import SummaryWriter
    from tqdm import tqdm
    self._writer = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1 if start_step else None)
    self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, desc="train")

  def write(self, step: int, metrics: dict, prefix: str = "") -> dict[str, float]:
    """Logs scalars for `step`; returns them (flattened) for the caller."""
    flat = {prefix + k: v for k, v in _scalars(metrics).items()}
    if not self.enabled:
      return flat
    row = {k: (v if math.isfinite(v) else None) for k, v in flat.items()}
    self._jsonl.write(json.dumps({"step": step, **row, "time": time.time()}) + "\n")  # time: wall clock (s)
    self._jsonl.flush()
    for k, v in flat.items():
      if math.isfinite(v):
        self._writer.add_scalar(k, v, step)
    return flat

  def progress(self, step: int, loss: float | None = None) -> None:
    if not self.enabled:
      return
    rate = (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
    self._bar.n = step
    post = {"steps/s": f"{rate:.2f}"}
    if loss is not None:
      post["loss"] = f"{loss:.4g}"
    self._bar.set_postfix(post, refresh=True)

  def audio(self, tag: str, audio: np.ndarray, step: int, sample_rate: int) -> None:
    """audio: (T,) or (T, C) float."""
    if self.enabled:
      a = np.asarray(audio, np.float32)
      self._writer.add_audio(tag, np.clip(a if a.ndim == 1 else a.mean(-1), -1, 1), step,
                             sample_rate=sample_rate)

  def mel_image(self, tag: str, audio: np.ndarray, step: int, sample_rate: int) -> None:
    """A log-mel spectrogram picture of (T,) audio, as an image (no plotting library needed)."""
    if not self.enabled:
      return
    import librosa
    from cat_jax.eval.metrics import display_mel
    a = np.asarray(audio, np.float32)
    mel = display_mel(a if a.ndim == 1 else a.mean(-1), sample_rate)
    db = librosa.power_to_db(mel, ref=np.max(mel) + 1e-10, top_db=80.0)
    img = ((db - db.min()) / max(db.max() - db.min(), 1e-6))[::-1]  # low frequencies at the bottom
    self._writer.add_image(tag, img[None], step, dataformats="CHW")

  def close(self) -> None:
    if self.enabled:
      self._bar.close()
      self._writer.close()
      self._jsonl.close()
