"""The training loop as resumable state: ``start`` then ``advance``, both traceable.

``fit`` runs one ``advance`` to the last step; ``sweep`` vmaps the same two
functions over (learning rate, seed) and may advance in chunks (for a progress
bar or checkpoints). The body depends only on the state and the step index, so
advancing to step 100 in one go or in ten chunks gives the same bits, and a run
inside a sweep is the same computation as ``fit``.

A run stops early, and stays frozen, when its loss falls below ``tol``
(converged) or when it diverges: the loss is non-finite or grows past
``diverge_factor`` × max(first loss, 1), or the update would make a parameter
non-finite. A diverging step is recorded in ``losses`` but its update is not
applied, so the state kept is the last finite one.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .step import Step

DIVERGE_FACTOR = 1e6


class LoopState(NamedTuple):
    i: Any  # steps taken (int32)
    params: Any
    opt_state: Any
    losses: Any  # (steps,): loss before each step's update; NaN past i
    first_loss: Any
    converged: Any  # bool: a loss fell below tol
    diverged: Any  # bool


def minibatch(x, y, i, batch_size, key):
    """The batch for step ``i``: a fresh permutation of the rows each epoch.

    A pure function of ``(key, i)``, so a run can be replayed or resumed from
    any step. The last ``n % batch_size`` rows of each permutation sit that
    epoch out; the next epoch reshuffles, so every row is used.

    >>> x = jnp.arange(6.0)[:, None]
    >>> xb, _ = minibatch(x, x, 0, 2, jax.random.key(0))
    >>> xb.shape
    (2, 1)
    """
    if batch_size is None:
        return x, y
    n = x.shape[0]
    epoch, j = jnp.divmod(i, n // batch_size)
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n)
    idx = jax.lax.dynamic_slice_in_dim(perm, j * batch_size, batch_size)
    return x[idx], y[idx]


def start(step: Step, steps: int, params, learning_rate) -> LoopState:
    """The state before step 0, with the optimizer holding ``learning_rate``."""
    dtype = jax.tree.leaves(params)[0].dtype
    return LoopState(
        i=jnp.int32(0),
        params=params,
        opt_state=step.init_state(params, learning_rate),
        losses=jnp.full((steps,), jnp.nan, dtype),
        first_loss=jnp.array(jnp.nan, dtype),
        converged=jnp.array(False),
        diverged=jnp.array(False),
    )


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


def advance(step: Step, batch_size, state: LoopState, x, y, tol, key, until, diverge_factor=DIVERGE_FACTOR) -> LoopState:
    """Run steps until ``until`` steps are taken, or the run converges or diverges.

    ``tol`` of -inf never stops early. Everything but ``step`` and
    ``batch_size`` may be traced.
    """
    until = jnp.minimum(until, state.losses.shape[0])

    def cond(s: LoopState):
        return (s.i < until) & ~s.converged & ~s.diverged

    def body(s: LoopState):
        xb, yb = minibatch(x, y, s.i, batch_size, key)
        params, opt_state, loss = step.update_state(s.params, s.opt_state, xb, yb)
        first = jnp.where(s.i == 0, loss, s.first_loss)
        bad = ~jnp.isfinite(loss) | (loss > diverge_factor * jnp.maximum(first, 1)) | ~_all_finite(params)
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(bad, o, n), new, old)  # noqa: E731
        return LoopState(
            i=s.i + 1,
            params=keep(params, s.params),
            opt_state=keep(opt_state, s.opt_state),
            losses=s.losses.at[s.i].set(loss),
            first_loss=first,
            converged=~bad & (loss < tol),
            diverged=bad,
        )

    return jax.lax.while_loop(cond, body, state)
