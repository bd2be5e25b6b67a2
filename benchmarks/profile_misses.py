"""Where the time goes in the workloads that miss their targets: the measurements
behind benchmarks/NOTES.md. Uses jmlp internals (fit._train, sweep._advance,
loop's helpers), so it may need updating when those change.

    python benchmarks/profile_misses.py [--only W1,W2,W4,W5,W5f,cores,C]    # about 2 minutes
"""

import argparse
import collections
import importlib
import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from workloads import lr_sweep
from workloads.common import compile_events, compile_top, jax_loss, jax_scan_train, measure, measure_many

import jmlp
import jmlp.data
from jmlp import loop
from jmlp.fit import _train
from jmlp.step import Step
from jmlp.walkthrough import seed_params

sweep_module = importlib.import_module("jmlp.sweep")  # jmlp.sweep is the function
SEED = jmlp.MLP((2, 2, 1), "relu")
HSE = "half_squared_error"
X1, Y1 = jnp.array([[2.0, 3.0]]), jnp.array([[10.0]])


def ms(f, repeats=5):
    return measure(f, repeats).median_s * 1e3


def w1_fit_overhead():
    """fit() = Python-side checks + the compiled loop (_train) + copying results out."""
    p = seed_params(jnp.float32)
    step, lr, tol, key = Step(SEED, HSE, "sgd", "manual"), jnp.float32(0.1), jnp.float32(-jnp.inf), jax.random.key(0)
    scan = jax.jit(jax_scan_train(jax_loss("relu", HSE), 100_000))
    for n in (1, 100_000):
        fit = ms(lambda n=n: jmlp.fit(SEED, p, X1, Y1, loss=HSE, optimizer="sgd", learning_rate=0.1, steps=n))
        raw = ms(lambda n=n: jax.block_until_ready(_train(step, n, None, p, X1, Y1, lr, tol, key)))
        print(f"  {n:>7} steps: jmlp.fit {fit:.3f} ms, its compiled loop _train alone {raw:.3f} ms")
    print(f"   100000 steps: hand lax.scan {ms(lambda: jax.block_until_ready(scan(p, lr, X1, Y1))):.3f} ms")
    print("  _train      ", hlo_summary(_train.lower(step, 100_000, None, p, X1, Y1, lr, tol, key).compile()))
    print("  hand scan   ", hlo_summary(scan.lower(p, lr, X1, Y1).compile()))
    ablation(1, 100_000)


def w2_run_scaling():
    """Run-steps/s of jmlp.sweep against the number of runs batched together."""
    x, y = lr_sweep.data()
    for runs in (1, 4, 16, 64):
        lrs = np.geomspace(1e-4, 1e-2, runs)
        t = measure(
            lambda lrs=lrs: jmlp.sweep(
                lr_sweep.MODEL, x, y, loss="mse", optimizer="sgd", learning_rates=lrs, seeds=[0], steps=300
            ),
            3,
        ).median_s
        print(f"  {runs:>3} runs x 300 steps: {runs * 300 / t:8.0f} run-steps/s")


def w4_minibatch_cost():
    """One digits run of 1500 Adam steps: minibatches of 64 (reshuffled every epoch) against
    a full batch of 64 rows (no shuffling, no gather), and the whole W4 grid against one run."""
    d = jmlp.data.load("digits", val_fraction=0.2, standardize=True)
    x, y = jnp.asarray(d.x_train, jnp.float32), d.y_train
    model = jmlp.MLP((64, 128, 10), "relu")
    p = model.init(jax.random.key(0))
    kw = dict(loss="softmax_cross_entropy", optimizer="adam", steps=1500)
    mb = ms(lambda: jmlp.fit(model, p, x, y, batch_size=64, learning_rate=1e-3, **kw), 3)
    full = ms(lambda: jmlp.fit(model, p, x[:64], y[:64], learning_rate=1e-3, **kw), 3)
    grid = ms(
        lambda: jmlp.sweep(
            model, x, y, learning_rates=np.geomspace(1e-4, 3e-2, 8), seeds=[0, 1, 2, 3], batch_size=64, **kw
        ),
        1,
    )
    print(
        f"  one run: batch_size=64 {mb:.0f} ms, full batch of 64 rows {full:.0f} ms; "
        f"the 32-run sweep {grid:.0f} ms = {grid / 32:.0f} ms per run"
    )


