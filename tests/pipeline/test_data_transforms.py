"""Transform numbers: loudness, crop, gain, checks, PCM scaling."""
import numpy as np
import pytest

from cat_jax.data import transforms as T


def clip(a, sr=24000):
  return {"audio": np.asarray(a, np.float32), "sr": sr, "text": "", "task": "", "path": "x"}


def rms_db(a):
  return 20 * np.log10(np.sqrt(np.mean(np.square(a, dtype=np.float64))))


def test_normalize_loudness():
  t = np.arange(24000) / 24000
  sine = 0.01 * np.sin(2 * np.pi * 440 * t)[None]  # -43 dBFS RMS
  out = T.Normalize(-20.0).map(clip(sine))["audio"]
  assert abs(rms_db(out) + 20.0) < 0.01
  quiet = T.Normalize(-20.0, max_gain_db=10.0).map(clip(sine))["audio"]
  assert abs(rms_db(quiet) - (rms_db(sine) + 10.0)) < 0.01  # gain capped
  spiky = np.zeros((1, 24000)); spiky[0, 5] = 0.5
  assert abs(np.abs(T.Normalize(-20.0).map(clip(spiky))["audio"]).max() - 0.99) < 1e-6  # peak limited


def test_random_crop_window_and_padding():
  rng = np.random.default_rng(0)
  a = np.stack([np.arange(1000), -np.arange(1000)]).astype(np.float32) / 1000 + 0.5
  out = T.RandomCrop(100).random_map(clip(a), rng)
  seg, n = out["audio"], int(out["lengths"])
  assert seg.shape == (100, 2) and n == 100
  start = int(round((seg[0, 0] - 0.5) * 1000))
  np.testing.assert_array_equal(seg, a[:, start:start + 100].T)
  short = T.RandomCrop(100).random_map(clip(a[:, :30]), rng)
  assert int(short["lengths"]) == 30 and np.all(short["audio"][30:] == 0)
  np.testing.assert_array_equal(short["audio"][:30], a[:, :30].T)


def test_random_crop_avoids_silence():
  a = np.zeros((1, 10000), np.float32)
  a[0, 9000:] = 0.5  # only the last 10% is audible
  hits = [float(np.abs(T.RandomCrop(1000, tries=8).random_map(clip(a), np.random.default_rng(s))["audio"]).max())
          for s in range(20)]
  assert np.mean([h > 0 for h in hits]) > 0.5  # one draw would hit sound about 10% of the time


def test_random_gain_bounds():
  a = 0.1 * np.ones((1, 100), np.float32)
  outs = [float(T.RandomGain(-6, 6).random_map(clip(a), np.random.default_rng(s))["audio"][0, 0]) for s in range(50)]
  db = 20 * np.log10(np.array(outs) / 0.1)
  assert db.min() >= -6 - 1e-4 and db.max() <= 6 + 1e-4 and db.std() > 1.0
  loud = T.RandomGain(20, 20).random_map(clip(0.5 * np.ones((1, 10))), np.random.default_rng(0))["audio"]
  assert abs(np.abs(loud).max() - 0.99) < 1e-6


def test_checks_and_pcm():
  check = T.CheckAudio(min_samples=10, silence_db=-60)
  assert check.map(clip(np.zeros((1, 100))))["error"] == "silent"
  assert check.map(clip(np.full((1, 100), 1e-4)))["error"] == "silent"  # -80 dBFS
  assert check.map(clip(np.ones((1, 5))))["error"] == "too_short"
  assert "error" not in check.map(clip(np.full((1, 100), 0.01)))
  assert T.MixChannels(2).map(clip(np.ones((3, 10))))["error"] == "channels"
  bad = {"error": "corrupt", "path": "p", "detail": ""}
  assert T.Resample(16000).map(bad) is bad and T.RandomCrop(5).random_map(bad, np.random.default_rng(0)) is bad
  pcm = T._pcm_to_float(np.array([[-32768, 16384], [0, 32767]], np.int16))
  np.testing.assert_allclose(pcm, [[-1.0, 0.0], [0.5, 32767 / 32768]])
  with pytest.raises(ValueError):
    T._pcm_to_float(np.zeros((2, 2, 2)))


def test_tokenize_fields():
  ex = {**clip(np.zeros((4, 1))), "lengths": np.int32(3), "text": "hi", "task": "caption"}
  out = T.Tokenize(8).map(ex)
  assert sorted(out) == ["audio", "lengths", "path", "text", "text_lengths"]
  assert out["text"].tolist() == [4, ord("h") + 8, ord("i") + 8, 2, 0, 0, 0, 0] and out["text_lengths"] == 4
  none = T.Tokenize(8).map({**ex, "text": "", "task": ""})
  assert none["text_lengths"] == 0 and not none["text"].any()
