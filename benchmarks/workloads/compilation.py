"""C: compile time of fit and of sweep, and how many compilations a new learning
rate (must be none) or a new grid size (the shapes change) costs.

Counted two ways: XLA compilations seen by jax.monitoring (every program,
small eager ops included) and the growth of the jit caches of the module-level
programs ``jmlp.fit._train`` and ``jmlp.sweep._advance``.
"""

import time

import jax.numpy as jnp
import numpy as np

import jmlp
from jmlp.fit import _train
from jmlp.sweep import _advance
from jmlp.walkthrough import seed_params

from .common import compile_events, compile_seconds, compile_top, n_compiles, note_row, ratio_row

W = "C"
MODEL = jmlp.MLP((2, 2, 1), "relu")


def counted(fn, cache):
    """(XLA compilations, growth of ``cache``'s jit cache, compile seconds, wall seconds, slowest) of one call."""
    before = cache._cache_size()
    with compile_events() as events:
        t = time.perf_counter()
        fn()
        wall = time.perf_counter() - t
    return n_compiles(events), cache._cache_size() - before, compile_seconds(events), wall, compile_top(events)


def run(steps=2000):
    params = seed_params(jnp.float32)
    x, y = jnp.array([[2.0, 3.0]]), jnp.array([[10.0]])
    kw = dict(loss="half_squared_error", optimizer="sgd")
    rows = []

    def fit(lr, n=steps):
        return lambda: jmlp.fit(MODEL, params, x, y, learning_rate=lr, steps=n, **kw)

    def sweep(lrs, seeds=(0, 1)):
        return lambda: jmlp.sweep(MODEL, x, y, learning_rates=lrs, seeds=list(seeds), steps=steps, **kw)

    def add(what, result, zero=False):
        xla, cache, secs, wall, top = result
        data = dict(xla_compiles=xla, cache_growth=cache, compile_s=secs, wall_s=wall, compile_top=top)
        if zero:
            rows.append(ratio_row(W, f"{what}: XLA compilations", xla, at_most=0, unit="", **data))
        else:
            slowest = next(iter(top), "-")
            rows.append(
                note_row(
                    W,
                    what,
                    f"{xla} XLA compiles ({cache} main), {secs:.2f} s of {wall:.2f} s; slowest {slowest} "
                    f"{top.get(slowest, 0):.2f} s",
                    **data,
                )
            )

    add("fit, first call (seed net)", counted(fit(0.1), _train))
    add("fit, new learning rate", counted(fit(0.05), _train), zero=True)
    add("fit, new steps value", counted(fit(0.05, steps + 1), _train))
    lrs = np.geomspace(1e-3, 0.3, 8)
    add("sweep 8 LRs x 2 seeds, first call", counted(sweep(lrs), _advance))
    add("sweep, 8 new learning rates", counted(sweep(lrs * 1.1), _advance), zero=True)
    add("sweep, grid 9 LRs x 2 seeds", counted(sweep(np.geomspace(1e-3, 0.3, 9)), _advance))
    add("sweep, grid 8 LRs x 3 seeds", counted(sweep(lrs, (0, 1, 2)), _advance))
    return rows