def hlo_summary(compiled):
    text = compiled.as_text()
    bodies = re.findall(r"\n(%\S*region\S* \(.*?\n}\n)", text, re.S)
    body = max(bodies, key=len)  # the while body is the largest region
    cost = compiled.cost_analysis()
    dots = re.findall(r"= (\S+) dot\(", text)
    ops = collections.Counter(re.findall(r"= \S+ ([a-z][\w-]*)\(", body))
    return (
        f"while body: {ops['fusion']} fusions, {ops['dot']} dot; dots {dots}; "
        f"cost_analysis per iteration: {cost.get('flops', 0):.0f} flops, {cost.get('bytes accessed', 0):.0f} bytes"
    )


def ablation(runs, steps):
    """loop.advance's features added one at a time to a plain vmapped SGD loop of the seed net."""
    p = seed_params(jnp.float32)
    lrs32 = jnp.asarray(np.geomspace(1e-4, 0.5, runs), jnp.float32)
    step = Step(SEED, HSE, "sgd", "manual")
    P = jax.tree.map(lambda a: jnp.broadcast_to(a, (runs,) + a.shape), p)
    loss = jax_loss("relu", HSE)

    def variant(optax_step=False, checks=False, while_loop=False, run_major=False):
        def train(P, lrs):
            opt = jax.vmap(step.init_state)(P, lrs)
            shape = (runs, steps) if run_major else (steps, runs)
            c = (P, opt, jnp.full(shape, jnp.nan), jnp.zeros(runs, bool), jnp.full(runs, jnp.nan))

            def body(t, c):
                P, opt, losses, stopped, first = c
                if optax_step:
                    newP, newopt, L = jax.vmap(step.update_state, in_axes=(0, 0, None, None))(P, opt, X1, Y1)
                else:
                    L, g = jax.vmap(jax.value_and_grad(loss), in_axes=(0, None, None))(P, X1, Y1)
                    newP = jax.tree.map(lambda a, b: a - lrs.reshape((-1,) + (1,) * (a.ndim - 1)) * b, P, g)
                    newopt = opt
                if checks:  # what loop.advance does per step
                    first = jnp.where(t == 0, L, first)
                    blown = ~jnp.isfinite(L) | (L > 1e6 * jnp.maximum(first, 1)) | ~loop._finite_per_run(newP)
                    apply = ~stopped & ~blown
                    newP, newopt = loop._per_run(apply, newP, P), loop._per_run(apply, newopt, opt)
                    L = jnp.where(~stopped, L, jnp.nan)
                    stopped = stopped | (~stopped & blown)
                if run_major:
                    losses = jax.lax.dynamic_update_slice_in_dim(losses, L[:, None], t, axis=1)
                else:
                    losses = jax.lax.dynamic_update_slice_in_dim(losses, L[None, :], t, axis=0)
                return newP, newopt, losses, stopped, first

            if while_loop:
                c = jax.lax.while_loop(
                    lambda s: (s[0] < steps) & jnp.any(~s[1][3]),
                    lambda s: (s[0] + 1, body(s[0], s[1])),
                    (jnp.int32(0), c),
                )[1]
            else:
                c = jax.lax.fori_loop(0, steps, body, c)
            return c[0], c[2]

        f = jax.jit(train)
        flops = f.lower(P, lrs32).compile().cost_analysis().get("flops", 0)
        return measure(lambda: jax.block_until_ready(f(P, lrs32)), 7).median_s, flops

    base = None
    for name, kw in [
        ("plain vmapped SGD, fixed-length loop", {}),
        ("plain + loss history run-major", dict(run_major=True)),
        ("plain + optax update (inject_hyperparams)", dict(optax_step=True)),
        ("plain + while_loop with any-run-active exit", dict(while_loop=True)),
        ("plain + per-step divergence checks, per-run selects", dict(checks=True)),
        ("all four (as loop.advance)", dict(run_major=True, optax_step=True, while_loop=True, checks=True)),
    ]:
        t, flops = variant(**kw)
        base = base or t
        print(
            f"  {name:<52} {t * 1e3:6.0f} ms ({t / base:4.2f}x), {runs * steps / t / 1e6:5.1f} M run-steps/s, "
            f"{flops:.0f} flops/iteration"
        )


