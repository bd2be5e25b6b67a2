"""``fit``: a whole training loop compiled into one program.

The loop (``loop.py``) is a ``lax.while_loop`` that runs until ``steps`` steps
are done or the train loss drops below ``tol`` ("repeat until good enough").
Without ``tol`` the threshold is -inf, so one compiled program serves both
cases, and the learning rate and tolerance are traced values: a new learning
rate never recompiles.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import loop
from .errors import BadType, BadValue
from .losses import check_targets, get_loss
from .model import MLP
from .optim import check_learning_rate
from .step import Step


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What ``fit`` returns.

    ``losses[i]`` is the train loss at step ``i`` before that step's update;
    ``len(losses) == steps``, the number of steps taken. ``converged`` is True
    when the loop stopped because a loss fell below ``tol``; ``diverged`` when
    it stopped because the loss became non-finite or blew up (that last step's
    update is not applied, so ``params`` is the last finite state).
    """

    params: Any
    losses: np.ndarray
    steps: int
    converged: bool
    diverged: bool


def check_positive_int(name: str, value, *, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise BadValue(f"{name} must be a positive integer, got {value!r}")
    if value > 2**31 - 1:  # step counters are int32 on every backend
        raise BadValue(f"{name} must be at most {2**31 - 1}, got {value!r}")
    return int(value)


def check_tol(tol):
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating)):
        raise BadType(f"tol must be a number, got {tol!r}")
    if not math.isfinite(tol) or tol <= 0:
        raise BadValue(f"tol must be positive and finite, got {tol!r}")
    return float(tol)


def check_data(x, y, model: MLP, loss: str):
    """Arrays for x and y, refusing non-finite values and shapes that don't fit.

    The checks run on the host with NumPy and Python: no device op is
    dispatched, so validating costs microseconds even for a tiny fit.
    """
    x, y = jnp.asarray(x), jnp.asarray(y)
    for name, a in (("x", x), ("y", y)):
        if jnp.issubdtype(a.dtype, jnp.inexact):
            host = np.asarray(a)
            if not np.isfinite(host).all():
                bad = tuple(int(i) for i in np.argwhere(~np.isfinite(host))[0])
                raise BadValue(f"{name} holds a non-finite value {host[bad]} at index {bad}")
    if x.ndim != 2 or x.shape[1] != model.sizes[0]:
        raise BadValue(f"x has shape {tuple(x.shape)} but the model's input width is {model.sizes[0]} (sizes {model.sizes})")
    if y.shape[:1] != x.shape[:1]:
        raise BadValue(f"x has {x.shape[0]} rows but y has {y.shape[0] if y.ndim else 'no'} rows")
    check_targets(get_loss(loss), (x.shape[0], model.sizes[-1]), y)  # now, not inside jit
    return x, y


def _run(step: Step, steps: int, batch_size, params, x, y, learning_rate, tol, key):
    if key is None:  # the default key is made here: made eagerly it costs a dispatch per fit
        key = jax.random.key(0)
    # A batch of one run: the very code sweep runs for each of its runs.
    one = jax.tree.map(lambda a: a[None], (params, learning_rate, key))
    state = loop.start(step, steps, one[0], one[1], x.shape[0] if batch_size else 0)
    state = loop.advance(step, batch_size, state, x, y, tol, one[2], steps)
    # Unbatch inside the program: slicing on the host would dispatch an op per leaf.
    counts = jnp.stack([state.i[0], state.converged[0].astype(jnp.int32), state.diverged[0].astype(jnp.int32)])
    return jax.tree.map(lambda a: a[0], state.params), counts, state.losses[:, 0]


_train = jax.jit(_run, static_argnums=(0, 1, 2))


def fit(
    model: MLP,
    params,
    x,
    y,
    *,
    loss,
    optimizer,
    learning_rate,
    grad="manual",
    steps,
    tol=None,
    batch_size=None,
    key=None,
    optimizer_options=None,
) -> FitResult:
    """Train ``params`` with one compiled loop and return a ``FitResult``.

    ``optimizer`` is an optax factory (``optax.adam``) or its name
    (``"adam"``); ``optimizer_options`` are its other arguments. With
    ``batch_size`` the rows are reshuffled every epoch from ``key`` (default
    ``jax.random.key(0)``); without it every step is full batch. With ``tol``
    the loop stops after the first step whose loss is below ``tol``.

    >>> import jax.numpy as jnp
    >>> model = MLP((2, 2, 1))
    >>> params = [{"W": jnp.array([[0.5, 0.2], [0.3, 0.4]]), "b": jnp.array([0.1, 0.1])},
    ...           {"W": jnp.array([[0.6, 0.7]]), "b": jnp.array([0.1])}]
    >>> result = fit(model, params, jnp.array([[2.0, 3.0]]), jnp.array([[10.0]]),
    ...              loss="half_squared_error", optimizer="sgd", learning_rate=0.1,
    ...              steps=1000, tol=1e-6)
    >>> result.converged, result.steps, result.losses[:2].round(2)
    (True, 89, array([ 28.5 , 334.13], dtype=float32))
    """
    step = Step(model, loss, optimizer, grad, tuple((optimizer_options or {}).items()))
    learning_rate = check_learning_rate(learning_rate)
    steps = check_positive_int("steps", steps)
    tol = check_tol(tol)
    x, y = check_data(x, y, model, step.loss)
    model.check(params, x)
    n = x.shape[0]
    batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
    if batch_size is not None and batch_size > n:
        raise BadValue(f"batch_size {batch_size} is larger than the {n} training rows")
    dtype = jax.tree.leaves(params)[0].dtype
    # NumPy scalars, not jnp.asarray: an eager conversion is a device op per call.
    threshold = np.asarray(-np.inf if tol is None else tol, dtype)
    params, counts, losses = _train(step, steps, batch_size, params, x, y, np.asarray(learning_rate, dtype), threshold, key)
    (taken, converged, diverged), losses = jax.device_get((counts, losses))  # one transfer
    return FitResult(params=params, losses=losses[:taken], steps=int(taken), converged=bool(converged), diverged=bool(diverged))
