"""Byte-level text tokenizer shared by the data pipeline and the semantic LM.

Contract (fixed; the LM is written against it): PAD=0, BOS=1, EOS=2, TASK_ASR=3 (transcripts),
TASK_CAPTION=4 (captions), ids 5..7 reserved, UTF-8 byte b -> id b + 8, VOCAB_SIZE = 264.
"""
from __future__ import annotations

import numpy as np

PAD, BOS, EOS, TASK_ASR, TASK_CAPTION = 0, 1, 2, 3, 4
BYTE_OFFSET = 8
VOCAB_SIZE = 256 + BYTE_OFFSET
MAX_TEXT_LEN = 128  # tokens per example a batch pads text to, by default (training: data.max_text_len)
TASKS = {"asr": TASK_ASR, "caption": TASK_CAPTION}


def task_id(task: int | str) -> int:
  """'asr' / 'caption' (or their ids) -> the task token id."""
  if isinstance(task, str):
    if task.lower() not in TASKS:
      raise ValueError(f"unknown text task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task.lower()]
  if int(task) not in (TASK_ASR, TASK_CAPTION):
    raise ValueError(f"task id must be TASK_ASR={TASK_ASR} or TASK_CAPTION={TASK_CAPTION}, got {task}")
  return int(task)


def encode(text: str, task: int | str, max_len: int) -> tuple[np.ndarray, int]:
  """[task, bytes..., EOS] cut to max_len and padded with PAD: (ids int32 (max_len,), length)."""
  if max_len < 1:
    raise ValueError(f"max_len must be >= 1, got {max_len}")
  body = np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32) + BYTE_OFFSET
  seq = np.concatenate([[task_id(task)], body, [EOS]]).astype(np.int32)[:max_len]
  ids = np.full((max_len,), PAD, np.int32)
  ids[:len(seq)] = seq
  return ids, len(seq)


def decode(ids) -> str:
  """Text of an id sequence: task/BOS/reserved ids dropped, stops at the first EOS or PAD."""
  out = bytearray()
  for i in np.asarray(ids).reshape(-1).tolist():
    if i in (EOS, PAD):
      break
    if i >= BYTE_OFFSET:
      out.append(i - BYTE_OFFSET)
  return out.decode("utf-8", errors="replace")
