"""Small building blocks shared by the model: parameters with logical axes, norms, scales.

Every parameter carries `axes`, a tuple of logical axis names (one per dimension);
`cat_jax.sharding` maps those names onto mesh axes.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx


def param(key: jax.Array, init, shape: tuple[int, ...], axes: tuple, dtype=jnp.float32) -> nnx.Param:
  """An nnx.Param created by `init(key, shape, dtype)` and tagged with logical `axes`."""
  if len(axes) != len(shape):
    raise ValueError(f"axes {axes} do not name every dimension of {shape}")
  return nnx.Param(init(key, shape, dtype), axes=tuple(axes))


def _mix32(x):
  """murmur3's 32-bit finaliser: a cheap, well-spread integer hash."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def hash_uniform(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """U[0, 1) float32 from a counter hash of the key (one fused kernel).

  Weight init needs no cryptographic PRNG, and threefry's bits dominate compile time on
  CPU (seconds per parameter shape); this keeps model init compiling in about a second.
  """
  words = jax.random.key_data(key).reshape(-1).astype(jnp.uint32)
  x = _mix32(jax.lax.iota(jnp.uint32, max(1, math.prod(shape))) * jnp.uint32(0x9E3779B9) + words[0])
  for i in range(1, words.shape[0]):
    x = _mix32(x ^ words[i])
  return ((x >> 8).astype(jnp.float32) * (1.0 / (1 << 24)))[: math.prod(shape)].reshape(shape)


def hash_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """N(0, 1) float32 by Box-Muller on two hash_uniform draws."""
  k1, k2 = jax.random.split(key)
  u1 = 1.0 - hash_uniform(k1, shape)  # (0, 1]
  u2 = hash_uniform(k2, shape)
  return jnp.sqrt(-2.0 * jnp.log(u1)) * jnp.cos(2 * jnp.pi * u2)


def fan_in_uniform(fan_in: int):
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's default for Linear/Conv1d, any kernel layout."""
  bound = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype: ((hash_uniform(key, shape) * 2 - 1) * bound).astype(dtype)


def fan_in_normal(fan_in: int):
  """N(0, 1/fan_in), any kernel layout."""
  std = 1.0 / math.sqrt(fan_in)
  return lambda key, shape, dtype: (hash_normal(key, shape) * std).astype(dtype)


def normal(std: float = 1.0):
  return lambda key, shape, dtype: (hash_normal(key, shape) * std).astype(dtype)


def constant(value: float):
  return lambda key, shape, dtype: jnp.full(shape, value, dtype)


class Dense(nnx.Module):
  """Bias-free linear map whose kernel may have several input or output dims.

  kernel: (*in_shape, *out_shape); `x` contracts its last len(in_shape) dims.
  """

  def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], axes: tuple, *, key):
    self.num_in = len(in_shape)
    self.kernel = param(key, fan_in_uniform(math.prod(in_shape)), (*in_shape, *out_shape), axes)

  def __call__(self, x: jax.Array, dtype=None) -> jax.Array:
    w = self.kernel[...]
    if dtype is not None:
      x, w = x.astype(dtype), w.astype(dtype)
    n = self.num_in
    lead = x.shape[: x.ndim - n]
    # One flat leading axis: with (B, T) kept apart, XLA:CPU transposes the output gradient
    # through a slow copy before the weight-gradient dot (the stage backward ran 30% slower).
    y = jnp.tensordot(x.reshape(-1, *x.shape[x.ndim - n:]), w, axes=(tuple(range(1, n + 1)), tuple(range(n))))
    return y.reshape(*lead, *y.shape[1:])


class LayerNorm(nnx.Module):
  """torch.nn.LayerNorm(eps=1e-5) with `weight` and `bias`."""

  def __init__(self, dim: int):
    self.weight = nnx.Param(jnp.ones((dim,), jnp.float32), axes=("embed",))
    self.bias = nnx.Param(jnp.zeros((dim,), jnp.float32), axes=("embed",))

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    mean = xf.mean(-1, keepdims=True)
    var = jnp.square(xf - mean).mean(-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + 1e-5)
    return (y * self.weight[...] + self.bias[...]).astype(x.dtype)


class RMSNorm(nnx.Module):
  """x * alpha / sqrt(mean(x^2) + eps); `alpha` stored as (C,) (the reference's (1, 1, C))."""

  def __init__(self, dim: int, eps: float):
    self.eps = eps
    self.alpha = nnx.Param(jnp.ones((dim,), jnp.float32), axes=("embed",))

  def __call__(self, x):
    xf = x.astype(jnp.float32)
    var = self.eps + jnp.mean(jnp.square(xf), -1, keepdims=True)
    return (xf * (self.alpha[...] * jax.lax.rsqrt(var))).astype(x.dtype)


def make_norm(kind: str, dim: int) -> nnx.Module:
  if kind == "layer_norm":
    return LayerNorm(dim)
  if kind == "rms_norm":
    return RMSNorm(dim, 1e-5)
  if kind == "rms_norm_f32":
    return RMSNorm(dim, 1e-8)
  raise ValueError(f"unknown norm {kind!r}")


class LayerScale(nnx.Module):
  """Per-channel residual scale (Touvron et al. 2021)."""

  def __init__(self, dim: int, init: float):
    self.scale = nnx.Param(jnp.full((dim,), init, jnp.float32), axes=("embed",))

  def __call__(self, x):
    return x * self.scale[...].astype(x.dtype)


def _mish(x):
  return x * jnp.tanh(jax.nn.softplus(x))


ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "leaky_relu": jax.nn.leaky_relu,
    "elu": jax.nn.elu, "gelu": lambda x: jax.nn.gelu(x, approximate=False), "silu": jax.nn.silu,
    "mish": _mish, "softsign": jax.nn.soft_sign, "identity": lambda x: x,
}
