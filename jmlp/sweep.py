"""``sweep``: every (learning rate, seed) run of a grid as one compiled program.

The runs are one batch for ``loop.start`` + ``loop.advance``, the functions
``fit`` runs on a batch of one, sharded over a 1-D device mesh with
``jax.shard_map``: each device steps its share of the runs in lockstep with no
communication, and the data is replicated. The learning rates and seeds are
traced arrays, so one compilation serves every grid of the same shape.

Run ``(lr, seed)`` equals ``fit(model, model.init(jax.random.key(seed)), x, y,
learning_rate=lr, key=jax.random.key(seed), ...)``.
"""

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from . import loop
from .errors import BadType, BadValue
from .fit import check_data, check_positive_int, check_tol
from .gradients import loss_fn
from .losses import get_loss
from .model import MLP
from .optim import check_learning_rate
from .step import Step

AXIS = "runs"


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """Per-run arrays shaped ``(n_lr, n_seed)``; ``losses`` adds a step axis (NaN past
    each run's last step) and every leaf of ``params`` has the two leading axes."""

    learning_rates: np.ndarray
    seeds: np.ndarray
    final_loss: np.ndarray  # train loss at each run's final params
    val_loss: np.ndarray | None
    val_accuracy: np.ndarray | None
    diverged: np.ndarray
    converged: np.ndarray
    steps: np.ndarray  # steps taken
    steps_to_tol: np.ndarray  # -1 where tol was never reached
    losses: np.ndarray
    params: Any

    def runs(self) -> list[dict]:
        """One record per run, in (learning rate, seed) order, with plain Python values."""
        out = []
        for i, lr in enumerate(self.learning_rates):
            for j, seed in enumerate(self.seeds):
                out.append(
                    {
                        "learning_rate": float(lr),
                        "seed": int(seed),
                        "final_loss": _finite_or_none(self.final_loss[i, j]),
                        "val_loss": None if self.val_loss is None else _finite_or_none(self.val_loss[i, j]),
                        "val_accuracy": None if self.val_accuracy is None else float(self.val_accuracy[i, j]),
                        "steps": int(self.steps[i, j]),
                        "steps_to_tol": int(self.steps_to_tol[i, j]),
                        "diverged": bool(self.diverged[i, j]),
                    }
                )
        return out

    def aggregate(self) -> list[dict]:
        """Per learning rate: mean and std over the seeds that did not diverge."""
        rows = []
        for i, lr in enumerate(self.learning_rates):
            ok = ~self.diverged[i]
            row = {"learning_rate": float(lr), "diverged": int((~ok).sum()), "runs": int(ok.size)}
            for name in ("final_loss", "val_loss", "val_accuracy"):
                values = getattr(self, name)
                if values is not None:
                    kept = values[i][ok]
                    row[name] = _mean_std(kept)
            row["converged"] = int(self.converged[i].sum())
            rows.append(row)
        return rows

    def best(self) -> dict | None:
        """The learning rate with the lowest mean validation loss (train loss without
        validation data), preferring rates where no seed diverged; None if all diverged."""
        key = "val_loss" if self.val_loss is not None else "final_loss"
        rows = [r for r in self.aggregate() if r[key][0] is not None]
        clean = [r for r in rows if r["diverged"] == 0]
        pool = clean or rows
        return min(pool, key=lambda r: r[key][0]) if pool else None

    def table(self) -> str:
        """The aggregated table as text, one row per learning rate."""
        from .report import fmt, table

        def pm(ms):
            return "—" if ms[0] is None else f"{fmt(ms[0])} ± {fmt(ms[1])}"

        present = [name for name in ("val_loss", "val_accuracy") if getattr(self, name) is not None]
        header = ["learning_rate", "final_loss", *present, "converged", "diverged"]
        body = []
        for r in self.aggregate():
            row = [fmt(r["learning_rate"])]
            row += [pm(r[name]) for name in ("final_loss", "val_loss", "val_accuracy") if name in r]
            row += [f"{r['converged']}/{r['runs']}", f"{r['diverged']}/{r['runs']}"]
            body.append(row)
        return table(body, header)


def _finite_or_none(v):
    return float(v) if np.isfinite(v) else None


def _mean_std(values):
    values = values[np.isfinite(values)]
    if values.size == 0:
        return (None, None)
    return (float(values.mean()), float(values.std()))


def check_learning_rates(learning_rates) -> np.ndarray:
    if isinstance(learning_rates, (str, bytes)) or not hasattr(learning_rates, "__len__"):
        raise BadType(f"learning_rates must be a list of numbers, got {learning_rates!r}")
    if len(learning_rates) == 0:
        raise BadValue("learning_rates is empty: give at least one learning rate")
    return np.array([check_learning_rate(lr) for lr in learning_rates], np.float64)


