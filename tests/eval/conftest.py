"""Real speech for the metric tests: espeak-ng synthesised at test time (nothing committed)."""
import shutil
import subprocess

import numpy as np
import pytest

from cat_jax.audio import load_audio


def _espeak(tmp_dir, text: str, sr: int) -> np.ndarray:
  if shutil.which("espeak-ng") is None:
    pytest.skip("espeak-ng is not installed (the README's set-up installs it)")
  path = tmp_dir / "speech.wav"
  subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
  return load_audio(path, sr, 1)[0]


@pytest.fixture(scope="session")
def speech16k(tmp_path_factory):
  """About 2 s of English speech, mono float32 at 16 kHz."""
  return _espeak(tmp_path_factory.mktemp("speech16k"), "Open the window and let the fresh air in.", 16000)


@pytest.fixture(scope="session")
def speech24k(tmp_path_factory):
  """About 1 s of English speech, mono float32 at 24 kHz."""
  return _espeak(tmp_path_factory.mktemp("speech24k"), "Seven bright stars.", 24000)
