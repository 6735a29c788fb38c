"""CATTorch (PyTorch inference on exported weights): strict load, golden parity, parity with the JAX model."""
import json
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cat_jax import CAT, AudioError, CheckpointError, CodesError  # noqa: E402
from cat_jax.config import CATConfig, symmetric_config  # noqa: E402
from cat_jax.torch_model import ACTIVATIONS, CATTorch  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def torch_tiny(golden_dir):
  return CATTorch.from_pretrained(golden_dir)


def _frame_mask(codes, lengths):
  return np.arange(codes.shape[-1])[None] < np.asarray(lengths)[:, None]


def test_golden_strict_load_has_reference_names(golden_dir):
  from safetensors.torch import load_file
  state = load_file(str(golden_dir / "model.safetensors"))
  model = CATTorch(CATConfig.from_json(golden_dir))
  assert set(model.state_dict()) == set(state)
  assert "quantizer.quantizers.0.in_proj.parametrizations.weight.original1" in state
  model.load_state_dict(state, strict=True)
  names = [line.split()[0] for line in (golden_dir / "MANIFEST.txt").read_text().splitlines() if line.strip()]
  assert sorted(model.state_dict()) == sorted(names)


def test_golden_encode(torch_tiny, golden):
  enc = torch_tiny.encode(golden["input_values"], golden["padding_mask"])
  np.testing.assert_array_equal(enc.audio_codes.numpy(), golden["audio_codes"])
  np.testing.assert_array_equal(enc.audio_codes_lengths.numpy(), golden["audio_codes_lengths"])
  np.testing.assert_allclose(enc.encoder_hidden_states.numpy(), golden["encoder_hidden_states"], atol=ATOL, rtol=0)
  nq = int(golden["nq_partial"])
  part = torch_tiny.encode(golden["input_values"], golden["padding_mask"], num_quantizers=nq)
  np.testing.assert_array_equal(part.audio_codes.numpy(), golden["audio_codes_nq_partial"])
  stream = torch_tiny.encode(torch.from_numpy(golden["stream_input"][:, 0]))  # (B, T) input
  np.testing.assert_array_equal(stream.audio_codes.numpy(), golden["stream_full_codes"])


def test_golden_decode(torch_tiny, golden):
  mask = _frame_mask(golden["audio_codes"], golden["audio_codes_lengths"])
  dec = torch_tiny.decode(golden["audio_codes"], mask)
  np.testing.assert_allclose(dec.audio.numpy(), golden["decoded_audio"], atol=ATOL, rtol=0)
  np.testing.assert_array_equal(dec.audio_lengths.numpy(), golden["decoded_audio_lengths"])
  part = torch_tiny.decode(golden["audio_codes"], mask, num_quantizers=int(golden["nq_partial"]))
  np.testing.assert_allclose(part.audio.numpy(), golden["decoded_audio_nq_partial"], atol=ATOL, rtol=0)
  one = torch_tiny.decode(golden["stream_full_codes"][:, 0])  # (n_q, frames) codes
  np.testing.assert_allclose(one.audio.numpy(), golden["stream_full_audio"], atol=ATOL, rtol=0)


def test_golden_matches_jax_model(torch_tiny, tiny_model, golden):
  _assert_same_as_jax(torch_tiny, tiny_model, golden["input_values"], golden["padding_mask"], nq=5)


def test_forward_reconstructs_like_encode_then_decode(torch_tiny, golden):
  x = golden["input_values"][:1, :, :10000]
  rec = torch_tiny(x)
  enc = torch_tiny.encode(x)
  full = torch_tiny.decode(enc.audio_codes).audio
  assert rec.audio.shape == (1, 1, 10000)
  np.testing.assert_array_equal(rec.audio.numpy(), full[..., :10000].numpy())


def _assert_same_as_jax(tm, jm, x, padding_mask, nq):
  """Codes identical, hidden states and audio within ATOL (one JAX encode and decode: compiles are slow)."""
  je, te = jm.encode(x, padding_mask), tm.encode(x, padding_mask)
  np.testing.assert_array_equal(te.audio_codes.numpy(), je.audio_codes)
  np.testing.assert_array_equal(te.audio_codes_lengths.numpy(), je.audio_codes_lengths)
  np.testing.assert_allclose(te.encoder_hidden_states.numpy(), je.encoder_hidden_states, atol=ATOL, rtol=0)
  mask = _frame_mask(je.audio_codes, je.audio_codes_lengths)
  jd, td = jm.decode(je.audio_codes, mask), tm.decode(je.audio_codes, mask)
  assert np.abs(jd.audio).max() > 10 * ATOL  # the comparison below is not vacuous
  np.testing.assert_allclose(td.audio.numpy(), jd.audio, atol=ATOL, rtol=0)
  np.testing.assert_array_equal(td.audio_lengths.numpy(), jd.audio_lengths)
  # Residual coding: the first nq quantizers' codes do not depend on how many follow.
  part = tm.encode(x, padding_mask, num_quantizers=nq)
  np.testing.assert_array_equal(part.audio_codes.numpy(), je.audio_codes[:nq])


def _random_biases(jm, seed=0):
  """The export with non-zero quantizer conv biases (they start at 0: padding frames would tie every code)."""
  rng = np.random.default_rng(seed)
  sd = {k: v + (rng.normal(size=v.shape).astype(np.float32) * 0.3 if k.endswith(".bias") else 0)
        for k, v in jm.state_dict().items()}
  return CAT.from_torch_state_dict(jm.config, sd)


def _edit(cfg, *edits):
  """The config with per-stage changes: edits are (side, module index, {field: value})."""
  raw = cfg.to_dict()
  for side, i, changes in edits:
    raw[f"{side}_kwargs"][i].update(changes)
  return CATConfig.from_dict(raw)