def check_seeds(seeds) -> np.ndarray:
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__len__") or len(seeds) == 0:
        raise BadValue(f"seeds must be a non-empty list of integers, got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < 2**31:
            raise BadValue(f"seeds must be integers in [0, 2**31), got {s!r}")
    dup = sorted({int(s) for s in seeds if list(seeds).count(s) > 1})
    if dup:
        raise BadValue(f"seeds has duplicates {dup}: each seed would train the same run twice")
    return np.array(seeds, np.int32)


def memory_limit() -> int:
    """Bytes the grid may use: half the first device's memory (RAM on the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def estimate_bytes(step: Step, steps: int, batch: int, dtype, runs: int, rows: int = 0) -> int:
    """Memory for ``runs`` runs, from shapes only (``jax.eval_shape``; nothing allocated).

    Twice the loop state (the while loop holds the old and the new), plus the
    activations and their gradients for one batch.
    """
    params = jax.eval_shape(lambda k: step.model.init(k, dtype), jax.random.key(0))
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + a.shape, a.dtype), params)
    state = jax.eval_shape(lambda p: loop.start(step, steps, p, jnp.ones((1,), dtype), rows), one)
    state_bytes = sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(state))
    activations = 4 * batch * sum(step.model.sizes) * jnp.dtype(dtype).itemsize
    return runs * (2 * state_bytes + activations)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _mesh(devices):
    return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def _shard(fn, mesh, in_specs, out_specs=None):
    out_specs = P(AXIS) if out_specs is None else out_specs
    return jax.shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)


# Every state leaf is split along its run axis, except the shared step counter
# t: each device keeps its own copy (its runs may stop at a different step).
_STATE_SPECS = loop.LoopState(P(), P(AXIS), P(AXIS), P(AXIS), P(None, AXIS), P(AXIS), P(AXIS), P(AXIS), P(AXIS))


def _start_runs(step: Step, steps: int, rows: int, mesh, dtype, learning_rates, seeds, params):
    def runs(lrs, seeds, params):
        if params is None:
            p = jax.vmap(lambda seed: step.model.init(jax.random.key(seed), dtype))(seeds)
        else:  # the same starting point for every run
            p = jax.tree.map(lambda a: jnp.broadcast_to(a, (lrs.shape[0],) + a.shape), params)
        return loop.start(step, steps, p, lrs, rows)

    return _shard(runs, mesh, (P(AXIS), P(AXIS), P()), out_specs=_STATE_SPECS)(learning_rates, seeds, params)


def _advance_runs(step: Step, batch_size, mesh, states, seeds, x, y, tol, until):
    def runs(states, seeds, x, y, tol, until):
        keys = jax.vmap(jax.random.key)(seeds)
        return loop.advance(step, batch_size, states, x, y, tol, keys, until)

    specs = (_STATE_SPECS, P(AXIS), P(), P(), P(), P())
    return _shard(runs, mesh, specs, out_specs=_STATE_SPECS)(states, seeds, x, y, tol, until)


def _evaluate_runs(step: Step, mesh, params, x, y):
    L = loss_fn(step.model, step.loss)
    labels = get_loss(step.loss).targets == "labels"

    def runs(params, x, y):
        def one(p):
            loss = L(p, x, y)
            accuracy = jnp.mean(jnp.argmax(step.model.apply(p, x), -1) == y) if labels else jnp.nan
            return loss, accuracy

        return jax.vmap(one)(params)

    return _shard(runs, mesh, (P(AXIS), P(), P()))(params, x, y)


_start = jax.jit(_start_runs, static_argnums=(0, 1, 2, 3, 4))
_advance = jax.jit(_advance_runs, static_argnums=(0, 1, 2), donate_argnums=(3,))
_evaluate = jax.jit(_evaluate_runs, static_argnums=(0, 1))


def sweep(
    model: MLP,
    x,
    y,
    *,
    loss,
    optimizer,
    learning_rates,
    seeds=(0,),
    grad="manual",
    steps,
    tol=None,
    batch_size=None,
    x_val=None,
    y_val=None,
    optimizer_options=None,
    params=None,
    devices=None,
    chunk_steps=None,
    progress: Callable[[int, int], None] | None = None,
    max_bytes=None,
) -> SweepResult:
    """Train every (learning rate, seed) pair in one compiled, vmapped, sharded program.

    Each run starts from ``model.init(jax.random.key(seed))``, or from
    ``params`` for every run when given (the seed then only drives the
    minibatch shuffle). ``devices`` defaults to all local devices; runs that don't divide evenly
    among them are padded, never dropped. ``chunk_steps`` splits the loop into
    compiled chunks (same bits), calling ``progress(steps_done, steps)`` after
    each. A grid that needs more than ``max_bytes`` (default: half the
    device's memory) is refused before anything is allocated.

    >>> import jax.numpy as jnp
    >>> x, y = jnp.array([[2.0, 3.0]]), jnp.array([[10.0]])
    >>> result = sweep(MLP((2, 2, 1)), x, y, loss="half_squared_error", optimizer="sgd",
    ...                learning_rates=[0.01, 0.1, 10.0], seeds=[0, 1], steps=200, tol=1e-6)
    >>> result.diverged.tolist()
    [[False, False], [False, False], [True, True]]
    """
    step = Step(model, loss, optimizer, grad, tuple((optimizer_options or {}).items()))
    lrs = check_learning_rates(learning_rates)
    seed_list = check_seeds(seeds)
    steps = check_positive_int("steps", steps)
    tol = check_tol(tol)
    x, y = check_data(x, y, model, step.loss)
    batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
    if batch_size is not None and batch_size > x.shape[0]:
        raise BadValue(f"batch_size {batch_size} is larger than the {x.shape[0]} training rows")
    if (x_val is None) != (y_val is None):
        raise BadValue("give both x_val and y_val, or neither")
    if x_val is not None:
        x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)
        if x_val.ndim != 2 or x_val.shape[1] != x.shape[1]:
            raise BadValue(f"x_val has shape {tuple(x_val.shape)} but x has {x.shape[1]} columns")
        x_val, y_val = check_data(x_val, y_val, model, step.loss)
    chunk_steps = check_positive_int("chunk_steps", chunk_steps, allow_none=True) or steps

    devices = list(devices or jax.local_devices())
    n_runs = len(lrs) * len(seed_list)
    padded = -(-n_runs // len(devices)) * len(devices)
    dtype = x.dtype
    need = estimate_bytes(step, steps, batch_size or x.shape[0], dtype, padded, x.shape[0] if batch_size else 0)
    limit = memory_limit() if max_bytes is None else max_bytes
    if need > limit:
        raise BadValue(
            f"the grid of {n_runs} runs x {steps} steps needs about {_size(need)}, over the "
            f"{_size(limit)} allowed: use fewer learning rates, seeds or steps"
        )

    # Runs in (lr, seed) order; padding repeats the last run and is cut off below.
    run_lr = np.repeat(lrs, len(seed_list))
    run_seed = np.tile(seed_list, len(lrs))
    run_lr = np.concatenate([run_lr, np.full(padded - n_runs, run_lr[-1])])
    run_seed = np.concatenate([run_seed, np.full(padded - n_runs, run_seed[-1])])
    mesh = _mesh(devices)
    runs, replicated = NamedSharding(mesh, P(AXIS)), NamedSharding(mesh, P())
    run_lr = jax.device_put(jnp.asarray(run_lr, dtype), runs)
    run_seed = jax.device_put(jnp.asarray(run_seed), runs)
    x, y = jax.device_put((x, y), replicated)
    threshold = jax.device_put(jnp.asarray(-jnp.inf if tol is None else tol, dtype), replicated)

    if params is not None:
        model.check(params, x)
        params = jax.device_put(jax.tree.map(lambda a: jnp.asarray(a, dtype), params), replicated)
    states = _start(step, steps, x.shape[0] if batch_size else 0, mesh, jnp.dtype(dtype), run_lr, run_seed, params)
    done = 0
    while done < steps:
        done = min(done + chunk_steps, steps)
        states = _advance(step, batch_size, mesh, states, run_seed, x, y, threshold, jnp.int32(done))
        if progress is not None:
            progress(done, steps)
        if done < steps and not bool(jnp.any(~states.converged & ~states.diverged)):
            if progress is not None:
                progress(steps, steps)
            break

    final_loss, _ = _evaluate(step, mesh, states.params, x, y)
    val_loss = val_accuracy = None
    if x_val is not None:
        x_val, y_val = jax.device_put((x_val, y_val), replicated)
        val_loss, val_accuracy = _evaluate(step, mesh, states.params, x_val, y_val)
        val_loss = np.asarray(val_loss)[:n_runs]
        val_accuracy = np.asarray(val_accuracy)[:n_runs] if get_loss(step.loss).targets == "labels" else None

    grid = (len(lrs), len(seed_list))

    def host(a):
        a = np.asarray(a)[:n_runs]
        return a.reshape(grid + a.shape[1:])

    converged = host(states.converged)
    taken = host(states.i)
    return SweepResult(
        learning_rates=lrs,
        seeds=seed_list,
        final_loss=host(final_loss),
        val_loss=None if val_loss is None else val_loss.reshape(grid),
        val_accuracy=None if val_accuracy is None else val_accuracy.reshape(grid),
        diverged=host(states.diverged),
        converged=converged,
        steps=taken,
        steps_to_tol=np.where(converged, taken, -1),
        losses=host(np.asarray(states.losses).T),
        params=jax.tree.map(host, states.params),
    )
