"""W2: a learning-rate sweep (issue #4): Friedman #1 (442 x 10, standardized),
10-32-32-1 tanh, MSE, SGD, 64 log-spaced learning rates x 1000 full-batch steps.

jmlp.sweep against 64 calls of jmlp.fit, a hand-written jit(vmap(train)) with a
lax.scan inside, and a PyTorch loop over the learning rates (run once: ~40 s).
"""

import jax
import jax.numpy as jnp
import numpy as np

import jmlp
from jmlp.data import synthetic

from .common import (
    TORCH_PIN,
    flops_per_step,
    jax_loss,
    jax_scan_train,
    measure,
    measure_many,
    note_row,
    ratio_row,
    timing_row,
    torch_mlp,
    torch_or_none,
)

W = "W2"
MODEL = jmlp.MLP((10, 32, 32, 1), "tanh")


def data():
    x, y = synthetic(442, 0.1, 0)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    return np.asarray(x, np.float32), np.asarray(y, np.float32)


def torch_sweep(torch, params, x, y, lrs, steps):
    xt, yt = torch.tensor(x), torch.tensor(y)
    for lr in lrs:
        net = torch_mlp(torch, MODEL.sizes, "tanh", params)
        opt = torch.optim.SGD(net.parameters(), lr=float(lr))
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.mean((net(xt) - yt) ** 2)
            loss.backward()
            opt.step()


def run(n_lrs=64, steps=1000, repeats=3, matmul=None):
    x_np, y_np = data()
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    lrs = np.geomspace(1e-4, 1.0, n_lrs)
    params = MODEL.init(jax.random.key(0))  # = the sweep's start for seed 0
    kw = dict(loss="mse", optimizer="sgd", steps=steps)
    work, flops = n_lrs * steps, flops_per_step(MODEL.sizes, x.shape[0]) * n_lrs * steps
    out = {}

    def sweep():
        out["sweep"] = jmlp.sweep(MODEL, x, y, learning_rates=lrs, seeds=[0], **kw).losses[:, 0, -1]

    def fits():
        for lr in lrs:
            jmlp.fit(MODEL, params, x, y, learning_rate=float(lr), **kw)

    train = jax.jit(jax.vmap(jax_scan_train(jax_loss("tanh", "mse"), steps), in_axes=(None, 0, None, None)))
    lrs32 = jnp.asarray(lrs, jnp.float32)

    def hand():
        out["hand"] = np.asarray(train(params, lrs32, x, y)[1][:, -1])

    one_fit = lambda: jmlp.fit(MODEL, params, x, y, learning_rate=0.1, **kw)  # noqa: E731
    t = measure_many({"sweep": sweep, "fits": fits, "hand": hand}, repeats, warmups={"fits": one_fit})
    rows = [
        timing_row(W, f"jmlp.sweep, {n_lrs} LRs x {steps} steps", t["sweep"], work, "run-steps/s",
                   gflops=flops / t["sweep"].median_s / 1e9),
        timing_row(W, f"{n_lrs} calls of jmlp.fit", t["fits"], work, "run-steps/s"),
        timing_row(W, "hand-written jit(vmap(train)), scan inside", t["hand"], work, "run-steps/s",
                   gflops=flops / t["hand"].median_s / 1e9),
    ]  # fmt: skip

    torch = torch_or_none()
    if torch is None:
        rows.append(note_row(W, "PyTorch loop over the LRs", f"skipped: torch not installed ({TORCH_PIN})"))
    else:
        t["torch"] = measure(lambda: torch_sweep(torch, params, x_np, y_np, lrs, steps), 1,
                             warmup=lambda: torch_sweep(torch, params, x_np, y_np, lrs[:1], 10))  # fmt: skip
        label = f"PyTorch {torch.__version__} eager loop over the {n_lrs} LRs (once)"
        rows.append(timing_row(W, label, t["torch"], work, "run-steps/s"))

    s = t["sweep"].median_s
    vs_torch = t["torch"].median_s / s if "torch" in t else None
    rows.append(ratio_row(W, "sweep speed-up over the fits", t["fits"].median_s / s, at_least=1.2))
    rows.append(ratio_row(W, "sweep speed-up over hand jit(vmap)", t["hand"].median_s / s, at_least=1.0))
    rows.append(ratio_row(W, "sweep speed-up over PyTorch", vs_torch, at_least=10))
    if matmul:
        g = flops / s / 1e9
        text = f"{g:.1f} GFLOP/s = {g / matmul:.1%} of the 2048² matmul ({matmul:.0f} GFLOP/s)"
        rows.append(note_row(W, "sweep GFLOP/s", text, gflops=g, matmul_gflops=matmul))
    # Same computation? Final-step losses of the runs that stayed finite in both.
    ok = np.isfinite(out["sweep"]) & np.isfinite(out["hand"])
    rows[0].data["max_abs_diff_final_loss_vs_hand"] = float(np.max(np.abs(out["sweep"][ok] - out["hand"][ok])))
    rows[0].data["runs_finite"] = int(ok.sum())
    return rows
