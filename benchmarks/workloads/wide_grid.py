"""W5: a wide grid of tiny runs: the seed net with 1024 log-spaced LRs (1e-4 ... 0.5)
x 10,000 steps, all from the walkthrough's weights, in one jmlp.sweep, against a
hand-written jit(vmap(train)) of the same (which also keeps every loss)."""

import jax
import jax.numpy as jnp
import numpy as np

import jmlp
from jmlp.walkthrough import seed_params

from .common import jax_loss, jax_scan_train, measure_many, ratio_row, timing_row

W = "W5"
MODEL = jmlp.MLP((2, 2, 1), "relu")


def run(n_lrs=1024, steps=10_000, repeats=3):
    params = seed_params(jnp.float32)
    x, y = jnp.array([[2.0, 3.0]]), jnp.array([[10.0]])
    lrs = np.geomspace(1e-4, 0.5, n_lrs)
    out = {}

    def sweep():
        r = jmlp.sweep(MODEL, x, y, loss="half_squared_error", optimizer="sgd", learning_rates=lrs, seeds=[0],
                       steps=steps, params=params)  # fmt: skip
        out["sweep"] = r.losses[:, 0, -1]

    loss = jax_loss("relu", "half_squared_error")
    train = jax.jit(jax.vmap(jax_scan_train(loss, steps), in_axes=(None, 0, None, None)))
    lrs32 = jnp.asarray(lrs, jnp.float32)

    def hand():
        out["hand"] = np.asarray(train(params, lrs32, x, y)[1][:, -1])

    t = measure_many({"sweep": sweep, "hand": hand}, repeats)
    work = n_lrs * steps
    diff = float(np.nanmax(np.abs(out["sweep"] - out["hand"])))  # same runs, same final losses?
    return [
        timing_row(W, f"jmlp.sweep, {n_lrs} LRs x {steps:,} steps", t["sweep"], work, "run-steps/s"),
        timing_row(W, "hand-written jit(vmap(train)), scan inside", t["hand"], work, "run-steps/s"),
        ratio_row(W, "sweep run-steps/s / hand jit(vmap)", t["hand"].median_s / t["sweep"].median_s, at_least=2,
                  max_abs_diff_final_loss=diff),
    ]  # fmt: skip
