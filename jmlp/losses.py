"""Losses averaged over the batch, each with dL/dy_hat written beside it.

``fn(y_hat, y)`` is a scalar; ``grad(y_hat, y)`` is dL/dy_hat with the same
shape as ``y_hat`` (the 1/batch factor included), the seed's ``dL/dŷ``.
``targets`` says what ``y`` must be: ``"values"`` (floats shaped like y_hat)
or ``"labels"`` (integers shaped ``(batch,)``).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from .errors import BadValue, unknown_name


class Loss(NamedTuple):
    name: str
    fn: Callable  # (y_hat, y) -> scalar
    grad: Callable  # (y_hat, y) -> dL/dy_hat
    targets: str  # "values" or "labels"


def half_squared_error(y_hat, y):
    # The seed's L = 1/2 (y - y_hat)^2, summed over outputs, averaged over the batch.
    return jnp.mean(0.5 * jnp.sum((y - y_hat) ** 2, axis=-1))


def half_squared_error_grad(y_hat, y):
    return (y_hat - y) / y_hat.shape[0]


def mse(y_hat, y):
    return jnp.mean((y - y_hat) ** 2)


def mse_grad(y_hat, y):
    return 2 * (y_hat - y) / y_hat.size


def softmax_cross_entropy(y_hat, y):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(y_hat, y))


def softmax_cross_entropy_grad(y_hat, y):
    onehot = jax.nn.one_hot(y, y_hat.shape[-1], dtype=y_hat.dtype)
    return (jax.nn.softmax(y_hat, axis=-1) - onehot) / y_hat.shape[0]


def sigmoid_binary_cross_entropy(y_hat, y):
    # Mean over every element, as PyTorch's BCEWithLogitsLoss.
    return jnp.mean(optax.sigmoid_binary_cross_entropy(y_hat, y))


def sigmoid_binary_cross_entropy_grad(y_hat, y):
    return (jax.nn.sigmoid(y_hat) - y) / y_hat.size


LOSSES = {
    loss.name: loss
    for loss in (
        Loss("half_squared_error", half_squared_error, half_squared_error_grad, "values"),
        Loss("mse", mse, mse_grad, "values"),
        Loss("softmax_cross_entropy", softmax_cross_entropy, softmax_cross_entropy_grad, "labels"),
        Loss(
            "sigmoid_binary_cross_entropy",
            sigmoid_binary_cross_entropy,
            sigmoid_binary_cross_entropy_grad,
            "values",
        ),
    )
}


def get_loss(name) -> Loss:
    """Look up a loss by name.

    >>> float(get_loss("half_squared_error").fn(jnp.array([[2.45]]), jnp.array([[10.0]])))
    28.50125...
    """
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name]


def check_targets(loss: Loss, y_hat_shape: tuple, y) -> None:
    """Refuse targets whose shape or dtype would silently broadcast or mislead."""
    batch, width = y_hat_shape
    if loss.targets == "labels":
        if y.shape != (batch,) or not jnp.issubdtype(y.dtype, jnp.integer):
            raise BadValue(
                f"loss {loss.name!r} needs integer labels of shape ({batch},), "
                f"got y of shape {tuple(y.shape)} and dtype {y.dtype}"
            )
    elif y.shape != (batch, width):
        hint = "; reshape it with y[:, None]" if y.shape == (batch,) and width == 1 else ""
        raise BadValue(
            f"loss {loss.name!r} needs y of shape ({batch}, {width}) like the model's output, "
            f"got {tuple(y.shape)}{hint}"
        )