def w5_hlo_and_ablation(runs=1024, steps=10_000):
    """The compiled while body of sweep's _advance against the hand-written vmap(scan), then
    the loop's features added one at a time to the plain vmapped SGD loop."""
    p = seed_params(jnp.float32)
    lrs = np.geomspace(1e-4, 0.5, runs)
    captured = {}
    advance = sweep_module._advance

    def spy(*args):  # grab the real arguments' shapes and shardings
        captured["args"] = args[:3] + tuple(
            jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), args[3:])
        )
        return advance(*args)

    sweep_module._advance = spy
    try:
        jmlp.sweep(SEED, X1, Y1, loss=HSE, optimizer="sgd", learning_rates=lrs, seeds=[0], steps=steps, params=p)
    finally:
        sweep_module._advance = advance
    print("  jmlp.sweep  ", hlo_summary(advance.lower(*captured["args"]).compile()))
    lrs32 = jnp.asarray(lrs, jnp.float32)
    hand = jax.jit(jax.vmap(jax_scan_train(jax_loss("relu", HSE), steps), in_axes=(None, 0, None, None)))
    print("  hand vmap   ", hlo_summary(hand.lower(p, lrs32, X1, Y1).compile()))

    ablation(runs, steps)


def w5_formulations(runs=1024, steps=10_000):
    """The step's layout and formulation on the wide grid, each in a plain lax.scan that keeps
    every loss (no stop checks), timed round-robin against the hand-written vmap: runs-major
    (vmap over axis 0, what sweep does), runs on the minor axis (vmap over the last axis), and
    the runs-minor step written as elementwise products of scalars (no dots at all). The floor
    is a scan that does nothing but write each step's row of 1024 losses."""
    p = seed_params(jnp.float32)
    lrs = jnp.asarray(np.geomspace(1e-4, 0.5, runs), jnp.float32)
    step = Step(SEED, HSE, "sgd", "manual")
    major = jax.tree.map(lambda a: jnp.broadcast_to(a, (runs,) + a.shape), p)
    minor = jax.tree.map(lambda a: jnp.broadcast_to(a[..., None], a.shape + (runs,)), p)

    def vmapped(axis):
        def train(P, lrs):
            opt = jax.vmap(step.init_state, in_axes=(axis, 0), out_axes=axis)(P, lrs)
            update = jax.vmap(step.update_state, in_axes=(axis, axis, None, None), out_axes=(axis, axis, 0))

            def body(c, _):
                P, opt, L = update(*c, X1, Y1)
                return (P, opt), L

            return jax.lax.scan(body, (P, opt), None, length=steps)[1]

        return jax.jit(train)

    def losses_minor(P):  # leaves (..., runs); x is the one shared sample: products of scalars
        h = X1[0]
        for i, layer in enumerate(P):
            W, b = layer["W"], layer["b"]
            z = sum(W[:, j] * h[j] for j in range(W.shape[1])) + b
            h = z if i == len(P) - 1 else jax.nn.relu(z)
        return 0.5 * jnp.sum((Y1[0][:, None] - h) ** 2, axis=0)

    @jax.jit
    def elementwise(P, lrs):
        def body(P, _):
            L, vjp = jax.vjp(losses_minor, P)
            (g,) = vjp(jnp.ones_like(L))
            return jax.tree.map(lambda a, b: a - lrs * b, P, g), L

        return jax.lax.scan(body, P, None, length=steps)[1]

    @jax.jit
    def floor(P, lrs):
        return jax.lax.scan(lambda c, _: (c + 1.0, c), lrs, None, length=steps)[1]

    hand = jax.jit(jax.vmap(jax_scan_train(jax_loss("relu", HSE), steps), in_axes=(None, 0, None, None)))
    fns = {
        "hand-written jit(vmap(scan))": lambda: jax.block_until_ready(hand(p, lrs, X1, Y1)),
        "jmlp Step, runs major (vmap axis 0)": (lambda f: lambda: jax.block_until_ready(f(major, lrs)))(vmapped(0)),
        "jmlp Step, runs minor (vmap axis -1)": (lambda f: lambda: jax.block_until_ready(f(minor, lrs)))(vmapped(-1)),
        "runs minor, elementwise, no dots": lambda: jax.block_until_ready(elementwise(minor, lrs)),
        "floor: only the loss rows": lambda: jax.block_until_ready(floor(minor, lrs)),
    }
    t = measure_many(fns, 9)
    base = t["hand-written jit(vmap(scan))"].median_s
    for name, timing in t.items():
        s = timing.median_s
        print(f"  {name:<40} {runs * steps / s / 1e6:6.1f} M run-steps/s ({base / s:4.2f}x hand), {s / steps * 1e6:5.2f} us/step")


