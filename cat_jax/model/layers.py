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


def fan_in_normal(fan_in: int):
  """Normal init with std 1/sqrt(fan_in), whatever the kernel's layout."""
  return jax.nn.initializers.normal(stddev=1.0 / math.sqrt(fan_in))


def constant(value: float):
  return lambda key, shape, dtype: jnp.full(shape, value, dtype)


class Dense(nnx.Module):
  """Bias-free linear map whose kernel may have several input or output dims.

  kernel: (*in_shape, *out_shape); `x` contracts its last len(in_shape) dims.
  """

  def __init__(self, in_shape: tuple[int, ...], out_shape: tuple[int, ...], axes: tuple, *, key):
    self.num_in = len(in_shape)
    self.kernel = param(key, fan_in_normal(math.prod(in_shape)), (*in_shape, *out_shape), axes)

  def __call__(self, x: jax.Array, dtype=None) -> jax.Array:
    w = self.kernel[...]
    if dtype is not None:
      x, w = x.astype(dtype), w.astype(dtype)
    n = self.num_in
    return jnp.tensordot(x, w, axes=(tuple(range(x.ndim - n, x.ndim)), tuple(range(n))))


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
