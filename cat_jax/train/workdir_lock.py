"""One live run per WORKDIR: `WORKDIR/lock.json` names the run that holds it (pid, host, start
time). A second run on the same WORKDIR stops with one line naming the owner; a lock left by a
run that died (its pid no longer runs on this host) is taken over with a message."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid

from cat_jax.errors import CATError

LOCK = "lock.json"


class WorkdirLocked(CATError):
  """Another live run holds the WORKDIR."""


def _proc_start(pid: int) -> str | None:
  """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]  # a zombie has finished
  except (OSError, IndexError):
    return None


def _alive(owner: dict) -> bool:
  pid = int(owner.get("pid", -1))
  if pid <= 0:
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # someone else's process: it runs
  if os.path.isdir("/proc"):
    start = _proc_start(pid)
    return start is not None and owner.get("pid_start") in (None, start)
  return True


def _describe(owner: dict) -> str:
  return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds WORKDIR/lock.json for the block (raises WorkdirLocked)."""

  def __init__(self, workdir: str):
    self.path = os.path.join(os.path.abspath(workdir), LOCK)
    self.token = uuid.uuid4().hex
    self.held = False

  def acquire(self) -> None:
    os.makedirs(os.path.dirname(self.path), exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "pid_start": _proc_start(os.getpid()),
          "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "token": self.token}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        owner = self._owner()
        if owner is None and self._age() < 10:  # being written by a run starting right now
          raise WorkdirLocked(f"{os.path.dirname(self.path)} is being taken by another run (lock {self.path})") from None
        if owner is not None and (owner.get("host") != me["host"] or _alive(owner)):
          raise WorkdirLocked(
              f"{os.path.dirname(self.path)} is in use by another run ({_describe(owner)}; lock {self.path}); "
              f"wait for it or stop it, or delete the lock file if that run is gone") from None
        what = f"a run that is gone ({_describe(owner)})" if owner else "an unreadable lock"
        print(f"[train] taking over {self.path} from {what}", flush=True)
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(me, f)
      self.held = True
      return
    raise WorkdirLocked(f"cannot take the lock {self.path} (another run keeps taking it)")

  def _age(self) -> float:
    try:
      return time.time() - os.path.getmtime(self.path)
    except OSError:
      return float("inf")

  def _owner(self) -> dict | None:
    try:
      with open(self.path) as f:
        owner = json.load(f)
      return owner if isinstance(owner, dict) else None
    except (OSError, ValueError):
      return None

  def release(self) -> None:
    if self.held and (self._owner() or {}).get("token") == self.token:
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass
    self.held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