SMALL = dict(patch_sizes=(240, 8), d_models=(32, 64), num_layers=(2, 1), num_heads=(2, 4))  # 2 stages: fast compiles
EXPORTS = {
    # rms_norm + sin_rope + gated silu + rvq with projected codebooks, padded batch; exported in shards.
    "rms_sinrope_silu_rvq_sharded": (lambda: symmetric_config(
        **SMALL, norm="rms_norm", positional_embedding="sin_rope", gating="silu", quantizer_type="rvq",
        layer_scale=0.3), 1, 4000),
    # 2-channel 48 kHz + rms_norm_f32 + sin (one decoder stage 'none') + gated gelu (21C/8 hidden) + no layer
    # scale + rlfq without any quantizer projection + a non-causal encoder stage. Run without a padding mask
    # (all-zero padding frames would tie every code) on 8 frames (CAT.encode pads to a bucket of frames,
    # which a non-causal stage would see).
    "stereo_48khz_f32_sin_gelu_unprojected": (lambda: _edit(symmetric_config(
        **{**SMALL, "patch_sizes": (480, 8)}, sample_rate=48000, channels=2, context_seconds=0.2,
        norm="rms_norm_f32", positional_embedding="sin", gating="gelu", layer_scale=None, ffn_mult=4,
        latent_dim=16, rvq_dim=16, codebook_dim=16, num_quantizers=4),
        ("encoder", 1, {"causal": False}), ("decoder", 0, {"positional_embedding": "none"})), 2, None),
}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_fresh_export_matches_jax(name, tmp_path):
  make, channels, shard = EXPORTS[name]
  jm = _random_biases(CAT.from_config(make(), seed=3))
  files = jm.save_pretrained(tmp_path, max_shard_size=shard)
  if shard is not None:
    assert "model.safetensors.index.json" in files and len(files) > 3
  tm = CATTorch.from_pretrained(tmp_path)
  assert set(tm.state_dict()) == set(jm.state_dict())
  for k, v in jm.state_dict().items():
    np.testing.assert_array_equal(tm.state_dict()[k].numpy(), v)
  unprojected = jm.config.quantizer.rvq_dim == jm.config.quantizer.codebook_dim
  t = jm.config.downsample_rate * 8 if unprojected else int(jm.config.sampling_rate * 0.9)
  x = (np.random.default_rng(0).normal(size=(2, channels, t)) * 0.3).astype(np.float32)
  pm = None if unprojected else np.arange(t)[None] < np.array([[t], [int(t * 0.6)]])
  _assert_same_as_jax(tm, jm, x, pm, nq=2)


def test_legacy_names_and_bad_checkpoints(golden_dir, torch_tiny, golden, tmp_path):
  from safetensors.numpy import load_file, save_file
  state = load_file(str(golden_dir / "model.safetensors"))
  legacy = {k.replace("self_attn.in_projs.0.weight", "self_attn.in_proj_weight")
            .replace("self_attn.out_projs.0.weight", "self_attn.out_proj.weight"): v for k, v in state.items()}
  assert any(k.endswith("in_proj_weight") for k in legacy)
  (tmp_path / "config.json").write_text((golden_dir / "config.json").read_text())
  save_file(legacy, str(tmp_path / "model.safetensors"))
  old = CATTorch.from_pretrained(tmp_path)
  x = golden["input_values"][:1, :, :8000]
  np.testing.assert_array_equal(old.encode(x).audio_codes.numpy(), torch_tiny.encode(x).audio_codes.numpy())
  state.pop("quantizer.quantizers.7.codebook.weight")
  save_file(state, str(tmp_path / "model.safetensors"))
  with pytest.raises(CheckpointError, match="codebook"):
    CATTorch.from_pretrained(tmp_path)
  with pytest.raises(CheckpointError, match="not found"):
    CATTorch.from_pretrained(tmp_path / "missing")


def test_input_errors(torch_tiny):
  with pytest.raises(AudioError, match="2 channel"):
    torch_tiny.encode(np.zeros((1, 2, 4000), np.float32))
  with pytest.raises(AudioError, match="padding_mask"):
    torch_tiny.encode(np.zeros((1, 1, 4000), np.float32), padding_mask=np.ones((1, 10)))
  with pytest.raises(CodesError, match="num_quantizers"):
    torch_tiny.encode(np.zeros((1, 1, 4000), np.float32), num_quantizers=9)
  with pytest.raises(CodesError, match=r"\[0, 64\)"):
    torch_tiny.decode(np.full((8, 1, 3), 64))
  with pytest.raises(CodesError, match="only 2"):
    torch_tiny.decode(np.zeros((2, 1, 3), np.int64), num_quantizers=3)


def test_activations_match_jax():
  from cat_jax.model.layers import ACTIVATIONS as JAX_ACTIVATIONS
  assert set(ACTIVATIONS) == set(JAX_ACTIVATIONS)
  x = np.linspace(-4, 4, 101, dtype=np.float32)
  for name, fn in ACTIVATIONS.items():
    np.testing.assert_allclose(fn(torch.from_numpy(x)).numpy(), np.asarray(JAX_ACTIVATIONS[name](x)),
                               atol=1e-6, rtol=1e-6, err_msg=name)


def test_torch_imported_only_by_torch_model():
  pkg = pathlib.Path(__file__).parent.parent / "cat_jax"
  users = [p.relative_to(pkg).as_posix() for p in pkg.rglob("*.py")
           if p.name != "torch_model.py" and any(line.strip().startswith(("import torch", "from torch"))
                                                 for line in p.read_text().splitlines())]
  assert users == []
