"""The training loop over a batch of runs: ``start`` then ``advance``, both traceable.

Every leaf of the state has a leading run axis. ``fit`` is the batch of one
run; ``sweep`` batches every (learning rate, seed) pair. All runs step in
lockstep on one shared counter ``t``, so the step index, the minibatch
position and the loss-history column are scalars (a dynamic slice, not a
scatter), and a run that has stopped is simply not updated any more.

A run stops, and stays frozen, when its loss falls below ``tol`` (converged)
or when it diverges: the loss is non-finite or grows past ``diverge_factor``
× max(first loss, 1), or the update would make a parameter non-finite. A
diverging step is recorded in ``losses`` but its update is not applied, so the
state kept is the last finite one.

The body depends only on the state and ``t``, so advancing to step 100 in one
call or in ten chunks gives the same bits. With minibatches the state carries
each run's permutation of the current epoch, drawn once at the epoch's first
step from ``fold_in(key, epoch)``.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .step import Step

DIVERGE_FACTOR = 1e6
BLOCK = 64  # steps between stop checks for a batch of runs (see advance)
BLOCK_ONE_RUN = 1024  # and for a single tiny run, whose steps are so cheap that a block's fixed cost needs more of them
TINY_STEP = 4096  # rows x parameters of one run's step up to which a single run steps in blocks


class LoopState(NamedTuple):
    t: Any  # steps the loop has run, shared by all runs (int32 scalar)
    i: Any  # (runs,) steps each run has taken
    params: Any  # leaves (runs, ...)
    opt_state: Any  # leaves (runs, ...)
    losses: Any  # (steps, runs): loss before each step's update; NaN where not taken.
    # Time-major, so each step writes one contiguous row (a column of a
    # (runs, steps) buffer would touch a cache line per run).
    first_loss: Any  # (runs,)
    converged: Any  # (runs,) a loss fell below tol
    diverged: Any  # (runs,)
    order: Any  # (runs, rows): this epoch's row permutation per run; (runs, 0) when full batch


def epoch_order(key, epoch, rows):
    """The row permutation of one epoch: a pure function of ``(key, epoch)``, so a
    run can be replayed or resumed from any step.

    >>> epoch_order(jax.random.key(0), 0, 4).shape
    (4,)
    """
    return jax.random.permutation(jax.random.fold_in(key, epoch), rows)


def minibatch(x, y, order, t, batch_size):
    """The rows of step ``t`` within its epoch's ``order``. The last
    ``rows % batch_size`` rows of each permutation sit that epoch out; the next
    epoch reshuffles, so every row is used.

    >>> x = jnp.arange(6.0)[:, None]
    >>> xb, _ = minibatch(x, x, epoch_order(jax.random.key(0), 0, 6), 0, 2)
    >>> xb.shape
    (2, 1)
    """
    if batch_size is None:
        return x, y
    j = t % (x.shape[0] // batch_size)
    idx = jax.lax.dynamic_slice_in_dim(order, j * batch_size, batch_size)
    return x[idx], y[idx]


def start(step: Step, steps: int, params, learning_rates, rows: int = 0) -> LoopState:
    """The state before step 0 for a batch of runs (``params`` leaves and
    ``learning_rates`` have a leading run axis); ``rows`` is the number of
    training rows when training on minibatches, else 0."""
    runs = learning_rates.shape[0]
    dtype = jax.tree.leaves(params)[0].dtype
    return LoopState(
        t=jnp.int32(0),
        i=jnp.zeros((runs,), jnp.int32),
        params=params,
        opt_state=jax.vmap(step.init_state)(params, learning_rates),
        losses=jnp.full((steps, runs), jnp.nan, dtype),
        first_loss=jnp.full((runs,), jnp.nan, dtype),
        converged=jnp.zeros((runs,), bool),
        diverged=jnp.zeros((runs,), bool),
        order=jnp.zeros((runs, rows), jnp.int32),
    )


def _per_run(mask, new, old):
    """``new`` where ``mask`` (one bool per run) holds, else ``old``, leaf by leaf."""

    def pick(n, o):
        return jnp.where(mask.reshape(mask.shape + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def _finite_per_run(tree):
    # A NaN or inf anywhere makes a run's float sum non-finite (so would a sum
    # overflowing past 3e38 in float32: parameters that large have diverged too).
    # Summing is ~1.8x faster than all(isfinite) over the tiny per-run axes of a
    # small net, where this check is a large share of the step (benchmarks/NOTES.md).
    total = sum(jnp.sum(a.reshape(a.shape[0], -1), axis=1) for a in jax.tree.leaves(tree))
    return jnp.isfinite(total)


def block_length(runs: int, rows: int, n_params: int, steps: int) -> int:
    """Steps between stop checks for ``runs`` runs of ``n_params`` parameters on ``rows``
    rows per step (1: every step checked).

    A single run uses blocks only when its step is tiny: there the checks are a third
    of the time, while a larger run would waste up to a block of costly steps when it
    stops (a 784-512-512-10 fit reaching tol at step 5 took 7.7 s with blocks of 1024,
    0.04 s checked every step).

    >>> block_length(1, 1, 9, 100_000), block_length(1, 256, 669_706, 1000), block_length(64, 442, 1_441, 1000)
    (1024, 1, 64)
    """
    length = BLOCK if runs > 1 else BLOCK_ONE_RUN if rows * n_params <= TINY_STEP else 1
    return max(1, min(length, steps))


def advance(step: Step, batch_size, state: LoopState, x, y, tol, keys, until, diverge_factor=DIVERGE_FACTOR) -> LoopState:
    """Step every active run until ``t == until`` or no run is active.

    ``keys`` (one per run) drive the minibatch shuffle; ``tol`` of -inf never
    stops early. Everything but ``step`` and ``batch_size`` may be traced.

    A batch of runs steps in blocks of ``BLOCK`` steps, with the stop checks
    taken once per block from the block's losses and final parameters: on
    small nets the per-step checks and per-run selects cost more than the
    step (benchmarks/NOTES.md, W1 and W5). A single run does the same in
    blocks of ``BLOCK_ONE_RUN`` when its step is at most ``TINY_STEP`` rows
    x parameters, and checks every step otherwise. A block in which some run
    would have stopped is replayed one checked step at a time, so every run
    still stops at exactly its own step; both paths run the same loop body,
    so they give the same bits.
    """
    until = jnp.minimum(until, state.losses.shape[0])
    runs = state.losses.shape[1]

    def active(s: LoopState):
        return ~s.converged & ~s.diverged

    def any_active(s: LoopState):
        return jnp.any(active(s))

    def train(s: LoopState):
        """One unchecked step of every run at step ``s.t``: params, opt_state, order and loss."""
        order = s.order
        if batch_size is not None:
            # t is shared by every run, so this is a real branch: one shuffle per epoch, not per step.
            epoch, j = jnp.divmod(s.t, x.shape[0] // batch_size)
            reshuffle = jax.vmap(lambda key: epoch_order(key, epoch, x.shape[0]).astype(jnp.int32))
            order = jax.lax.cond(j == 0, reshuffle, lambda keys: s.order, keys)

        def one(params, opt_state, order):
            xb, yb = minibatch(x, y, order, s.t, batch_size)
            return step.update_state(params, opt_state, xb, yb)

        params, opt_state, loss = jax.vmap(one)(s.params, s.opt_state, order)
        return params, opt_state, order, loss

    def checked(s: LoopState, params, opt_state, order, loss):
        """The state after step ``s.t`` from its unchecked results: every stop applied."""
        running = active(s)
        first = jnp.where(s.t == 0, loss, s.first_loss)
        blown = ~jnp.isfinite(loss) | (loss > diverge_factor * jnp.maximum(first, 1)) | ~_finite_per_run(params)
        bad = running & blown
        apply = running & ~blown
        return s._replace(
            t=s.t + 1,
            i=s.i + running,
            params=_per_run(apply, params, s.params),
            opt_state=_per_run(apply, opt_state, s.opt_state),
            first_loss=first,
            converged=s.converged | (apply & (loss < tol)),
            diverged=s.diverged | bad,
            order=order,
        )

    def column(s: LoopState, loss):
        return jnp.where(active(s), loss, jnp.nan).astype(state.losses.dtype)

    def one_checked_step(s: LoopState):
        params, opt_state, order, loss = train(s)
        new = checked(s, params, opt_state, order, loss)
        return new._replace(losses=jax.lax.dynamic_update_slice_in_dim(s.losses, column(s, loss)[None, :], s.t, axis=0))

    n_params = sum(a.size for a in jax.tree.leaves(state.params)) // runs
    length = block_length(runs, batch_size or x.shape[0], n_params, state.losses.shape[0])  # static
    if length <= 1:
        return jax.lax.while_loop(lambda s: (s.t < until) & any_active(s), one_checked_step, state)

    no_rows = jnp.full((length, runs), jnp.nan, state.losses.dtype)

    def unchecked_steps(s: LoopState, n):
        """``n`` (traced, <= length) steps of every run with no checks: the end state and
        the steps' loss rows (NaN for runs stopped before, and past ``n``)."""

        def one(carry):
            c, rows = carry
            params, opt_state, order, loss = train(c)
            rows = jax.lax.dynamic_update_slice_in_dim(rows, column(s, loss)[None, :], c.t - s.t, axis=0)
            return c._replace(t=c.t + 1, params=params, opt_state=opt_state, order=order), rows

        return jax.lax.while_loop(lambda carry: carry[0].t < s.t + n, one, (s, no_rows))

    def block(s: LoopState):
        # Only small values pass through the inner loops: the (steps, runs) loss
        # buffer is written once per block, after them.
        small, running = s._replace(losses=None), active(s)
        n = jnp.where(s.t == 0, 1, jnp.minimum(length, until - s.t))  # step 0 alone: it is always replayed
        end, rows = unchecked_steps(small, n)
        inside = (jnp.arange(length) < n)[:, None]
        event = inside & (~jnp.isfinite(rows) | (rows > diverge_factor * jnp.maximum(s.first_loss, 1)) | (rows < tol))
        stops = running & (jnp.any(event, axis=0) | ~_finite_per_run(end.params))
        calm = (s.t > 0) & ~jnp.any(stops)  # step 0 sets first_loss: always checked

        # No lax.cond between keeping and replaying: a cond copies its operands (the
        # block's rows and both states) on every block, which cost W5 5-8 %. The selects
        # keep a calm block, and the replay loop then runs zero times; otherwise they
        # restore the block's start and the loop replays it.
        take = running & calm
        small = end._replace(
            t=jnp.where(calm, end.t, s.t),
            i=jnp.where(calm, s.i + n * running, s.i),
            params=_per_run(take, end.params, s.params),
            opt_state=_per_run(take, end.opt_state, s.opt_state),
            order=s.order,  # a replay starts from the block's start; a calm block's order is taken below
        )
        rows = jnp.where(calm, rows, jnp.nan)

        def replay(carry):
            c, rows = carry
            after, row = unchecked_steps(c, 1)  # the same loop body as the block's
            new = checked(c, after.params, after.opt_state, after.order, row[0])
            return new, jax.lax.dynamic_update_slice_in_dim(rows, row[:1], c.t - s.t, axis=0)

        go = lambda carry: ~calm & (carry[0].t < s.t + n) & any_active(carry[0])  # noqa: E731
        small, rows = jax.lax.while_loop(go, replay, (small, rows))
        small = small._replace(order=jnp.where(calm, end.order, small.order))
        # Rows past the end of the buffer (a last, short block) are dropped, not clamped onto earlier ones.
        where = s.t + jnp.arange(length)
        return small._replace(losses=s.losses.at[where].set(rows, mode="drop"))

    return jax.lax.while_loop(lambda s: (s.t < until) & any_active(s), block, state)
