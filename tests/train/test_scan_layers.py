"""scan_layers=False (the layer scans unrolled, the CPU recipe's setting) trains exactly like the scan."""
import jax
import numpy as np

from cat_jax.train import state as state_lib
from cat_jax.train import step as step_lib
from cat_jax.train import train_config


def _two_layer(cfg, scan_layers: bool):
  c = cfg.copy_and_resolve_references()
  for side in ("encoder_kwargs", "decoder_kwargs"):
    for m in c.model[side]:
      if m["module_type"] == "Transformer":
        m["num_layers"] = 2
  c.lm.num_layers = 2
  c.scan_layers = scan_layers
  return train_config.parse(c)


def test_unrolled_layers_equal_scanned_step(fast_cfg, batch_fn):
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
  batch = batch_fn()
  out = {}
  for scan in (True, False):
    trainer = state_lib.build_trainer(_two_layer(fast_cfg, scan))
    state = state_lib.init_state(trainer, jax.random.key(0))
    step = step_lib.make_train_step(trainer, stage=1, donate=False, compiler_options=fast)
    out[scan] = (step(state, batch), step.lower(state, batch).as_text().count("stablehlo.while"))
  (s_scan, m_scan), whiles_scan = out[True]
  (s_unrolled, m_unrolled), whiles_unrolled = out[False]
  # 4 codec stages + the LM, forward and backward: 10 layer loops fewer (the quantizer's loop stays)
  assert whiles_scan - whiles_unrolled == 10, (whiles_scan, whiles_unrolled)
  assert abs(float(m_scan["loss"]) - float(m_unrolled["loss"])) <= 1e-5 * abs(float(m_scan["loss"]))
  for a, b in zip(jax.tree.leaves((s_scan.codec, s_scan.lm, s_scan.gen_opt)),
                  jax.tree.leaves((s_unrolled.codec, s_unrolled.lm, s_unrolled.gen_opt))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
