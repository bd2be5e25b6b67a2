"""jmlp side by side with its peers, in one run: one table of rates and ratios with
their targets, and benchmarks/results/latest.json.

    python benchmarks/run.py            # the issue's sizes, about 5 minutes on 2 cores
    python benchmarks/run.py --quick    # small sizes, a sanity run (under a minute)
    python benchmarks/run.py --only W1,C

Every timed function is called once to warm up (compilation is reported
separately, from jax.monitoring's compile events), then --repeats times; the
median is quoted. The slowest peers (Python-level loops, PyTorch sweeps,
scikit-learn) run once after a small warm-up. Peers that are not installed are
skipped with a note. Ratios are what to read: absolute times drift on shared
machines, and "others' CPU" in the JSON says how busy the machine was.
"""

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
from workloads import common, compilation, digits, lr_sweep, midsize, seed_net, wide_grid

BUDGET_S = 600

# Workload -> (function, the sizes, --quick sizes); those in NEEDS_MATMUL also get the matmul rate.
WORKLOADS = {
    "W1": (seed_net.run, dict(steps=100_000, repeats=21), dict(steps=10_000, slow_steps=2_000, repeats=3)),
    "W2": (lr_sweep.run, dict(n_lrs=64, steps=1000, repeats=3), dict(n_lrs=8, steps=200, repeats=1)),
    "W3": (midsize.run, dict(steps=200, repeats=7), dict(steps=20, repeats=1)),
    "W4": (digits.run, dict(n_lrs=8, n_seeds=4, steps=1500, repeats=3), dict(n_lrs=2, n_seeds=2, steps=200, repeats=1)),
    "W5": (wide_grid.run, dict(n_lrs=1024, steps=10_000, repeats=7), dict(n_lrs=128, steps=1000, repeats=1)),
    "C": (compilation.run, dict(steps=2000), dict(steps=200)),
}
NEEDS_MATMUL = ("W2", "W3")


def git_state() -> dict:
    """The library's commit and its uncommitted files: the library changes under these numbers."""
    root = Path(__file__).resolve().parent.parent

    def git(*args):
        try:
            return subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"commit": git("rev-parse", "--short", "HEAD"), "dirty": git("status", "--porcelain", "jmlp").splitlines()}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine() -> dict:
    versions = {}
    for name in ("jax", "jaxlib", "optax", "numpy", "torch", "sklearn", "jmlp"):
        module = common.optional(name)
        versions[name] = getattr(module, "__version__", None) if module else None
    return {
        "platform": platform.platform(),
        "processor": cpu_model(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "versions": versions,
        "devices": [str(d) for d in jax.devices()],
        "backend": jax.default_backend(),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "git": git_state(),
    }


def fmt_ratio(row) -> str:
    if row.ratio is None:
        return "skipped" if row.target else ""
    r = row.ratio
    text = f"{r:.0f}" if abs(r) >= 100 or float(r).is_integer() else f"{r:.3g}"
    return text + row.unit


def table(rows) -> str:
    met = {True: "met", False: "MISSED", None: ""}
    body = [[r.workload, r.what, r.value, fmt_ratio(r), r.target, met[r.met]] for r in rows]
    header = ["workload", "what", "time or rate", "ratio", "target", "met?"]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body)]
    lines = [header, ["-" * w for w in widths], *body]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes: a sanity run, not numbers to quote")
    p.add_argument("--only", help="comma-separated workloads (default: all of " + ",".join(WORKLOADS) + ")")
    p.add_argument("--repeats", type=int, help="override every workload's repeat count")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "latest.json")
    args = p.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        p.error(f"unknown workload(s) {sorted(unknown)}; choose from {list(WORKLOADS)}")

    start = time.perf_counter()
    info = machine()
    print(
        f"jmlp benchmarks{' (--quick: small sizes)' if args.quick else ''} on {info['processor']}, "
        f"{info['cpu_count']} CPUs, {', '.join(info['devices'])}; "
        + ", ".join(f"{k} {v}" for k, v in info["versions"].items() if k in ("jax", "torch", "sklearn"))
        + f"; jmlp at {info['git']['commit']}"
        + (" with uncommitted changes" if info["git"]["dirty"] else "")
    )
    matmul = None
    if any(w in NEEDS_MATMUL for w in chosen):
        matmul = common.matmul_gflops()
        print(f"2048² float32 matmul: {matmul:.1f} GFLOP/s")

    rows, sizes, seconds = [], {}, {}
    for name in chosen:
        fn, full, quick = WORKLOADS[name]
        kw = dict(quick if args.quick else full)
        if args.repeats and "repeats" in kw:
            kw["repeats"] = args.repeats
        sizes[name] = kw
        print(f"running {name}: {fn.__module__.split('.')[-1]} {kw} ...", flush=True)
        t = time.perf_counter()
        if name in NEEDS_MATMUL:
            kw["matmul"] = matmul
        rows += fn(**kw)
        seconds[name] = time.perf_counter() - t
    total = time.perf_counter() - start

    print()
    print(table(rows))
    missed = [f"{r.workload} {r.what}" for r in rows if r.met is False]
    print(
        f"\n{sum(r.met is True for r in rows)} targets met, {len(missed)} missed, "
        f"{sum(r.met is None and bool(r.target) for r in rows)} skipped; total {total:.0f} s "
        f"({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})"
    )
    busy = [(r.workload, r.what, r.data["others_cpu"]) for r in rows if (r.data.get("others_cpu") or 0) > 0.1]
    for w, what, share in busy:
        print(f"warning: other processes used {share:.0%} of the CPU while timing {w} {what}")
    if git_state() != info["git"]:
        print(f"warning: the library changed during the run ({info['git']} -> {git_state()})")
    if total > BUDGET_S and not args.quick:
        print(f"warning: the run took {total:.0f} s, over the {BUDGET_S} s budget")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": info,
        "quick": args.quick,
        "sizes": sizes,
        "matmul_gflops": matmul,
        "seconds": seconds,
        "total_s": total,
        "rows": [dataclasses.asdict(r) for r in rows],
    }
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
