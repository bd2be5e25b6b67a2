"""Activations, each with its derivative written beside it (micrograd style).

``grad(z)`` is dh/dz as a function of the pre-activation z. Where a function has
a kink, the derivative follows what ``jax.grad`` gives for the same jax.nn
function, so hand-derived and autodiff gradients agree exactly there too.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .errors import unknown_name


class Activation(NamedTuple):
    name: str
    fn: Callable  # h = fn(z)
    grad: Callable  # dh/dz, elementwise, from z


LEAKY_SLOPE = 0.01  # jax.nn.leaky_relu's default negative_slope


def relu(z):
    return jax.nn.relu(z)


def relu_grad(z):
    # jax.nn.relu's custom JVP gives 0 at z == 0; follow it so the kink agrees.
    return jnp.where(z > 0, 1.0, 0.0).astype(z.dtype)


def leaky_relu(z):
    return jax.nn.leaky_relu(z, LEAKY_SLOPE)


def leaky_relu_grad(z):
    # jax.nn.leaky_relu is where(z >= 0, z, slope * z): slope 1 at z == 0.
    return jnp.where(z >= 0, 1.0, LEAKY_SLOPE).astype(z.dtype)


def tanh(z):
    return jnp.tanh(z)


def tanh_grad(z):
    t = jnp.tanh(z)
    return 1 - t * t


def sigmoid(z):
    return jax.nn.sigmoid(z)


def sigmoid_grad(z):
    s = jax.nn.sigmoid(z)
    return s * (1 - s)


def softplus(z):
    return jax.nn.softplus(z)


def softplus_grad(z):
    return jax.nn.sigmoid(z)


def gelu(z):
    # The exact (erf) GELU, as PyTorch's nn.GELU default; z * Phi(z).
    return jax.nn.gelu(z, approximate=False)


def gelu_grad(z):
    # d/dz z*Phi(z) = Phi(z) + z*phi(z)
    cdf = (1 + jax.lax.erf(z / jnp.sqrt(2.0).astype(z.dtype))) / 2
    pdf = jnp.exp(-z * z / 2) / jnp.sqrt(2 * jnp.pi).astype(z.dtype)
    return cdf + z * pdf


def identity(z):
    return z


def identity_grad(z):
    return jnp.ones_like(z)


ACTIVATIONS = {
    a.name: a
    for a in (
        Activation("relu", relu, relu_grad),
        Activation("leaky_relu", leaky_relu, leaky_relu_grad),
        Activation("tanh", tanh, tanh_grad),
        Activation("sigmoid", sigmoid, sigmoid_grad),
        Activation("softplus", softplus, softplus_grad),
        Activation("gelu", gelu, gelu_grad),
        Activation("identity", identity, identity_grad),
    )
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name.

    >>> get_activation("relu").grad(jnp.array([-1.0, 0.0, 2.0]))
    Array([0., 0., 1.], dtype=float32)
    """
    if isinstance(name, Activation):
        return name
    if name not in ACTIVATIONS:
        raise unknown_name("activation", name, ACTIVATIONS)
    return ACTIVATIONS[name]
