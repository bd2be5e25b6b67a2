"""W1: the walkthrough's 2-2-1 ReLU net on its one sample, SGD η = 0.1, N steps.

jmlp.fit (manual and autodiff gradients) against a hand-written lax.scan, a
Python loop over a jitted step, a NumPy loop of the hand-derived step and a
PyTorch eager loop, all from the walkthrough's starting weights.
"""

import jax
import jax.numpy as jnp
import numpy as np

import jmlp
from jmlp.walkthrough import seed_params

from .common import (
    TORCH_PIN,
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

W = "W1"
MODEL = jmlp.MLP((2, 2, 1), "relu")
LR = 0.1


def numpy_loop(params, x, y, steps):
    """The seed's hand derivation, step by step in NumPy (float32)."""
    W1, b1, W2, b2 = (np.array(params[i][k], np.float32) for i in (0, 1) for k in ("W", "b"))
    n = x.shape[0]
    for _ in range(steps):
        z1 = x @ W1.T + b1
        h = np.maximum(z1, 0)
        y_hat = h @ W2.T + b2
        loss = np.mean(0.5 * np.sum((y - y_hat) ** 2, axis=-1))
        dz2 = (y_hat - y) / n
        dz1 = (dz2 @ W2) * (z1 > 0)
        W2 -= LR * (dz2.T @ h)
        b2 -= LR * dz2.sum(0)
        W1 -= LR * (dz1.T @ x)
        b1 -= LR * dz1.sum(0)
    return float(loss)


def torch_loop(torch, params, x, y, steps):
    net = torch_mlp(torch, MODEL.sizes, "relu", params)
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.mean(0.5 * torch.sum((yt - net(xt)) ** 2, dim=-1))
        loss.backward()
        opt.step()
    return loss.item()


def run(steps=100_000, slow_steps=None, repeats=5):
    """``slow_steps`` (default ``steps``) is what the Python-level loops run; they run once."""
    slow_steps = slow_steps or steps
    params = seed_params(jnp.float32)
    x_np, y_np = np.array([[2.0, 3.0]], np.float32), np.array([[10.0]], np.float32)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    final = {}  # the last loss of every loop: they should all agree

    def fit(grad):
        def go():
            r = jmlp.fit(MODEL, params, x, y, loss="half_squared_error", optimizer="sgd", learning_rate=LR,
                         grad=grad, steps=steps)  # fmt: skip
            final[f"fit[{grad}]"] = float(r.losses[-1])

        return go

    loss = jax_loss("relu", "half_squared_error")
    scan = jax.jit(jax_scan_train(loss, steps))

    def hand_scan():
        final["scan"] = float(scan(params, jnp.float32(LR), x, y)[1][-1])

    fast = {"fit[manual]": fit("manual"), "fit[autodiff]": fit("autodiff"), "scan": hand_scan}
    t = measure_many(fast, repeats)

    @jax.jit
    def step(p, lr, x, y):
        L, g = jax.value_and_grad(loss)(p, x, y)
        return jax.tree.map(lambda a, b: a - lr * b, p, g), L

    def python_loop(n=slow_steps):
        p, lr = params, jnp.float32(LR)
        for _ in range(n):
            p, L = step(p, lr, x, y)
        final["python loop"] = float(L)

    def numpy(n=slow_steps):
        final["numpy"] = numpy_loop(params, x_np, y_np, n)

    torch = torch_or_none()

    def eager(n=slow_steps):
        final["torch"] = torch_loop(torch, params, x_np, y_np, n)

    slow = {"python loop": python_loop, "numpy": numpy} | ({"torch": eager} if torch else {})
    for name, fn in slow.items():  # once each, after a 100-step warm-up
        t[name] = measure(fn, 1, warmup=lambda fn=fn: fn(100))

    labels = {
        "fit[manual]": f"jmlp.fit grad=manual, {steps:,} steps",
        "fit[autodiff]": f"jmlp.fit grad=autodiff, {steps:,} steps",
        "scan": "hand-written lax.scan (jax.grad, pytree SGD)",
        "python loop": f"Python loop over a jitted step, {slow_steps:,} steps",
        "numpy": f"NumPy loop, hand-derived step, {slow_steps:,} steps",
        "torch": f"PyTorch {getattr(torch, '__version__', '')} eager loop, {slow_steps:,} steps",
    }
    rows = [timing_row(W, labels[k], v, steps if k in fast else slow_steps) for k, v in t.items()]
    if torch is None:
        rows.append(note_row(W, "PyTorch eager loop", f"skipped: torch not installed ({TORCH_PIN})"))
    rate = {k: (steps if k in fast else slow_steps) / v.median_s for k, v in t.items()}
    for grad in ("manual", "autodiff"):
        fit_rate = rate[f"fit[{grad}]"]
        rows.append(ratio_row(W, f"fit[{grad}] / hand lax.scan", fit_rate / rate["scan"], at_least=0.8))
        vs_torch = fit_rate / rate["torch"] if "torch" in rate else None
        rows.append(ratio_row(W, f"fit[{grad}] / PyTorch eager", vs_torch, at_least=1000))
    rows.append(ratio_row(W, "fit[manual] / Python loop over jitted step", rate["fit[manual]"] / rate["python loop"]))
    rows.append(ratio_row(W, "fit[manual] / NumPy loop", rate["fit[manual]"] / rate["numpy"]))
    rows[0].data["final_losses"] = final
    return rows
