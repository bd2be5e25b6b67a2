"""``sweep``: every (learning rate, seed) run of a grid as one compiled program.

The runs are one batch for ``loop.start`` + ``loop.advance``, the functions
``fit`` runs on a batch of one, sharded over a 1-D device mesh with
``jax.shard_map``: each device steps its share of the runs in lockstep with no
communication, and the data is replicated. The learning rates and seeds are
traced arrays, so one compilation serves every grid of the same shape.

Run ``(lr, seed)`` equals ``fit(model, model.init(jax.random.key(seed)), x, y,
learning_rate=lr, key=jax.random.key(seed), ...)``.
"""

import collections
import dataclasses
import functools
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
    dup = sorted(int(s) for s, n in collections.Counter(int(s) for s in seeds).items() if n > 1)
    if dup:
        raise BadValue(f"seeds has duplicates {dup}: each seed would train the same run twice")
    return np.array(seeds, np.int32)


def memory_limit() -> int:
    """Bytes the grid may use: half the first device's memory (RAM on the CPU)."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return int(stats["bytes_limit"]) // 2
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def estimate_bytes(step: Step, steps: int, batch: int, dtype, runs: int, rows: int = 0) -> int:
    """Memory for ``runs`` runs, from shapes only (``jax.eval_shape``; nothing allocated).

    Twice the loop state (the while loop holds the old and the new), plus the
    activations and their gradients for one batch.
    """
    activations = 4 * batch * sum(step.model.sizes) * jnp.dtype(dtype).itemsize
    return runs * (2 * _state_bytes(step, steps, jnp.dtype(dtype), rows) + activations)


@functools.lru_cache(maxsize=64)  # tracing loop.start takes ~10 ms: as long as a small sweep's whole run
def _state_bytes(step: Step, steps: int, dtype, rows: int) -> int:
    """Bytes of one run's loop state."""
    params = jax.eval_shape(lambda: step.model.init(jax.random.key(0), dtype))
    one = jax.tree.map(lambda a: jax.ShapeDtypeStruct((1,) + a.shape, a.dtype), params)
    state = jax.eval_shape(lambda p: loop.start(step, steps, p, jnp.ones((1,), dtype), rows), one)
    return sum(math.prod(a.shape) * a.dtype.itemsize for a in jax.tree.leaves(state))


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


