"""What every workload shares: the timing helper, compile counting, table rows,
FLOP counts, and plain (non-jmlp) reference code in JAX and PyTorch."""

import contextlib
import dataclasses
import importlib
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

TORCH_PIN = "pip install torch==2.13.0"  # the CPU build used for these numbers

# ---------------------------------------------------------------- compile counting

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@contextlib.contextmanager
def compile_events():
    """Record jax's own compile events inside the block: a list of (event, fun_name, seconds).

    ``backend_compile_duration`` fires once per XLA compilation, so counting it
    is ``jax.log_compiles`` without parsing logs.
    """
    events = []

    def listen(event, duration, **kw):
        if event in _COMPILE_EVENTS:
            events.append((event, kw.get("fun_name", "?"), duration))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield events
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def n_compiles(events) -> int:
    return sum(e == _COMPILE_EVENTS[2] for e, _, _ in events)


def compile_seconds(events) -> float:
    """Trace + lower + XLA compile time."""
    return sum(d for _, _, d in events)


def compile_top(events, k=3) -> dict:
    """The ``k`` programs that took longest to trace, lower and compile: {name: seconds}."""
    per = {}
    for _, name, d in events:
        name = name.removeprefix("jit(").removesuffix(")")
        per[name] = per.get(name, 0.0) + d
    return dict(sorted(per.items(), key=lambda kv: -kv[1])[:k])


# ---------------------------------------------------------------- timing


def _busy_seconds():
    """(machine busy CPU-seconds, this process's CPU-seconds); machine part None off Linux."""
    own = sum(os.times()[:2])
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        idle = fields[3] + fields[4]
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own
    except (OSError, ValueError, IndexError):
        return None, own


@dataclasses.dataclass
class Timing:
    median_s: float
    times: list
    first_s: float  # the warm-up call, compilation included
    compile_s: float  # trace + lower + XLA compile inside the warm-up (jax.monitoring)
    compiles: int  # XLA compilations inside the warm-up
    compile_top: dict  # the slowest programs to compile: {name: seconds}
    others_cpu: float | None  # share of the machine's CPU other processes used while timing


def measure_many(fns: dict, repeats, warmups=None) -> dict:
    """Time several contenders fairly: warm each up once (``warmups[name]``, default the
    function itself), then call them round-robin ``repeats`` times, so that the machine's
    drift (shared hosts easily vary by 20 % over minutes) hits them all alike.

    Returns ``{name: Timing}`` with median wall times. Each function must block until its
    result is ready (return host values or call ``block_until_ready``); a cheaper warm-up
    (fewer steps) keeps slow peers from running twice at full size.
    """
    warmups = warmups or {}
    first, events = {}, {}
    for name, fn in fns.items():
        with compile_events() as events[name]:
            t = time.perf_counter()
            warmups.get(name, fn)()
            first[name] = time.perf_counter() - t
    times = {name: [] for name in fns}
    busy = dict.fromkeys(fns, 0.0)  # CPU-seconds other processes used while each was timed
    for _ in range(repeats):
        for name, fn in fns.items():
            machine0, own0 = _busy_seconds()
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            machine1, own1 = _busy_seconds()
            busy[name] = None if machine0 is None else busy[name] + (machine1 - machine0) - (own1 - own0)
    out = {}
    for name in fns:
        total = sum(times[name])
        # /proc/stat counts in 10 ms ticks: only meaningful over longer windows
        others = (
            max(0.0, busy[name]) / (total * (os.cpu_count() or 1)) if busy[name] is not None and total >= 0.5 else None
        )
        ev = events[name]
        out[name] = Timing(
            statistics.median(times[name]),
            times[name],
            first[name],
            compile_seconds(ev),
            n_compiles(ev),
            compile_top(ev),
            others,
        )
    return out


def measure(fn, repeats, warmup=None) -> Timing:
    """``measure_many`` for one function."""
    return measure_many({"fn": fn}, repeats, {"fn": warmup} if warmup else None)["fn"]


