"""The command line on a 48 kHz stereo v2 model: encode / decode / reconstruct keep both channels;
a mono file is repeated to both channels."""
import numpy as np

from cat_jax.audio import read_audio, write_audio
from cat_jax.cli import main
from tests.conftest import DATA

V2 = DATA / "golden_v2_tiny"


def test_stereo_encode_decode_reconstruct(tmp_path):
  with np.load(V2 / "cases.npz") as z:
    x = z["stream_input"][0]  # (2, 57600) at 48 kHz
    full = z["stream_full_codes"][:, 0]
  wav = tmp_path / "in.wav"
  write_audio(wav, x, 48000, subtype="FLOAT")
  assert main(["encode", str(wav), str(tmp_path / "c.npz"), "--model", str(V2)]) == 0
  with np.load(tmp_path / "c.npz") as z:
    codes = [z[k] for k in z.files if z[k].ndim == 2 and z[k].shape[0] == 16][0]
  np.testing.assert_array_equal(codes, full)
  assert main(["decode", str(tmp_path / "c.npz"), str(tmp_path / "out.wav"), "--model", str(V2)]) == 0
  audio, sr = read_audio(tmp_path / "out.wav")
  assert sr == 48000 and audio.shape == (2, 57600)
  mono = tmp_path / "mono.wav"
  write_audio(mono, x[:1], 48000, subtype="FLOAT")
  assert main(["reconstruct", str(mono), str(tmp_path / "rec.wav"), "--model", str(V2)]) == 0
  assert read_audio(tmp_path / "rec.wav")[0].shape == (2, 57600)


def test_evaluate_a_stereo_clip_that_is_not_whole_frames():
  """v2 drops a partial last frame; the evaluation pads the reconstruction back to the input length."""
  from cat_jax import CAT
  from cat_jax.eval.evaluate import evaluate
  with np.load(V2 / "cases.npz") as z:
    x = z["stream_input"][0][:, :50000]  # 13 frames + 80 samples per channel
  rows = evaluate(CAT.from_pretrained(V2), [x], num_quantizers_list=[16])
  assert rows[0]["clips"] == 1 and np.isfinite(rows[0]["mel_loss"])


def test_stereo_stream_encode_decode(tmp_path):
  import soundfile as sf
  with np.load(V2 / "cases.npz") as z:
    x = z["stream_input"][0]
    full, audio = z["stream_full_codes"][:, 0], z["stream_full_audio"][0]
  sf.write(tmp_path / "in.wav", x.T, 48000, subtype="FLOAT")
  assert main(["stream-encode", str(tmp_path / "in.wav"), str(tmp_path / "c.npz"), "--model", str(V2)]) == 0
  with np.load(tmp_path / "c.npz") as z:
    np.testing.assert_array_equal(z["codes"], full)
  assert main(["stream-decode", str(tmp_path / "c.npz"), str(tmp_path / "out.wav"), "--model", str(V2),
               "--chunk-frames", "2"]) == 0
  y, sr = sf.read(tmp_path / "out.wav", dtype="float32")
  assert sr == 48000 and y.shape == (57600, 2)
  np.testing.assert_allclose(y.T, np.clip(audio, -1, 1), atol=1e-4 + 1 / 32768, rtol=0)