def cores_busy():
    """Process CPU time over wall time of one warm call: how many of the cores a sweep or a fit
    keeps busy. Compare with XLA_FLAGS=--xla_force_host_platform_device_count=2."""
    x, y = lr_sweep.data()
    lrs = np.geomspace(1e-4, 1, 64)
    p = lr_sweep.MODEL.init(jax.random.key(0))
    kw = dict(loss="mse", optimizer="sgd", steps=300)
    for name, f in [
        ("W2 sweep, 64 runs x 300 steps", lambda: jmlp.sweep(lr_sweep.MODEL, x, y, learning_rates=lrs, **kw)),
        ("W2 8 fits x 300 steps", lambda: [jmlp.fit(lr_sweep.MODEL, p, x, y, learning_rate=0.1, **kw) for _ in range(8)]),
        ("W5 sweep, 1024 runs x 10k steps", lambda: jmlp.sweep(
            SEED, X1, Y1, loss=HSE, optimizer="sgd", learning_rates=np.geomspace(1e-4, 0.5, 1024), steps=10_000,
            params=seed_params(jnp.float32))),
    ]:  # fmt: skip
        f()
        cpu, t = sum(os.times()[:2]), time.perf_counter()
        f()
        wall = time.perf_counter() - t
        print(f"  {name:<34} {wall:.2f} s, {(sum(os.times()[:2]) - cpu) / wall:.2f} of {os.cpu_count()} cores busy "
              f"({len(jax.devices())} jax devices)")  # fmt: skip


def compile_breakdown():
    """The first call of the W2 sweep: which programs take the compile time."""
    x, y = lr_sweep.data()
    with compile_events() as events:
        jmlp.sweep(
            lr_sweep.MODEL,
            x,
            y,
            loss="mse",
            optimizer="sgd",
            learning_rates=np.geomspace(1e-4, 1, 64),
            seeds=[0],
            steps=10,
        )
    top = compile_top(events, 5)
    print(f"  {sum(d for *_, d in events):.2f} s in all: " + ", ".join(f"{k} {v:.2f} s" for k, v in top.items()))


SECTIONS = {
    "W1": w1_fit_overhead,
    "W2": w2_run_scaling,
    "W4": w4_minibatch_cost,
    "W5": w5_hlo_and_ablation,
    "W5f": w5_formulations,
    "cores": cores_busy,
    "C": compile_breakdown,
}

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", help="comma-separated sections of " + ",".join(SECTIONS))
    args = p.parse_args()
    for name in args.only.split(",") if args.only else SECTIONS:
        print(f"{name}: {' '.join(SECTIONS[name].__doc__.split())}")
        SECTIONS[name]()
