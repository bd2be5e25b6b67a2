"""Issue #4's speed check: a 64-learning-rate sweep as one program vs 64 fits vs PyTorch.

Synthetic regression (Friedman #1, 442 x 10), 10-32-32-1 tanh, MSE, SGD,
64 log-spaced learning rates x 1000 full-batch steps. Compile time is measured
separately; each timing is the median of --repeats runs. Prints ratios (absolute
times drift on shared machines) and achieved GFLOP/s against a 2048² float32
matmul measured in the same run; writes benchmarks/results/sweep_speed.json.

    python benchmarks/sweep_speed.py [--repeats 3] [--steps 1000] [--lrs 64]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jmlp
from jmlp.data import synthetic


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(repeats):
    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    f(a).block_until_ready()
    t = timed(lambda: f(a).block_until_ready(), max(repeats, 5))
    return 2 * 2048**3 / t / 1e9


def flops_per_step(sizes, n):
    forward = 2 * n * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return 3 * forward  # backward: two matmuls per layer (dW and dh)


def torch_sweep(x, y, sizes, lrs, steps):
    import torch

    torch.set_num_threads(2)
    xt, yt = torch.tensor(np.asarray(x)), torch.tensor(np.asarray(y))
    for lr in lrs:
        torch.manual_seed(0)
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.Tanh())
        net = torch.nn.Sequential(*layers)
        opt = torch.optim.SGD(net.parameters(), lr=float(lr))
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.mean((net(xt) - yt) ** 2)
            loss.backward()
            opt.step()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lrs", type=int, default=64)
    args = p.parse_args()

    x, y = synthetic(442, 0.1, 0)
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean()) / y.std()
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    model = jmlp.MLP((10, 32, 32, 1), "tanh")
    lrs = np.geomspace(1e-4, 1.0, args.lrs)
    kw = dict(loss="mse", optimizer="sgd", steps=args.steps)

    def run_sweep():
        r = jmlp.sweep(model, x, y, learning_rates=lrs, seeds=[0], **kw)
        return r.final_loss

    def run_fits():
        params = model.init(jax.random.key(0))
        return [jmlp.fit(model, params, x, y, learning_rate=float(lr), **kw).losses[-1] for lr in lrs]

    t = time.perf_counter()
    run_sweep()
    sweep_first = time.perf_counter() - t
    t = time.perf_counter()
    jmlp.fit(model, model.init(jax.random.key(0)), x, y, learning_rate=0.1, **kw)
    fit_first = time.perf_counter() - t

    results = {"workload": f"{args.lrs} LRs x {args.steps} full-batch steps, 10-32-32-1 tanh, 442 x 10, SGD"}
    results["sweep_s"] = timed(run_sweep, args.repeats)
    results["sweep_compile_s"] = sweep_first - results["sweep_s"]
    results["fits_s"] = timed(run_fits, args.repeats)
    results["fit_compile_s"] = fit_first - results["fits_s"] / args.lrs
    try:
        import torch  # noqa: F401

        results["torch_s"] = timed(lambda: torch_sweep(x, y, model.sizes, lrs, args.steps), 1)
    except ImportError:
        results["torch_s"] = None
    total_flops = flops_per_step(model.sizes, x.shape[0]) * args.lrs * args.steps
    results["sweep_gflops"] = total_flops / results["sweep_s"] / 1e9
    results["matmul_gflops"] = matmul_gflops(args.repeats)
    results["devices"] = [str(d) for d in jax.devices()]

    print(results["workload"], "on", ", ".join(results["devices"]))
    print(f"  jmlp.sweep (one program)      {results['sweep_s']:8.3f} s   (compile {results['sweep_compile_s']:.2f} s)")
    print(f"  {args.lrs} x jmlp.fit               {results['fits_s']:8.3f} s   -> sweep is {results['fits_s'] / results['sweep_s']:.1f}x faster")
    if results["torch_s"] is not None:
        print(f"  PyTorch loop over the LRs     {results['torch_s']:8.3f} s   -> sweep is {results['torch_s'] / results['sweep_s']:.1f}x faster")
    else:
        print("  PyTorch: not installed, skipped (pip install torch==2.13.0)")
    print(f"  sweep achieves {results['sweep_gflops']:.1f} GFLOP/s = {results['sweep_gflops'] / results['matmul_gflops']:.1%} "
          f"of a 2048² matmul ({results['matmul_gflops']:.1f} GFLOP/s)")
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "sweep_speed.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
