"""Optimizers come from optax; jmlp only injects the learning rate as data.

A Python-float learning rate passed to ``optax.sgd(0.1)`` is baked into the
compiled program as a constant, so every new value recompiles (optax #577).
``make_optimizer`` wraps the factory with ``optax.inject_hyperparams``: the
learning rate then lives in the optimizer state as an array and is traced.

Only the learning rate is injected. Injecting every numeric argument (the
wrapper's default) turns Adam's b1, b2 and eps into arrays too, and the
trajectory then drifts from plain ``optax.adam`` by float rounding (optax
#1532); keeping them static makes it bitwise identical (tests/test_fit.py).
"""

import inspect
import math
from collections.abc import Callable

import jax.numpy as jnp
import optax

from .errors import BadType, BadValue, unknown_name

OPTIMIZERS = {
    "sgd": optax.sgd,
    "adam": optax.adam,
    "adamw": optax.adamw,
    "adamax": optax.adamax,
    "nadam": optax.nadam,
    "radam": optax.radam,
    "adabelief": optax.adabelief,
    "adagrad": optax.adagrad,
    "rmsprop": optax.rmsprop,
    "lamb": optax.lamb,
    "lion": optax.lion,
    "yogi": optax.yogi,
    "novograd": optax.novograd,
}


def resolve_optimizer(optimizer) -> Callable[..., optax.GradientTransformation]:
    """An optax factory from a name (``"adam"``) or the factory itself (``optax.adam``).

    >>> resolve_optimizer("sgd") is optax.sgd
    True
    """
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise unknown_name("optimizer", optimizer, OPTIMIZERS)
        return OPTIMIZERS[optimizer]
    if isinstance(optimizer, optax.GradientTransformation):
        raise BadType(
            "optimizer must be an optax factory such as optax.sgd, not an already built "
            "transformation: jmlp injects the learning rate so that changing it never recompiles"
        )
    if not callable(optimizer):
        raise BadType(f"optimizer must be a name or an optax factory, got {optimizer!r}")
    return optimizer


def check_learning_rate(learning_rate) -> float:
    """Return the learning rate as a float, refusing non-positive or non-finite values."""
    if isinstance(learning_rate, bool):
        raise BadType(f"learning_rate must be a number, got {learning_rate!r}")
    try:
        lr = float(learning_rate)
    except (TypeError, ValueError):
        raise BadType(f"learning_rate must be a number, got {learning_rate!r}") from None
    if not math.isfinite(lr) or lr <= 0:
        raise BadValue(f"learning_rate must be positive and finite, got {learning_rate!r}")
    return lr


def make_optimizer(optimizer, learning_rate, **options) -> optax.GradientTransformation:
    """The optax transformation with ``learning_rate`` injected as state, not a constant.

    ``learning_rate`` may be a traced array; ``options`` go to the factory
    (e.g. ``momentum=0.9`` for sgd).

    >>> import jax.numpy as jnp
    >>> tx = make_optimizer("sgd", 0.1)
    >>> state = tx.init({"w": jnp.zeros(2)})
    >>> float(state.hyperparams["learning_rate"])
    0.1...
    """
    factory = resolve_optimizer(optimizer)
    parameters = inspect.signature(factory).parameters
    if "learning_rate" not in parameters:
        raise BadValue(f"optimizer {getattr(factory, '__name__', factory)!r} takes no learning_rate argument")
    static = [n for n, p in parameters.items() if n != "learning_rate" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    try:
        return optax.inject_hyperparams(factory, static_args=static)(learning_rate=learning_rate, **options)
    except TypeError as e:
        raise BadValue(f"optimizer options {sorted(options)} don't fit {getattr(factory, '__name__', factory)}: {e}") from None


def set_learning_rate(opt_state, learning_rate):
    """A copy of an injected optimizer state with a new learning rate (no recompilation).

    >>> import jax.numpy as jnp
    >>> state = make_optimizer("adam", 1e-3).init({"w": jnp.zeros(2)})
    >>> float(set_learning_rate(state, 0.5).hyperparams["learning_rate"])
    0.5
    """
    lr = opt_state.hyperparams["learning_rate"]
    hyperparams = {**opt_state.hyperparams, "learning_rate": jnp.asarray(learning_rate, lr.dtype)}
    return opt_state._replace(hyperparams=hyperparams)
