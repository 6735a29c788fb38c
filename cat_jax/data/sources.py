"""Random-access audio sources: a folder (or manifest), a TFDS dataset, our ArrayRecord shards.

A source spec string picks one: `folder:PATH`, `tfds:NAME[:SPLIT]` (with `data_dir`),
`arrayrecord:GLOB` (or a folder of shards), `corpus:DIR/MANIFEST.jsonl` (a manifest of the bundled
corpus, which is built offline in DIR first when the manifest is missing; cat_jax/data/corpus.py). Items are small dicts that `transforms.Decode` turns into audio; an item
that cannot even be fetched becomes {'error': ..., 'path': ...} so a bad record never stops training.
"""
from __future__ import annotations

import glob
import os

from cat_jax.data.corpus import ensure_corpus
from cat_jax.data.manifest import read_manifest
from cat_jax.errors import ConfigError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")


def _sidecar(audio_path: str) -> tuple[str, str]:
  """Text next to an audio file: `x.txt` is a transcript, `x.caption.txt` a caption."""
  stem = os.path.splitext(audio_path)[0]
  for suffix, task in ((".txt", "asr"), (".caption.txt", "caption")):
    if os.path.isfile(stem + suffix):
      with open(stem + suffix, encoding="utf-8", errors="replace") as f:
        return f.read().strip(), task
  return "", ""


def scan_folder(root: str) -> list[dict]:
  """Audio files under `root` (recursive, sorted) with their sidecar text; a root manifest wins."""
  for name in MANIFEST_NAMES:
    if os.path.isfile(os.path.join(root, name)):
      return read_manifest(os.path.join(root, name))
  rows = []
  for d, dirs, files in os.walk(root):
    dirs.sort()
    for name in sorted(files):
      if name.lower().endswith(AUDIO_EXTENSIONS):
        path = os.path.join(d, name)
        text, task = _sidecar(path)
        rows.append({"path": path, "text": text, "task": task})
  return rows


class FolderSource:
  """Audio files of a folder or a manifest file; items {'kind': 'file', 'path', 'text', 'task'}."""

  def __init__(self, path: str):
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
      self._rows = scan_folder(path)
    elif os.path.isfile(path) and path.endswith((".jsonl", ".csv")):
      self._rows = read_manifest(path)
    else:
      raise ConfigError(f"folder source: {path} is neither a folder nor a .jsonl/.csv manifest")
    if not self._rows:
      raise ConfigError(f"folder source: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {path}")
    self.name = path

  def __len__(self) -> int:
    return len(self._rows)

  def __getitem__(self, i: int) -> dict:
    return {"kind": "file", **self._rows[i]}

  def __repr__(self) -> str:
    return f"FolderSource({self.name!r}, {len(self)} files)"


class TfdsSource:
  """A TFDS dataset read by `tfds.data_source` (random access, no TensorFlow). Audio is a
  Tensor feature (T,) or (T, C), int16 or float; `fields` names the audio/sample-rate/text/task keys."""

  FIELDS = {"audio": "audio", "sample_rate": "sample_rate", "text": "text", "task": "task"}

  def __init__(self, name: str, split: str = "train", data_dir: str | None = None, *,
               fields: dict | None = None, sample_rate: int | None = None):
    import tensorflow_datasets as tfds
    self.name, self.split = name, split
    self.fields = {**self.FIELDS, **(fields or {})}
    self.default_rate = sample_rate
    try:
      self._ds = tfds.data_source(name, split=split, data_dir=data_dir)
    except Exception as e:  # not found / not prepared / bad split: say which, without the traceback
      raise ConfigError(f"tfds source {name}:{split} (data_dir={data_dir}) cannot be opened: {e}") from None

  def __len__(self) -> int:
    return len(self._ds)

  def __getitem__(self, i: int) -> dict:
    label = f"tfds:{self.name}/{self.split}#{i}"
    try:
      ex = self._ds[i]
    except Exception as e:
      return {"error": "unreadable", "path": label, "detail": str(e)}
    f = self.fields

    def text(key):
      v = ex.get(key, "")
      return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    rate = ex.get(f["sample_rate"], self.default_rate)
    task = text(f["task"])
    txt = text(f["text"])
    return {"kind": "array", "audio": ex.get(f["audio"]), "sr": None if rate is None else int(rate),
            "text": txt, "task": task or ("asr" if txt else ""), "path": label}

  def __repr__(self) -> str:
    return f"TfdsSource({self.name}:{self.split}, {len(self)} examples)"


class ArrayRecordSource:
  """Shards written by `prepare`; items {'kind': 'record', 'bytes', 'path'}."""

  def __init__(self, pattern: str):
    import grain
    pattern = os.path.expanduser(pattern)
    if os.path.isdir(pattern):  # a folder written by `prepare`
      pattern = os.path.join(pattern, "*.array_record")
    self.paths = sorted(glob.glob(pattern))
    if not self.paths:
      raise ConfigError(f"arrayrecord source: no files match {pattern!r}")
    try:
      self._src = grain.sources.ArrayRecordDataSource(self.paths)
    except Exception as e:
      raise ConfigError(f"arrayrecord source {pattern!r} cannot be opened: {e}") from None

  def __len__(self) -> int:
    return len(self._src)

  def __getitem__(self, i: int) -> dict:
    label = f"arrayrecord#{i}"
    try:
      return {"kind": "record", "bytes": self._src[i], "path": label}
    except Exception as e:
      return {"error": "unreadable", "path": label, "detail": str(e)}

  def __repr__(self) -> str:
    return f"ArrayRecordSource({len(self.paths)} shards, {len(self)} records)"


SOURCE_KINDS = ("folder", "tfds", "arrayrecord", "corpus")
SPEC_FORMS = "'folder:PATH', 'tfds:NAME[:SPLIT]', 'arrayrecord:GLOB', 'corpus:DIR/NAME.jsonl' or an existing folder"


def parse_spec(spec) -> tuple[str, str]:
  """The one rule for a source spec string (training configs and open_source both use it):
  'KIND:REST' -> (KIND, REST) for a known KIND with a non-empty REST; an existing path is a folder.
  Raises ConfigError with the reason (the caller names the spec)."""
  if not isinstance(spec, str) or not spec:
    raise ConfigError(f"expected a source spec string: {SPEC_FORMS}")
  kind, _, rest = spec.partition(":")
  if kind in SOURCE_KINDS:
    if not rest or (kind == "tfds" and not rest.partition(":")[0]):
      raise ConfigError(f"{kind} needs a {'dataset name' if kind == 'tfds' else 'path'}: expected {SPEC_FORMS}")
    return kind, rest
  if os.path.exists(spec):
    return "folder", spec
  raise ConfigError(f"unknown source kind {kind!r}; expected {SPEC_FORMS}")


def open_source(spec: str, *, data_dir: str | None = None, tfds_fields: dict | None = None,
                tfds_sample_rate: int | None = None):
  """A source spec string (parse_spec) -> a random-access source (see the module docstring)."""
  if not isinstance(spec, str):
    return spec  # already a source object
  try:
    kind, rest = parse_spec(spec)
  except ConfigError as e:
    raise ConfigError(f"source {spec!r}: {e}") from None
  if kind == "folder":
    return FolderSource(rest)
  if kind == "tfds":
    name, _, split = rest.partition(":")
    return TfdsSource(name, split or "train", data_dir, fields=tfds_fields, sample_rate=tfds_sample_rate)
  if kind == "arrayrecord":
    return ArrayRecordSource(rest)
  return FolderSource(ensure_corpus(rest))
