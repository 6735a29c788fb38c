"""CATTorch on the v2 family: strict load of golden/v2-tiny under v2 names, golden parity (stereo,
interleave, length masking, trimmed codes), and a JAX export of a v2 model loads strictly."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cat_jax import CAT, CATConfig  # noqa: E402
from cat_jax.torch_model import CATTorch  # noqa: E402
from tests.conftest import GOLDEN_V2 as V2  # noqa: E402


@pytest.fixture(scope="module")
def torch_v2():
  return CATTorch.from_pretrained(V2)


def test_strict_load_has_v2_names():
  from safetensors.torch import load_file
  state = load_file(str(V2 / "model.safetensors"))
  model = CATTorch(CATConfig.from_json(V2))
  model.load_state_dict(state, strict=True)
  assert "encoder.1.transformer.layers.0.ffn.0.weight" in model.state_dict()
  assert set(model.state_dict()) == set(state)


def test_golden_encode_decode(torch_v2, g2):
  enc = torch_v2.encode(g2["input_values"], g2["padding_mask"])
  np.testing.assert_array_equal(enc.audio_codes.numpy(), g2["audio_codes"])
  np.testing.assert_array_equal(enc.audio_codes_lengths.numpy(), g2["audio_codes_lengths"])
  np.testing.assert_allclose(enc.encoder_hidden_states.numpy(), g2["encoder_hidden_states"], atol=1e-4, rtol=0)
  mask = np.arange(g2["audio_codes"].shape[-1])[None] < g2["audio_codes_lengths"][:, None]
  dec = torch_v2.decode(g2["audio_codes"], mask)
  np.testing.assert_array_equal(dec.audio_lengths.numpy(), g2["decoded_audio_lengths"])
  np.testing.assert_allclose(dec.audio.numpy(), g2["decoded_audio"], atol=1e-4, rtol=0)
  part = torch_v2.decode(g2["audio_codes"], num_quantizers=int(g2["nq_partial"]))
  np.testing.assert_allclose(part.audio.numpy(), g2["decoded_audio_nq_partial"], atol=1e-4, rtol=0)
  one = torch_v2.encode(torch.from_numpy(g2["stream_input"][0]))  # (C, T): one stereo item
  np.testing.assert_array_equal(one.audio_codes.numpy(), g2["stream_full_codes"])


def test_jax_v2_export_loads_strictly(tmp_path):
  """A randomly initialised v2 model saved by cat_jax: CATTorch loads it with strict=True."""
  import json
  raw = json.loads((V2 / "config.json").read_text())
  model = CAT.from_config(raw, seed=3)
  model.save_pretrained(tmp_path)
  t = CATTorch.from_pretrained(tmp_path)
  x = np.random.default_rng(0).normal(size=(1, 2, 3 * 3840)).astype(np.float32) * 0.1
  np.testing.assert_array_equal(t.encode(x).audio_codes.numpy(), model.encode(x).audio_codes)
