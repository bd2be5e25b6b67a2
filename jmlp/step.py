"""The update step: ``(params, opt_state, x, y) -> (params, opt_state, loss)``, jitted.

``Step`` is a frozen spec (model, loss, optimizer factory, gradient) with two
pure functions, optax style: ``init`` builds the optimizer state holding the
learning rate as an array, ``update`` takes one step. Both are jitted with the
spec as a static argument, so equal specs share one compilation and a new
learning rate (a traced value in the state) never recompiles.
"""

import dataclasses
from collections.abc import Callable
from typing import Any

import jax

from .gradients import grad_fn
from .losses import get_loss
from .model import MLP
from .optim import make_optimizer, resolve_optimizer


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Step:
    """One training step for ``model`` under ``loss`` with an optax optimizer.

    ``grad`` is ``"manual"`` (the hand-derived reverse pass) or ``"autodiff"``
    (``jax.grad``); ``options`` are extra factory arguments such as
    ``(("momentum", 0.9),)``.

    >>> import jax.numpy as jnp
    >>> model = MLP((2, 2, 1))
    >>> params = [{"W": jnp.array([[0.5, 0.2], [0.3, 0.4]]), "b": jnp.array([0.1, 0.1])},
    ...           {"W": jnp.array([[0.6, 0.7]]), "b": jnp.array([0.1])}]
    >>> step = Step(model, "half_squared_error", "sgd")
    >>> opt_state = step.init(params, learning_rate=0.1)
    >>> params, opt_state, loss = step(params, opt_state, jnp.array([[2.0, 3.0]]), jnp.array([[10.0]]))
    >>> float(loss), params[1]["b"]  # the seed's L and updated b2
    (28.50125..., Array([0.855], dtype=float32))
    """

    model: MLP
    loss: str
    optimizer: Any = "sgd"
    grad: str = "manual"
    options: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "loss", get_loss(self.loss).name)
        object.__setattr__(self, "optimizer", resolve_optimizer(self.optimizer))
        grad_fn(self.model, self.loss, self.grad)  # validate the name now, not at trace time
        object.__setattr__(self, "options", tuple(sorted(dict(self.options).items())))

    def transformation(self, learning_rate):
        """The optax transformation; ``learning_rate`` may be traced."""
        return make_optimizer(self.optimizer, learning_rate, **dict(self.options))

    def init_state(self, params, learning_rate):
        """Unjitted ``init``, for use inside a larger compiled program."""
        return self.transformation(learning_rate).init(params)

    def update_state(self, params, opt_state, x, y):
        """Unjitted ``update``, for use inside a larger compiled program."""
        # One forward pass serves both the loss and the gradient.
        loss, grads = grad_fn(self.model, self.loss, self.grad).value_and_grad(params, x, y)
        # The transformation is rebuilt with a placeholder learning rate: the
        # injected state carries the real one and update_fn reads it from there.
        tx = self.transformation(1.0)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
        return params, opt_state, loss

    def init(self, params, learning_rate):
        """The optimizer state for ``params``, with ``learning_rate`` stored as an array."""
        return _init(self, params, learning_rate)

    def __call__(self, params, opt_state, x, y):
        """One jitted update: returns ``(params, opt_state, loss before the update)``."""
        return _update(self, params, opt_state, x, y)


_init: Callable = jax.jit(Step.init_state)
_update: Callable = jax.jit(Step.update_state)
