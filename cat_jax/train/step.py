"""The joint training step (TRAINING.md): stage 1 reconstruction pre-training without
discriminators, stage 2 adversarial (one discriminator update, then one generator update).

Generator loss L = w_sem L_sem + w_rec L_mel + w_commit L_commit + w_codebook L_codebook
+ w_adv L_adv + w_feat L_feat (+ w_stft L_stft). The codec forward runs under jax.vjp, the
loss gradient w.r.t. its outputs is pulled back through the codec. Every array keeps its leading
batch axis; no host callbacks.

Stage 2 runs as one program (the discriminators train on the stopped output of that same
forward) or, with stage2_programs=3 (the default), as a `SplitStep` of three: `disc_step` (a plain
codec forward, then the discriminator update), `adv_step` (the adversarial and feature-matching
losses through the updated discriminators and their gradient w.r.t. the generated audio) and the
generator update (stage 1's step with that gradient pulled back through the codec). The codec
programs draw the iteration's key from the same state.rng: same dropout, same restart key, same
result (to float rounding), at the cost of one more codec forward.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cat_jax.train import codebook_restart, losses
from cat_jax.train import metrics as metrics_lib
from cat_jax.train import optimizer as opt_lib
from cat_jax.train.semantic_lm import text_loss
from cat_jax.train.state import Trainer, TrainState


def quantizer_dropout(key: jax.Array, batch: int, n_q: int, prob: float) -> jax.Array:
  """(B,) codebooks kept per example: with probability `prob` uniform in 1..n_q, else n_q."""
  k1, k2 = jax.random.split(key)
  drop = jax.random.uniform(k1, (batch,)) < prob
  return jnp.where(drop, jax.random.randint(k2, (batch,), 1, n_q + 1), n_q).astype(jnp.int32)


def _where_finite(ok, new, old):
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, old)


def _all_finite(tree) -> jax.Array:
  leaves = jax.tree.leaves(tree)
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.array(True)


def _disc(trainer: Trainer, disc_params, audio: jax.Array):
  """(B, T, C) masked audio -> (logits list, features list) of every sub-discriminator."""
  b, t, c = audio.shape
  x = audio.transpose(0, 2, 1).reshape(b * c, t)
  return nnx.merge(trainer.disc_def, disc_params)(x, trainer.dtype)


def _mel(trainer: Trainer, x, y, lengths):
  m = trainer.config.loss.mel
  return losses.mel_loss(x, y, lengths, sr=trainer.model_config.sampling_rate, windows=m.windows,
                         n_mels=m.n_mels, clamp_eps=m.clamp_eps, power=m.power, mag_weight=m.mag_weight,
                         log_weight=m.log_weight, normalized=m.normalized)


def _part_norms(grads) -> dict:
  return {f"grad_norm/{k}": optax.tree.norm(v) for k, v in grads.items()}


def discriminator_update(trainer: Trainer, disc, disc_opt, x: jax.Array, y: jax.Array):
  """One LSGAN step of the discriminators on real x and (stopped) generated y, both (B, T, C) masked.
  Touches only discriminator params; skipped (unchanged) when loss or gradients are non-finite.
  Returns (disc, disc_opt, metrics, finite)."""
  y = jax.lax.stop_gradient(y)
  b, t, c = x.shape
  # One pass over real and fake interleaved row by row, (B, 2, T, C) -> (2B, T, C): half as many
  # conv ops to compile, and each device keeps its own rows under batch sharding.
  xy = jnp.stack([x, y], axis=1).reshape(2 * b, t, c)

  def d_loss_fn(dp):
    logits, _ = _disc(trainer, dp, xy)
    pairs = [lg.reshape(b, 2, c, *lg.shape[1:]) for lg in logits]  # rows (i, real or fake, channel)
    return losses.lsgan_discriminator_loss([p[:, 0] for p in pairs], [p[:, 1] for p in pairs])

  d_loss, d_grads = jax.value_and_grad(d_loss_fn)(disc)
  upd, new_opt = trainer.disc_tx.update(d_grads, disc_opt, disc)
  ok = jnp.isfinite(d_loss) & _all_finite(d_grads)
  new_disc = _where_finite(ok, optax.apply_updates(disc, upd), disc)
  new_opt = _where_finite(ok, new_opt, disc_opt)
  return new_disc, new_opt, {"disc_loss": d_loss, "grad_norm/disc": optax.tree.norm(d_grads)}, ok


def _masked_audio(batch: dict):
  """The masked audio x (B, T, C), lengths (B,) and the sample mask (B, T, 1) of a batch."""
  audio = batch["audio"].astype(jnp.float32)
  lengths = batch["lengths"].astype(jnp.int32)
  smask = losses.sample_mask(lengths, audio.shape[1])[..., None]
  return audio * smask, lengths, smask


def _inputs(trainer: Trainer, batch: dict, rng: jax.Array):
  """`_masked_audio` and quantizer dropout's `active` (None without dropout), drawn from `rng`
  (the same in every codec program of one step)."""
  x, lengths, smask = _masked_audio(batch)
  p = trainer.config.quantizer_dropout
  active = quantizer_dropout(rng, x.shape[0], trainer.model_config.num_quantizers, p) if p > 0 else None
  return x, lengths, smask, active


def _step_rng(state: TrainState, rng: jax.Array | None):
  """(the key of this iteration, the state's key for the next one): state.rng split once."""
  next_rng, own = jax.random.split(state.rng)
  return (own if rng is None else rng), next_rng


def _adv_losses(trainer: Trainer, disc, x: jax.Array, y: jax.Array):
  """(L_adv, L_feat) of generated y against real x, both (B, T, C) masked. The real audio's
  features are constants of the generator loss (no tangent or cotangent is traced through them)."""
  real_feats = jax.lax.stop_gradient(_disc(trainer, disc, x)[1])
  fake, fake_feats = _disc(trainer, disc, y)
  return losses.lsgan_generator_loss(fake), losses.feature_matching_loss(real_feats, fake_feats)


def disc_step(trainer: Trainer, state: TrainState, batch: dict, rng: jax.Array | None = None):
  """Program 1 of a split stage-2 iteration: the codec forward alone (no vjp, nothing traced for a
  codec gradient) with the iteration's quantizer dropout, then `discriminator_update` on its
  stopped output. Returns (state with new disc and disc_opt, disc metrics, the masked generated
  audio y (B, T, C) for `adv_step`); everything else, state.rng included, is left to the generator
  program (train_step with `adv_inputs`), which draws the same key from the same state.rng."""
  rng, _ = _step_rng(state, rng)
  x, lengths, smask, active = _inputs(trainer, batch, rng)
  y = nnx.merge(trainer.codec_def, state.codec)(x, lengths, active, dtype=trainer.dtype).audio
  y = y.astype(jnp.float32) * smask
  disc, disc_opt, mets, ok = discriminator_update(trainer, state.disc, state.disc_opt, x, y)
  mets["disc_skipped"] = (~ok).astype(jnp.int32)
  return state.replace(disc=disc, disc_opt=disc_opt), mets, y


def adv_step(trainer: Trainer, disc, batch: dict, y: jax.Array):
  """Program 2 of a split stage-2 iteration: w_adv L_adv + w_feat L_feat of the masked generated
  audio y (B, T, C) through the (updated) discriminators, and its gradient w.r.t. y: all the
  generator program needs of them. Returns (dL/dy (B, T, C), {'adv', 'feat'})."""
  w = trainer.config.loss
  x, _, _ = _masked_audio(batch)

  def loss_fn(y):
    adv, feat = _adv_losses(trainer, disc, x, y)
    return w.adv * adv + w.feat * feat, {"adv": adv, "feat": feat}

  return jax.grad(loss_fn, has_aux=True)(y)


def _stage_step(trainer: Trainer, adversarial: bool, state: TrainState, batch: dict, rng: jax.Array,
                adv_inputs: tuple[dict, jax.Array] | None = None):
  """One stage-1 or stage-2 iteration. `adv_inputs` (stage 2 only): `disc_step` has already updated
  state.disc/disc_opt this iteration and `adv_step` has scored its output: (their metrics, the
  gradient of w_adv L_adv + w_feat L_feat w.r.t. the masked generated audio); None: do both here."""
  cfg = trainer.config
  w = cfg.loss
  x, lengths, smask, active = _inputs(trainer, batch, rng)
  b = x.shape[0]
  n_q = trainer.model_config.num_quantizers

  def codec_fwd(codec):
    out = nnx.merge(trainer.codec_def, codec)(x, lengths, active, dtype=trainer.dtype)
    q = out.quantizer
    outs = (out.audio.astype(jnp.float32), q.quantized.astype(jnp.float32), q.commitment_loss.sum(),
            q.codebook_loss.sum())
    return outs, (q.codes, out.frame_lengths, q.latents)

  outs, codec_vjp, (codes, flen, latents) = jax.vjp(codec_fwd, state.codec, has_aux=True)
  mets = {}

  # ---- discriminator update (stage 2 only) -----------------------------------------------
  disc, disc_opt = state.disc, state.disc_opt
  d_skip = jnp.zeros((), jnp.int32)
  if adversarial and adv_inputs is not None:  # done by disc_step and adv_step (programs 1 and 2)
    d_mets = dict(adv_inputs[0])
    d_skip = d_mets.pop("disc_skipped")
    adv_parts = {k: d_mets.pop(k) for k in ("adv", "feat")}
    mets.update(d_mets)
  elif adversarial:
    disc, disc_opt, d_mets, d_ok = discriminator_update(trainer, state.disc, state.disc_opt, x, outs[0] * smask)
    d_skip = (~d_ok).astype(jnp.int32)
    mets.update(d_mets)
  else:
    mets.update({"disc_loss": jnp.zeros(()), "grad_norm/disc": jnp.zeros(())})

  # ---- generator loss on the codec outputs ------------------------------------------------
  def g_loss_fn(outs, lm):
    y, zq, commit, cb = outs
    y = y * smask
    parts = {"mel": _mel(trainer, x, y, lengths), "commit": commit, "codebook": cb}
    total = w.rec * parts["mel"] + w.commit * commit + w.codebook * cb
    if w.sem:
      logits = nnx.merge(trainer.lm_def, lm)(zq, flen, batch["text"], trainer.dtype)
      parts["sem"] = text_loss(logits, batch["text"], batch["text_lengths"])
      total = total + w.sem * parts["sem"]
    else:
      parts["sem"] = jnp.zeros(())
    if w.stft:
      parts["stft"] = losses.stft_loss(x, y, lengths)
      total = total + w.stft * parts["stft"]
    if w.wave:
      parts["wave"] = losses.waveform_loss(x, y, lengths)
      total = total + w.wave * parts["wave"]
    if w.wave_low:
      parts["wave_low"] = losses.waveform_loss(x, y, lengths, lowpass_hz=w.wave_lowpass_hz,
                                               sr=trainer.model_config.sampling_rate)
      total = total + w.wave_low * parts["wave_low"]
    if adversarial and adv_inputs is not None:
      parts.update(adv_parts)
      # the value of the adversarial terms (adv_step's) and their gradient: <dL/dy, y> - its value
      dot = jnp.sum(jax.lax.stop_gradient(adv_inputs[1]) * y)
      total = total + w.adv * parts["adv"] + w.feat * parts["feat"] + (dot - jax.lax.stop_gradient(dot))
    elif adversarial:
      parts["adv"], parts["feat"] = _adv_losses(trainer, disc, x, y)
      total = total + w.adv * parts["adv"] + w.feat * parts["feat"]
    else:
      parts["adv"], parts["feat"] = jnp.zeros(()), jnp.zeros(())
    return total, parts

  (total, parts), (d_outs, g_lm) = jax.value_and_grad(g_loss_fn, argnums=(0, 1), has_aux=True)(outs, state.lm)
  (g_codec,) = codec_vjp(d_outs)
  grads = {"codec": g_codec, "lm": g_lm}
  params = state.gen_params
  upd, new_gopt = trainer.gen_tx.update(grads, state.gen_opt, params)
  g_ok = jnp.isfinite(total) & _all_finite(grads)
  new_params = _where_finite(g_ok, optax.apply_updates(params, upd), params)
  gen_opt = _where_finite(g_ok, new_gopt, state.gen_opt)
  weights = metrics_lib.code_weights(flen, n_q, codes.shape[-1], active)  # (n_q, B, F): frames each quantizer coded
  counts = metrics_lib.code_counts(codes, weights, trainer.model_config.codebook_size)
  codec_params, code_usage, restarts = _restart_codes(cfg, state, new_params["codec"], counts, weights, latents,
                                                      g_ok, rng)
  ema = state.ema
  if ema is not None:
    ema = _where_finite(g_ok, opt_lib.ema_update(ema, codec_params, cfg.optim.ema_decay), ema)

  skip = (~g_ok).astype(jnp.int32) + d_skip
  usage, ppl = metrics_lib.usage_perplexity(counts)
  stage1 = cfg.schedule.stage1_steps
  mets.update(parts)
  mets.update(_part_norms({"encoder": g_codec["encoder"], "quantizer": g_codec["quantizer"],
                           "decoder": g_codec["decoder"], "lm": g_lm}))
  mets.update({
      "loss": total, "grad_norm/gen": optax.tree.norm(grads),
      "lr/gen": trainer.gen_schedule(state.step),
      "lr/disc": trainer.disc_schedule(jnp.maximum(state.step - stage1, 0)) * adversarial,
      "skipped": skip, "skipped_total": state.skipped + skip, "adversarial": jnp.asarray(adversarial, jnp.int32),
      "active_mean": (jnp.full((b,), n_q) if active is None else active).astype(jnp.float32).mean(),
      "codebook_usage": usage, "codebook_perplexity": ppl, "codebook_restarts": restarts,
  })
  new_state = state.replace(step=state.step + 1, codec=codec_params, lm=new_params["lm"], disc=disc,
                            gen_opt=gen_opt, disc_opt=disc_opt, ema=ema, skipped=state.skipped + skip,
                            code_usage=code_usage)
  return new_state, mets


def _restart_codes(cfg, state: TrainState, codec, counts, weights, latents, ok, rng):
  """Usage tracking and dead-code restarts (cfg.codebook_restart: decay, threshold; off at
  threshold 0). Skipped steps change nothing. Returns (codec, code_usage, restarted rows)."""
  rc = cfg.codebook_restart
  if not rc.threshold:
    return codec, state.code_usage, jnp.zeros((), jnp.int32)
  usage = codebook_restart.update_usage(state.code_usage, counts, rc.decay)
  new_codec, usage, n = codebook_restart.restart_dead_codes(codec, usage, latents, weights,
                                                            jax.random.fold_in(rng, 1), rc.threshold)
  return (_where_finite(ok, new_codec, codec), jnp.where(ok, usage, state.code_usage),
          jnp.where(ok, n, 0))


def train_step(trainer: Trainer, state: TrainState, batch: dict, rng: jax.Array | None = None, *,
               stage: int | None = None, adv_inputs: tuple[dict, jax.Array] | None = None):
  """One iteration -> (new state, metrics). `stage` None picks by state.step (< stage1_steps: 1)
  with lax.cond; 1 or 2 forces a stage statically (smaller programs). Stage 2 without any
  adversarial weight is the same as stage 1. rng defaults to state.rng (advanced every step).
  `adv_inputs` (stage 2): (the metrics of `disc_step` and `adv_step`, adv_step's audio gradient): the
  discriminators were already updated on this state and rng; this is then the generator program
  of the split step."""
  rng, next_rng = _step_rng(state, rng)
  state = state.replace(rng=next_rng)
  w = trainer.config.loss
  has_adv = bool(w.adv or w.feat)
  stage1 = trainer.config.schedule.stage1_steps
  if stage is None and (stage1 <= 0 or not has_adv):
    stage = 2 if stage1 <= 0 else 1
  if adv_inputs is not None and not (stage == 2 and has_adv):
    raise ValueError("adv_inputs (a split step's generator program) needs stage=2 with adversarial losses")
  if stage is not None:
    return _stage_step(trainer, stage == 2 and has_adv, state, batch, rng, adv_inputs)
  return jax.lax.cond(state.step < stage1, functools.partial(_stage_step, trainer, False),
                      functools.partial(_stage_step, trainer, True), state, batch, rng)


def split_applies(trainer: Trainer, stage: int | None, split: bool | None = None) -> bool:
  """Whether `stage` runs as a `SplitStep`: a static adversarial stage 2 with split (None: the
  config's stage2_programs == 3)."""
  w = trainer.config.loss
  if split is None:
    split = trainer.config.stage2_programs == 3
  return bool(split) and stage == 2 and bool(w.adv or w.feat)


class SplitStep:
  """A stage-2 iteration as three jitted programs, called like the single step:
  (state, batch[, rng]) -> (state, metrics). `disc`: (state, batch[, rng]) -> (state with new
  disc/disc_opt, disc metrics, generated audio y); `adv`: (state.disc, batch, y) -> (dL/dy,
  adversarial metrics); `gen`: (state, batch, both programs' metrics, dL/dy[, rng]) -> (state,
  metrics). `disc` and `gen` draw the iteration's key from the same state.rng (only `gen`
  advances it), so they see the same quantizer dropout and restart key as the single program."""

  programs = ("disc", "adv", "gen")

  def __init__(self, disc, adv, gen):
    self.disc, self.adv, self.gen = disc, adv, gen

  def __call__(self, state, batch, rng=None):
    extra = () if rng is None else (rng,)
    state, d_mets, y = self.disc(state, batch, *extra)
    g, a_mets = self.adv(state.disc, batch, y)
    return self.gen(state, batch, {**d_mets, **a_mets}, g, *extra)


def make_train_step(trainer: Trainer, stage: int | None = None, donate: bool = True, compiler_options=None,
                    split: bool | None = None):
  """jax.jit(train_step) with the state donated: (state, batch[, rng]) -> (state, metrics).
  `compiler_options` go to XLA (tests use a low optimisation level to compile faster).
  `split` (None: config stage2_programs == 3) makes an adversarial stage=2 a `SplitStep`."""
  kw = {"donate_argnums": (0,) if donate else (), "compiler_options": compiler_options}
  if split_applies(trainer, stage, split):
    gen = lambda state, batch, mets, g, rng=None: train_step(trainer, state, batch, rng, stage=2, adv_inputs=(mets, g))
    adv = jax.jit(functools.partial(adv_step, trainer), donate_argnums=(2,) if donate else (),
                  compiler_options=compiler_options)  # y's buffer becomes dL/dy's
    return SplitStep(jax.jit(functools.partial(disc_step, trainer), **kw), adv, jax.jit(gen, **kw))
  fn = functools.partial(train_step, trainer, stage=stage)
  return jax.jit(fn, **kw)


# ---- evaluation -------------------------------------------------------------------------------

def reconstruct(trainer: Trainer, codec_params, audio: jax.Array, lengths: jax.Array, n_q=None):
  """Code with the first n_q codebooks and decode: audio (B, T, C) -> (audio (B, T, C), lengths).
  n_q: None (all) or an int (encode + decode), or a (B,) array (one compiled program for any count:
  the training forward with `active`, which sums exactly the first n_q quantizer outputs)."""
  model = nnx.merge(trainer.codec_def, codec_params)
  audio = audio.astype(jnp.float32)
  if n_q is not None and not isinstance(n_q, int):
    out = model(audio, lengths, jnp.broadcast_to(jnp.asarray(n_q, jnp.int32), lengths.shape), dtype=trainer.dtype)
    return out.audio.astype(jnp.float32), lengths
  codes, flen, _ = model.encode(audio, lengths, n_q, dtype=trainer.dtype)
  y, ylen = model.decode(codes, flen, dtype=trainer.dtype)
  return y.astype(jnp.float32), ylen


def eval_step(trainer: Trainer, state: TrainState, batch: dict, n_q=None, use_ema: bool = False):
  """Reconstruction metrics with n_q codebooks (see `reconstruct`): mel (the training L_rec),
  stft distance, SI-SDR (dB, mean over non-empty examples)."""
  params = state.ema if (use_ema and state.ema is not None) else state.codec
  audio = batch["audio"].astype(jnp.float32)
  lengths = batch["lengths"].astype(jnp.int32)
  smask = losses.sample_mask(lengths, audio.shape[1])[..., None]
  x = audio * smask
  y, _ = reconstruct(trainer, params, x, lengths, n_q)
  y = y * smask
  valid = (lengths > 0).astype(jnp.float32)
  sdr = metrics_lib.si_sdr(x, y, lengths)
  return {"mel": _mel(trainer, x, y, lengths), "stft": losses.stft_loss(x, y, lengths),
          "si_sdr": jnp.sum(sdr * valid) / jnp.maximum(valid.sum(), 1.0)}
