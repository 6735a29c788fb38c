"""The record format of our prepared ArrayRecord shards: one decoded clip with its text.

A record is `b'CATA'` + uint32 header length + a JSON header (sample_rate, channels, frames, dtype,
text, task, path) + interleaved PCM frames (T, C) little-endian in `dtype` (int16 or float32).
"""
from __future__ import annotations

import json
import struct

import numpy as np

MAGIC = b"CATA"
DTYPES = ("int16", "float32")


def pack(audio: np.ndarray, sample_rate: int, *, text: str = "", task: str = "", path: str = "",
         dtype: str = "int16") -> bytes:
  """(C, T) float audio in [-1, 1] -> record bytes."""
  if dtype not in DTYPES:
    raise ValueError(f"record dtype must be one of {DTYPES}, got {dtype!r}")
  audio = np.asarray(audio, np.float32)
  frames = audio.T  # (T, C)
  if dtype == "int16":
    pcm = np.round(np.clip(frames, -1.0, 32767 / 32768) * 32768).astype("<i2")
  else:
    pcm = frames.astype("<f4")
  header = json.dumps({"sample_rate": int(sample_rate), "channels": int(audio.shape[0]),
                       "frames": int(audio.shape[1]), "dtype": dtype, "text": text, "task": task,
                       "path": path}, ensure_ascii=False).encode("utf-8")
  return MAGIC + struct.pack("<I", len(header)) + header + pcm.tobytes()


def unpack(record: bytes) -> dict:
  """Record bytes -> {'audio': (C, T) float32, 'sr', 'text', 'task', 'path'}; ValueError if malformed."""
  if len(record) < 8 or record[:4] != MAGIC:
    raise ValueError("not a cat_jax audio record (bad magic)")
  (n,) = struct.unpack("<I", record[4:8])
  head = json.loads(record[8:8 + n].decode("utf-8"))
  dt = {"int16": "<i2", "float32": "<f4"}[head["dtype"]]
  c, t = head["channels"], head["frames"]
  pcm = np.frombuffer(record, dt, offset=8 + n)
  if pcm.size != c * t:
    raise ValueError(f"record holds {pcm.size} samples, header says {c}x{t}")
  audio = pcm.reshape(t, c).T.astype(np.float32)
  if head["dtype"] == "int16":
    audio /= 32768.0
  return {"audio": np.ascontiguousarray(audio), "sr": head["sample_rate"], "text": head["text"],
          "task": head["task"], "path": head["path"]}