class Sweep:
    """A sweep in progress: the validated grid and its loop state, advanced chunk by chunk.

    Each run starts from ``model.init(jax.random.key(seed))``, or from
    ``params`` for every run when given (the seed then only drives the
    minibatch shuffle). ``devices`` defaults to all devices (of every process
    under ``jax.distributed``, where every process builds the same ``Sweep``);
    runs that don't divide evenly among them are padded, never dropped. A grid
    that needs more than ``max_bytes`` (default: half the device's memory) is
    refused before anything is allocated; ``bytes_needed`` is the estimate.

    ``sweep`` runs one from start to end; ``jmlp sweep`` uses one directly to
    checkpoint between chunks. ``snapshot`` returns the state as host arrays
    for the real runs only (no padding, so a checkpoint taken on 8 devices
    resumes on 1), and ``restore`` puts one back.

    >>> import jax.numpy as jnp
    >>> x, y = jnp.array([[2.0, 3.0]]), jnp.array([[10.0]])
    >>> s = Sweep(MLP((2, 2, 1)), x, y, loss="half_squared_error", optimizer="sgd",
    ...           learning_rates=[0.01, 0.1], steps=50)
    >>> s.advance(20), s.done, s.active
    (20, 20, True)
    >>> s.restore(s.snapshot()).advance(50)
    50
    """

    def __init__(
        self,
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
        max_bytes=None,
    ):
        self.step = step = Step(model, loss, optimizer, grad, tuple((optimizer_options or {}).items()))
        self.learning_rates = lrs = check_learning_rates(learning_rates)
        self.seeds = seed_list = check_seeds(seeds)
        self.steps = steps = check_positive_int("steps", steps)
        tol = check_tol(tol)
        x, y = check_data(x, y, model, step.loss)
        self.batch_size = batch_size = check_positive_int("batch_size", batch_size, allow_none=True)
        if batch_size is not None and batch_size > x.shape[0]:
            raise BadValue(f"batch_size {batch_size} is larger than the {x.shape[0]} training rows")
        if (x_val is None) != (y_val is None):
            raise BadValue("give both x_val and y_val, or neither")
        if x_val is not None:
            x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)
            if x_val.ndim != 2 or x_val.shape[1] != x.shape[1]:
                raise BadValue(f"x_val has shape {tuple(x_val.shape)} but x has {x.shape[1]} columns")
            x_val, y_val = check_data(x_val, y_val, model, step.loss)

        devices = list(devices or jax.devices())
        self.n_runs = n_runs = len(lrs) * len(seed_list)
        self.padded = padded = -(-n_runs // len(devices)) * len(devices)
        dtype = x.dtype
        self.rows = x.shape[0] if batch_size else 0
        # per process: each holds its own devices' share of the runs
        self.bytes_needed = need = estimate_bytes(step, steps, batch_size or x.shape[0], dtype, padded // jax.process_count(), self.rows)
        limit = memory_limit() if max_bytes is None else max_bytes
        if need > limit:
            raise BadValue(
                f"the grid of {n_runs} runs x {steps} steps needs about {_size(need)}, over the "
                f"{_size(limit)} allowed: use fewer learning rates, seeds or steps"
            )
        if params is not None:
            model.check(params, x)

        # Runs in (lr, seed) order; padding repeats the last run and is cut off on the way out.
        run_lr = _pad(np.repeat(lrs, len(seed_list)), padded)
        run_seed = _pad(np.tile(seed_list, len(lrs)), padded)
        self.mesh = mesh = _mesh(devices)
        self._runs = NamedSharding(mesh, P(AXIS))
        self._replicated = NamedSharding(mesh, P())
        self._run_lr = _put(np.asarray(run_lr, dtype), self._runs)
        self._run_seed = _put(run_seed, self._runs)
        self._x, self._y = _put(x, self._replicated), _put(y, self._replicated)
        self._val = None if x_val is None else (_put(x_val, self._replicated), _put(y_val, self._replicated))
        self._tol = _put(np.asarray(-np.inf if tol is None else tol, dtype), self._replicated)
        self._dtype = jnp.dtype(dtype)
        if params is not None:
            params = jax.tree.map(lambda a: _put(np.asarray(a, dtype), self._replicated), params)
        self._params = params
        self.state = None
        self.done = 0

    def _initial_state(self):
        return _start(self.step, self.steps, self.rows, self.mesh, self._dtype, self._run_lr, self._run_seed, self._params)

    def start(self) -> "Sweep":
        """The state before step 0 (called by ``advance`` when needed)."""
        self.state = self._initial_state()
        self.done = 0
        return self

    def advance(self, until: int) -> int:
        """Step every active run up to step ``until`` (at most ``steps``); returns ``done``."""
        if self.state is None:
            self.start()
        until = min(int(until), self.steps)
        if until > self.done:
            args = (self.step, self.batch_size, self.mesh)
            self.state = _advance(*args, self.state, self._run_seed, self._x, self._y, self._tol, jnp.int32(until))
            self.done = until
        return self.done

    @property
    def active(self) -> bool:
        """Whether any run still trains: False once every run converged or diverged."""
        return self.done < self.steps and bool(_any_active(self.mesh, self.state.converged, self.state.diverged))

    def snapshot(self) -> dict:
        """``{"done": int, "state": {path: array}}``: the loop state of the real runs on the host.

        Every process gets the whole state (a collective across processes).
        """
        if self.state is None:
            self.start()
        leaves = [(_keystr(p), a) for p, a in jax.tree_util.tree_flatten_with_path(self.state._replace(t=None))[0]]
        return {"done": self.done, "state": {k: _cut(_gather(a), self.n_runs, _run_axis(k)) for k, a in leaves}}

    def _shapes(self):
        """The loop state's leaves (less the shared counter t) as ``(path, shape)`` pairs
        for the padded runs, and its tree structure, from ``jax.eval_shape``: nothing runs."""
        state = jax.eval_shape(self._initial_state)
        leaves, treedef = jax.tree_util.tree_flatten_with_path(state._replace(t=None))
        return [(_keystr(path), a) for path, a in leaves], treedef

    def _template(self, shapes) -> dict:
        out = {}
        for path, a in shapes:
            shape = list(a.shape)
            shape[_run_axis(path)] = self.n_runs
            out[path] = jax.ShapeDtypeStruct(tuple(shape), a.dtype)
        return out

    def template(self) -> dict:
        """``{path: ShapeDtypeStruct}``: what ``snapshot()["state"]`` holds, for the real runs."""
        return self._template(self._shapes()[0])

    def restore(self, snapshot: dict) -> "Sweep":
        """Continue from a ``snapshot`` of this grid, taken on any number of devices."""
        state = snapshot["state"]
        shapes, treedef = self._shapes()
        template = self._template(shapes)
        if set(state) != set(template):
            raise BadValue(f"the snapshot holds {sorted(state)}, this sweep needs {sorted(template)}")
        for k, t in template.items():
            a = state[k]
            if tuple(a.shape) != t.shape or a.dtype != t.dtype:
                raise BadValue(f"snapshot leaf {k} is {a.dtype}{list(a.shape)}, this sweep needs {t.dtype}{list(t.shape)}")
        done = snapshot["done"]
        if isinstance(done, bool) or not isinstance(done, (int, np.integer)) or not 0 <= done <= self.steps:
            raise BadValue(f"snapshot is at step {done!r}, outside this sweep's 0..{self.steps}")
        leaves = []
        for path, _ in shapes:
            axis = _run_axis(path)
            spec = P(None, AXIS) if axis == 1 else P(AXIS)
            leaves.append(_put(_pad(state[path], self.padded, axis), NamedSharding(self.mesh, spec)))
        self.state = jax.tree.unflatten(treedef, leaves)._replace(t=_put(np.int32(done), self._replicated))
        self.done = int(done)
        return self

    def result(self) -> SweepResult:
        """The per-run results so far (all processes take part; each gets the whole result)."""
        if self.state is None:
            self.start()
        states = self.state
        final_loss, _ = _evaluate(self.step, self.mesh, states.params, self._x, self._y)
        val_loss = val_accuracy = None
        if self._val is not None:
            val_loss, val_accuracy = _evaluate(self.step, self.mesh, states.params, *self._val)
            if get_loss(self.step.loss).targets != "labels":
                val_accuracy = None

        grid = (len(self.learning_rates), len(self.seeds))

        def host(a, axis=0):
            a = _cut(_gather(a), self.n_runs, axis)
            a = np.moveaxis(a, axis, 0)
            return a.reshape(grid + a.shape[1:])

        converged = host(states.converged)
        taken = host(states.i)
        return SweepResult(
            learning_rates=self.learning_rates,
            seeds=self.seeds,
            final_loss=host(final_loss),
            val_loss=None if val_loss is None else host(val_loss),
            val_accuracy=None if val_accuracy is None else host(val_accuracy),
            diverged=host(states.diverged),
            converged=converged,
            steps=taken,
            steps_to_tol=np.where(converged, taken, -1),
            losses=host(states.losses, axis=1),
            params=jax.tree.map(host, states.params),
        )


_LOSSES = ".losses"


def _keystr(path) -> str:
    return jax.tree_util.keystr(path)


def _run_axis(path: str) -> int:
    return 1 if path == _LOSSES else 0


def _pad(a, n, axis=0):
    """``a`` with its last entry along ``axis`` repeated up to length ``n``."""
    a = np.asarray(a)
    extra = n - a.shape[axis]
    if extra == 0:
        return a
    last = np.take(a, [-1], axis=axis)
    return np.concatenate([a, np.repeat(last, extra, axis=axis)], axis=axis)


def _cut(a, n, axis=0):
    """The first ``n`` entries along ``axis`` as a writable host array of its own (not a
    read-only view pinning a device buffer). A slice copies contiguously; np.take
    along the minor axis of the loss history took 15 ms on W5."""
    if n == a.shape[axis] and a.flags.owndata:  # already a fresh host copy (gathered from several devices)
        return a
    return np.array(a[(slice(None),) * axis + (slice(0, n),)])


def _put(a, sharding):
    """A host array as a global array with ``sharding``; each process supplies its own
    shards from its copy, so this works across processes as well as within one."""
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def _gather(a) -> np.ndarray:
    """The whole of a (possibly multi-process) global array, on the host."""
    if a.is_fully_addressable:
        return np.asarray(a)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(a, tiled=True))


@functools.partial(jax.jit, static_argnums=0)
def _any_active_runs(mesh, converged, diverged):
    return jax.lax.with_sharding_constraint(jnp.any(~converged & ~diverged), NamedSharding(mesh, P()))


def _any_active(mesh, converged, diverged):
    return _gather(_any_active_runs(mesh, converged, diverged))


def sweep(model: MLP, x, y, *, chunk_steps=None, progress: Callable[[int, int], None] | None = None, **grid) -> SweepResult:
    """Train every (learning rate, seed) pair in one compiled, vmapped, sharded program.

    ``grid`` holds the keyword arguments of ``Sweep`` (``loss``, ``optimizer``,
    ``learning_rates``, ``steps`` and the optional ones). ``chunk_steps`` splits
    the loop into compiled chunks (same bits), calling ``progress(steps_done,
    steps)`` after each.

    >>> import jax.numpy as jnp
    >>> x, y = jnp.array([[2.0, 3.0]]), jnp.array([[10.0]])
    >>> result = sweep(MLP((2, 2, 1)), x, y, loss="half_squared_error", optimizer="sgd",
    ...                learning_rates=[0.01, 0.1, 10.0], seeds=[0, 1], steps=200, tol=1e-6)
    >>> result.diverged.tolist()
    [[False, False], [False, False], [True, True]]
    """
    s = Sweep(model, x, y, **grid)
    chunk_steps = check_positive_int("chunk_steps", chunk_steps, allow_none=True) or s.steps
    while s.done < s.steps:
        s.advance(s.done + chunk_steps)
        if progress is not None:
            progress(s.done, s.steps)
        if s.done < s.steps and not s.active:
            if progress is not None:
                progress(s.steps, s.steps)
            break
    return s.result()
