"""Reading and writing audio files: any format libsndfile or librosa reads, resampled and
channel-mapped to what a model takes. Errors name the file and the problem."""
from __future__ import annotations

import os

import numpy as np

from cat_jax.errors import AudioError


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
  """Decodes a file as it is: (audio (C, T) float32, sample rate)."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f"audio file not found: {path}")
  if os.path.isdir(path):
    raise AudioError(f"expected an audio file, got a directory: {path}")
  try:
    import soundfile as sf
    data, sr = sf.read(path, dtype="float32", always_2d=True)  # (T, C)
    audio = data.T
  except Exception as sf_err:  # not a libsndfile format: try librosa's other backends
    try:
      import warnings
      import librosa
      with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        audio, sr = librosa.load(path, sr=None, mono=False)
      audio = np.atleast_2d(audio).astype(np.float32)
    except Exception:
      raise AudioError(f"cannot decode {path}: {sf_err}") from None
  if audio.size == 0:
    raise AudioError(f"audio file is empty (no samples): {path}")
  if not np.isfinite(audio).all():
    raise AudioError(f"audio file contains NaN or Inf samples: {path}")
  return np.ascontiguousarray(audio, dtype=np.float32), int(sr)


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
  """(C, T) at sr_in -> (C, T') at sr_out with soxr (high quality)."""
  if sr_in == sr_out:
    return audio
  import soxr
  return np.ascontiguousarray(soxr.resample(audio.T, sr_in, sr_out, quality="HQ").T, dtype=np.float32)


def map_channels(audio: np.ndarray, channels: int, what: str = "audio") -> np.ndarray:
  """Downmixes to mono by averaging, or repeats mono to every channel; anything else is an error."""
  c = audio.shape[0]
  if c == channels:
    return audio
  if channels == 1:
    return audio.mean(0, keepdims=True)
  if c == 1:
    return np.repeat(audio, channels, axis=0)
  raise AudioError(f"{what} has {c} channels; the model takes {channels} (only mono <-> N is mapped)")


def load_audio(path: str | os.PathLike, sample_rate: int, channels: int) -> np.ndarray:
  """Reads a file and returns (channels, T) float32 at `sample_rate`."""
  audio, sr = read_audio(path)
  return map_channels(resample(audio, sr, sample_rate), channels, os.fspath(path))


def file_mode() -> int:
  """The permissions a plain open() would give a new file (0o666 less the umask)."""
  mask = os.umask(0)
  os.umask(mask)
  return 0o666 & ~mask


def check_output_folder(path: str | os.PathLike, error=AudioError) -> None:
  """The folder of an output file is a folder (made when missing) that can be written: checked
  before any work, so a long job never fails at its last step."""
  folder = os.path.dirname(os.path.abspath(os.fspath(path)))
  probe = folder
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise error(f"cannot write {os.fspath(path)}: {probe} is a file, not a folder")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise error(f"cannot write {os.fspath(path)}: {probe} is not writable")


def audio_output_path(path: str | os.PathLike) -> str:
  """Checks an audio output path before any work: a file name (not a directory) whose extension
  is a format libsndfile writes (wav, flac, ogg, ...), in a folder that is or can be made. -> path."""
  path = os.fspath(path)
  if os.path.isdir(path) or path.endswith(os.sep):
    raise AudioError(f"output {path} is a directory; give a file name such as {os.path.join(path, 'out.wav')}")
  ext = os.path.splitext(path)[1][1:]
  import soundfile as sf
  if ext.upper() not in sf.available_formats():
    raise AudioError(f"cannot write audio as {('.' + ext) if ext else 'a file without an extension'} ({path}); "
                     "use .wav, .flac or .ogg")
  check_output_folder(path, AudioError)
  return path


def write_audio(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
  """Writes (C, T) float audio; the format follows the file extension (wav, flac, ogg). Atomic:
  a temp file beside it, then a rename, so a failure never leaves a half-written file."""
  import tempfile
  import soundfile as sf
  audio = np.asarray(audio, np.float32)
  if audio.ndim == 1:
    audio = audio[None]
  path = os.fspath(path)
  d = os.path.dirname(path)
  if d:
    os.makedirs(d, exist_ok=True)
  fmt = os.path.splitext(path)[1][1:].upper() or None
  fd, tmp = tempfile.mkstemp(dir=d or ".", prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  os.close(fd)
  try:
    os.chmod(tmp, file_mode())
    sf.write(tmp, np.clip(audio.T, -1.0, 1.0) if subtype != "FLOAT" else audio.T, sample_rate,
             subtype=subtype, format=fmt)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