def matmul_gflops(repeats=7) -> float:
    """The machine's float32 matmul rate: a jitted 2048 x 2048 @ 2048 x 2048."""
    a = jax.random.normal(jax.random.key(0), (2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t = measure(lambda: f(a).block_until_ready(), repeats)
    return 2 * 2048**3 / t.median_s / 1e9


def flops_per_step(sizes, n) -> int:
    """Matmul FLOPs of one full training step on ``n`` rows: forward (h Wᵀ), dW (dzᵀ h)
    and dh (dz W) for every layer but the first, whose dh nobody needs."""
    macs = [a * b for a, b in zip(sizes[:-1], sizes[1:])]
    return 2 * n * (3 * sum(macs) - macs[0])


# ---------------------------------------------------------------- table rows


@dataclasses.dataclass
class Row:
    workload: str
    what: str
    value: str = ""  # a time or a rate, formatted
    ratio: float | None = None
    target: str = ""  # e.g. ">= 0.8x"
    met: bool | None = None  # None: no target, or skipped
    unit: str = "x"  # of the ratio
    data: dict = dataclasses.field(default_factory=dict)  # raw numbers for the JSON


def timing_row(workload, what, timing: Timing, work=None, unit="steps/s", **data) -> Row:
    """A measured row: the rate ``work / median`` (or the median time), compile time beside it."""
    value = f"{si(work / timing.median_s)} {unit}" if work else f"{timing.median_s:.3f} s"
    if work:
        value += f" ({timing.median_s:.3g} s)"
    if timing.compile_s >= 0.05:
        value += f", compile {timing.compile_s:.2f} s"
    raw = dataclasses.asdict(timing) | data
    if work:
        raw["rate"] = work / timing.median_s
    return Row(workload, what, value, data=raw)


def ratio_row(workload, what, ratio, at_least=None, at_most=None, unit="x", **data) -> Row:
    """A comparison row; ``met`` is None when there is no target or ``ratio`` is None (skipped)."""
    target, met = "", None
    if at_least is not None:
        target = f">= {at_least:g}{unit}"
        met = None if ratio is None else ratio >= at_least
    elif at_most is not None:
        target = f"<= {at_most:g}{unit}"
        met = None if ratio is None else ratio <= at_most
    return Row(workload, what, "", ratio, target, met, unit, data=dict(ratio=ratio, **data))


def note_row(workload, what, text, **data) -> Row:
    return Row(workload, what, text, data=data)


def si(x: float) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}"
    return f"{x:.3g}"


# ---------------------------------------------------------------- peers


def optional(module: str):
    """The module, or None when it is not installed (the peer is then skipped)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


def torch_or_none():
    torch = optional("torch")
    if torch is not None:
        torch.set_num_threads(os.cpu_count() or 1)
    return torch


ACTS = {"relu": jax.nn.relu, "tanh": jnp.tanh}


def jax_loss(activation, loss):
    """A plain-JAX MLP loss ``(params, x, y) -> scalar`` written from scratch (not jmlp's code),
    for the hand-written baselines. Same params layout: [{"W": (out, in), "b": (out,)}, ...]."""
    act = ACTS[activation]

    def apply(params, x):
        h = x
        for i, layer in enumerate(params):
            h = h @ layer["W"].T + layer["b"]
            if i < len(params) - 1:
                h = act(h)
        return h

    def fn(params, x, y):
        y_hat = apply(params, x)
        if loss == "half_squared_error":
            return jnp.mean(0.5 * jnp.sum((y - y_hat) ** 2, axis=-1))
        if loss == "mse":
            return jnp.mean((y - y_hat) ** 2)
        if loss == "softmax_cross_entropy":
            logp = jax.nn.log_softmax(y_hat)
            return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        raise ValueError(loss)

    return fn


def jax_scan_train(loss, steps):
    """Plain SGD in a ``lax.scan``: ``(params, lr, x, y) -> (params, losses)``, unjitted."""

    def train(params, lr, x, y):
        def body(p, _):
            L, g = jax.value_and_grad(loss)(p, x, y)
            return jax.tree.map(lambda a, b: a - lr * b, p, g), L

        return jax.lax.scan(body, params, None, length=steps)

    return train


def torch_mlp(torch, sizes, activation, params):
    """A torch.nn.Sequential holding a copy of jmlp ``params`` (same W orientation as nn.Linear)."""
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = torch.nn.Linear(a, b)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.array(params[i]["W"], np.float32)))
            linear.bias.copy_(torch.from_numpy(np.array(params[i]["b"], np.float32)))
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append({"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[activation]())
    return torch.nn.Sequential(*layers)
