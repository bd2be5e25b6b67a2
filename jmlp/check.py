"""Gradient checks: a candidate gradient against ``jax.grad`` and finite differences.

``check_grad`` computes three gradients of one loss at one point, all in
float64 whatever the inputs' dtype: the candidate's (``manual_grad``, or any
function shaped like ``jax.grad(loss_fn)``), autodiff's, and central finite
differences ``(L(p + h) - L(p - h)) / 2h`` with ``h = eps·max(1, |p|)``.

The verdict is against autodiff, the exact reference: an element passes when
``|candidate - autodiff| <= max(atol, rtol·|autodiff|)``. Finite differences
(FD) are a second, independent witness that never decides the verdict. They
agree when ``|candidate - fd| <= fd_rtol·max(|fd|, max|autodiff|)``, and are
unreliable at an element, which the report says instead of failing or
passing vacuously, when

- a kink lies within the step: the one-sided differences ``(L(p+h) - L(p))/h``
  and ``(L(p) - L(p-h))/h`` are further apart than twice the FD tolerance,
  so the central difference may be off by more than it (a large curvature,
  as near a minimum, trips this too: the flag errs on the safe side);
- the loss is too flat for float64: rounding the loss values, taken as
  ``8 ulp(|L|) / h``, could move the difference by more than the tolerance.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from .errors import BadType, BadValue, unknown_name
from .report import table

MODES = ("full", "directional")
EPS = 1e-6  # near float64's central-difference optimum (cbrt(ulp) ~ 6e-6), a little under it to keep kinks rare
FD_RTOL = 1e-3  # FD reach ~1e-9 on MLPs; a loose witness for O(1) bugs is rarely unreliable near a minimum
NOISE_ULPS = 8  # the error of one loss evaluation, in ulps of |L|, that the flatness test allows for
# By the candidate's itemsize: float64 hand-written gradients agree with
# jax.grad to ~1e-15 (the sums run in another order); narrower ones to a few
# of their own ulps times the depth of the sums.
RTOLS = {8: 1e-9, 4: 1e-4, 2: 1e-2}
CHUNK_ELEMENTS = 2**22  # perturbed parameter values held at once in full mode
MIN_CHUNK = 256  # tiny nets all vmap this many perturbed vectors: one shape, one compilation per op


@dataclasses.dataclass(frozen=True)
class LeafRow:
    """The check of one parameter leaf, with the values at its worst element ``index``.

    ``rel_error`` is the largest ``|candidate - autodiff| / max(|autodiff|, atol/rtol)``
    and ``fd_rel_error`` the largest ``|candidate - fd| / max(|fd|, max|autodiff|)``.
    The ``fd`` fields are ``None`` in directional mode, where the FD witness
    checks directions instead. ``fd_reliable`` is False when FD is unreliable
    at any element of the leaf (``fd_unreliable`` counts those elements);
    ``fd_disagreements`` counts the elements where FD is reliable and
    disagrees with the candidate.
    """

    path: str
    shape: tuple
    passed: bool
    failures: int
    index: tuple
    candidate: float
    autodiff: float
    finite_difference: float | None
    abs_error: float
    rel_error: float
    fd_abs_error: float | None
    fd_rel_error: float | None
    fd_reliable: bool | None
    fd_disagreements: int | None
    fd_unreliable: int | None
    fd_status: str

    @property
    def where(self) -> str:
        """The worst element, e.g. ``[0]['W'][1, 0]``."""
        return self.path + (f"[{', '.join(map(str, self.index))}]" if self.index else "")


@dataclasses.dataclass(frozen=True)
class DirectionRow:
    """One random unit direction ``v``: ``<candidate, v>`` vs ``<autodiff, v>`` vs FD along ``v``."""

    index: int
    candidate: float
    autodiff: float
    finite_difference: float
    rel_error: float
    fd_rel_error: float
    passed: bool
    fd_reliable: bool
    fd_disagrees: bool
    fd_status: str


@dataclasses.dataclass(frozen=True)
class GradCheckReport:
    """What ``check_grad`` found: a row per leaf (and per direction), the verdict and the settings used.

    ``scale`` is ``max|autodiff|``, the value scale the default ``atol`` and
    the FD tolerance are relative to; ``loss`` is the loss at the point.
    """

    name: str
    mode: str
    rows: tuple[LeafRow, ...]
    directions: tuple[DirectionRow, ...]
    message: str
    loss: float
    scale: float
    rtol: float
    atol: float
    eps: float
    fd_rtol: float

    @property
    def ok(self) -> bool:
        """True when the candidate agrees with autodiff everywhere."""
        return all(r.passed for r in self.rows) and all(d.passed for d in self.directions)

    @property
    def fd_agrees(self) -> bool:
        """False when FD disagrees with the candidate somewhere it is reliable."""
        return not any(r.fd_disagreements for r in self.rows) and not any(d.fd_disagrees for d in self.directions)

    @property
    def max_rel_error(self) -> float:
        """The largest relative error of the candidate against autodiff."""
        return max((r.rel_error for r in self.rows), default=0.0)

    def table(self) -> str:
        """The rows as a plain-text table (the directions below it in directional mode)."""
        leaves = table(
            [
                [r.path, r.index or "", r.candidate, r.autodiff, _dash(r.finite_difference), r.abs_error, r.rel_error,
                 _dash(r.fd_abs_error), _dash(r.fd_rel_error), "pass" if r.passed else "FAIL", r.fd_status]
                for r in self.rows
            ],
            ["leaf", "worst", self.name, "autodiff", "finite diff", "abs err", "rel err", "fd abs err", "fd rel err",
             "result", "finite differences"],
        )
        if not self.directions:
            return leaves
        directions = table(
            [
                [d.index, d.candidate, d.autodiff, d.finite_difference, d.rel_error, d.fd_rel_error,
                 "pass" if d.passed else "FAIL", d.fd_status]
                for d in self.directions
            ],
            ["direction", f"<{self.name}, v>", "<autodiff, v>", "finite diff", "rel err", "fd rel err", "result",
             "finite differences"],
        )
        return f"{leaves}\n\n{directions}"

    def to_dict(self) -> dict:
        """A JSON-ready dict; non-finite numbers become ``None``."""
        d = dataclasses.asdict(self)
        d.update(ok=self.ok, fd_agrees=self.fd_agrees, max_rel_error=self.max_rel_error)
        return _finite(d)


def check_grad(grad_fn, loss_fn, params, x, y, *, mode="full", rtol=None, atol=None, eps=None, key=None,
               fd_rtol=None, directions=8, name=None) -> GradCheckReport:
    """Check ``grad_fn`` against ``jax.grad(loss_fn)`` and finite differences, in float64.

    ``grad_fn(params, x, y)`` returns a pytree shaped like ``params``;
    ``loss_fn(params, x, y)`` is any pure scalar loss over any pytree.
    ``mode="full"`` differences every element (``2·size`` loss evaluations,
    vmapped); ``"directional"`` only ``directions`` random unit directions
    drawn from ``key`` (default ``jax.random.key(0)``), and still compares
    the candidate with autodiff element by element. Defaults: ``rtol`` from
    the candidate's dtype (1e-9 for float64), ``atol = rtol·max|autodiff|``,
    ``eps = 1e-6``, ``fd_rtol = 1e-3``; with the default ``atol`` an error
    counts relative to ``max|autodiff|`` where an element is smaller than
    that, so near-zero elements don't blow it up (``atol=0``: purely
    relative). ``name`` (default from the type, ``ManualGrad`` ->
    ``"manual"``) labels the candidate in the report. The x64 flag is the
    caller's again on return, also when the loss raises.

    >>> import jmlp, jax.numpy as jnp
    >>> model = jmlp.MLP((3, 5, 2), "tanh")
    >>> params = model.init(jax.random.key(0))
    >>> x, y = jax.random.normal(jax.random.key(1), (8, 3)), jnp.zeros((8, 2))
    >>> report = check_grad(jmlp.manual_grad(model, "mse"), jmlp.loss_fn(model, "mse"), params, x, y)
    >>> report.ok, [r.path for r in report.rows]
    (True, ["[0]['W']", "[0]['b']", "[1]['W']", "[1]['b']"])
    >>> print(report.message)
    manual agrees with autodiff (max rel error ...; rtol 1e-09) and with finite differences at all 32 elements (...)
    """
    if mode not in MODES:
        raise unknown_name("mode", mode, MODES)
    eps = _positive("eps", EPS if eps is None else eps)
    fd_rtol = _positive("fd_rtol", FD_RTOL if fd_rtol is None else fd_rtol)
    rtol = None if rtol is None else _positive("rtol", rtol)
    atol = None if atol is None else _positive("atol", atol, allow_zero=True)
    if isinstance(directions, bool) or not isinstance(directions, int) or directions < 1:
        raise BadValue(f"directions must be a positive integer, got {directions!r}")
    name = candidate_name(grad_fn) if name is None else str(name)
    # The context manager gives the caller's flag back on every exit, exceptions included.
    with jax.enable_x64(True):
        params, x, y = _params_to_float64(params), _to_float64(x), _to_float64(y)
        candidate = grad_fn(params, x, y)
        _check_like(candidate, params, name)
        if rtol is None:
            itemsize = min(jnp.result_type(g).itemsize for g in jax.tree.leaves(candidate))
            rtol = RTOLS.get(itemsize, RTOLS[8])
        p, loss_at = _flat(params), _batched_loss(loss_fn, params, x, y)
        if p.size == 0:
            raise BadValue("params has no elements to check")
        c, a = _flat(candidate), _flat(jax.grad(loss_fn)(params, x, y))
        loss = float(loss_fn(params, x, y))
        if mode == "full":
            h = eps * np.maximum(1.0, np.abs(p))

            def step(i, sign):  # element i moved by sign·h_i
                E = np.zeros((i.size, p.size))
                E[np.arange(i.size), i] = sign * h[i]
                return E

            up, down = (p + h) - p, p - (p - h)  # the steps taken, after rounding
        else:
            key = jax.random.key(key) if isinstance(key, int) else jax.random.key(0) if key is None else key
            V = np.asarray(jax.random.normal(key, (directions, p.size), jnp.float64))
            V = V / np.linalg.norm(V, axis=1, keepdims=True)
            # Unit directions: a step of eps relative to the whole parameter vector.
            h = np.full(directions, eps * max(1.0, float(np.linalg.norm(p))))

            def step(i, sign):  # along direction i by sign·h
                return sign[:, None] * h[i, None] * V[i]

            up = down = h
        plus, minus = _losses_around(loss_at, p, step, h.size)
        fd = _Differences(loss, plus, minus, up, down)
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    paths = [jax.tree_util.keystr(k) for k, _ in leaves]
    shapes = [tuple(np.shape(leaf)) for _, leaf in leaves]
    scale = float(np.max(np.abs(a), initial=0.0))
    atol = rtol * scale if atol is None else atol
    e = _Elements.compare(c, a, fd if mode == "full" else None, rtol, atol, fd_rtol, scale)
    rows, worst = _leaf_rows(paths, shapes, e)
    dirs = _direction_rows(V, c, a, fd, rtol, atol, fd_rtol) if mode == "directional" else ()
    message = _message(name, rows, worst, dirs, e, rtol, fd_rtol)
    return GradCheckReport(name, mode, rows, dirs, message, float(loss), scale, float(rtol), float(atol), eps, fd_rtol)


def candidate_name(grad_fn) -> str:
    """The name a report gives a gradient function: ``ManualGrad`` -> ``"manual"``, else ``"candidate"``.

    >>> import jmlp
    >>> candidate_name(jmlp.manual_grad(jmlp.MLP((2, 1)), "mse")), candidate_name(lambda p, x, y: p)
    ('manual', 'candidate')
    """
    cls = type(grad_fn).__name__
    return cls[: -len("Grad")].lower() if cls.endswith("Grad") and cls != "Grad" else "candidate"


def _batched_loss(loss_fn, params, x, y):
    """``P (k, n) -> L`` at each row of ``P``, a flat float64 parameter vector."""
    leaves, treedef = jax.tree.flatten(params)
    shapes = [np.shape(leaf) for leaf in leaves]
    bounds = np.cumsum([0] + [math.prod(s) for s in shapes]).tolist()

    def loss_at(v):
        return loss_fn(treedef.unflatten([v[i:j].reshape(s) for i, j, s in zip(bounds, bounds[1:], shapes)]), x, y)

    # Eager on purpose: op-by-op dispatch reuses each primitive's compilation
    # across losses and architectures, where one jit per (loss, shapes) would
    # spend ~0.5 s compiling on a CPU for work that then runs in milliseconds.
    return jax.vmap(loss_at)


def _losses_around(loss_at, p, step, count):
    """``L(p + step(i, +1))`` and ``L(p + step(i, -1))`` for ``i < count``, vmapped in chunks of one shape."""
    total = 2 * count
    chunk = max(1, min(max(total, MIN_CHUNK), CHUNK_ELEMENTS // p.size))
    out = []
    for start in range(0, total, chunk):
        # The last (or only) chunk wraps round to the first rows, so every chunk has one shape.
        k = np.arange(start, start + chunk) % total
        out.append(np.asarray(loss_at(p + step(k % count, np.where(k < count, 1.0, -1.0)))))
    losses = np.concatenate(out)[:total]
    return losses[:count], losses[count:]


@dataclasses.dataclass(frozen=True)
class _Differences:
    """Loss values around ``p``: ``L(p)``, ``L(p + up)``, ``L(p - down)``, and the steps."""

    loss: np.ndarray
    plus: np.ndarray
    minus: np.ndarray
    up: np.ndarray
    down: np.ndarray

    def central(self):
        return (self.plus - self.minus) / (self.up + self.down)

    def kink(self):
        # Half the gap between the one-sided differences: how far the central
        # difference can be from the derivative on either side of a kink.
        forward = (self.plus - self.loss) / self.up
        backward = (self.loss - self.minus) / self.down
        return np.abs(forward - backward) / 2

    def noise(self):
        ulp = np.spacing(np.maximum(np.abs(self.loss), np.maximum(np.abs(self.plus), np.abs(self.minus))))
        return NOISE_ULPS * ulp / np.minimum(self.up, self.down)


@dataclasses.dataclass(frozen=True)
class _Elements:
    """Element-wise comparisons over the flat parameter vector."""

    c: np.ndarray
    a: np.ndarray
    err: np.ndarray
    rel: np.ndarray
    passed: np.ndarray
    fd: np.ndarray | None = None
    fd_err: np.ndarray | None = None
    fd_rel: np.ndarray | None = None
    kink: np.ndarray | None = None
    flat: np.ndarray | None = None
    disagrees: np.ndarray | None = None
    fd_sides_with: np.ndarray | None = None  # "autodiff", "candidate" or "" per element

    @classmethod
    def compare(cls, c, a, fd, rtol, atol, fd_rtol, scale):
        err = np.abs(c - a)
        rel = _rel(err, np.maximum(np.abs(a), atol / rtol))
        passed = rel <= rtol  # NaN fails
        if fd is None:
            return cls(c, a, err, rel, passed)
        g = fd.central()
        tol = fd_rtol * np.maximum(np.abs(g), scale)
        fd_err = np.abs(c - g)
        fd_rel = _rel(fd_err, tol / fd_rtol)
        kink, flat = fd.kink() > tol, fd.noise() > tol
        disagrees = ~(fd_err <= tol) & ~kink & ~flat
        sides = np.where(np.abs(a - g) <= tol, "autodiff", np.where(fd_err <= tol, "candidate", ""))
        return cls(c, a, err, rel, passed, g, fd_err, fd_rel, kink, flat, disagrees, sides)


def _leaf_rows(paths, shapes, e: _Elements):
    rows, worst, start = [], [], 0
    for path, shape in zip(paths, shapes):
        size = math.prod(shape)
        s = slice(start, start + size)
        start += size
        if size == 0:
            rows.append(LeafRow(path, shape, True, 0, (), math.nan, math.nan, None, 0.0, 0.0, None, None, None, None, None, "empty"))
            worst.append(None)
            continue
        passed = e.passed[s]
        if e.fd is None:
            i = _worst((~passed, e.rel[s]), (passed, e.rel[s]))
            fd = dict(finite_difference=None, fd_abs_error=None, fd_rel_error=None, fd_reliable=None,
                      fd_disagreements=None, fd_unreliable=None, fd_status="not run (directional)")
        else:
            unreliable = e.kink[s] | e.flat[s]
            i = _worst((~passed, e.rel[s]), (e.disagrees[s], e.fd_rel[s]), (unreliable, e.fd_rel[s]), (passed, e.rel[s]))
            fd = dict(finite_difference=float(e.fd[s][i]), fd_abs_error=float(e.fd_err[s].max()),
                      fd_rel_error=float(e.fd_rel[s].max()), fd_reliable=not bool(unreliable.any()),
                      fd_disagreements=int(e.disagrees[s].sum()), fd_unreliable=int(unreliable.sum()),
                      fd_status=_fd_status(e.disagrees[s], e.kink[s], e.flat[s]))
        rows.append(LeafRow(
            path=path,
            shape=shape,
            passed=bool(passed.all()),
            failures=int((~passed).sum()),
            index=tuple(int(k) for k in np.unravel_index(i, shape)),
            candidate=float(e.c[s][i]),
            autodiff=float(e.a[s][i]),
            abs_error=float(np.max(e.err[s])),
            rel_error=float(np.max(e.rel[s])),
            **fd,
        ))
        worst.append(s.start + i)
    return tuple(rows), worst


def _direction_rows(V, c, a, fd, rtol, atol, fd_rtol):
    cv, av, g = V @ c, V @ a, fd.central()
    # |<c - a, v>| <= ||c - a|| for a unit v: with this floor, agreeing elements imply agreeing directions.
    floor = float(np.linalg.norm(np.maximum(np.abs(a), atol / rtol)))
    rel = _rel(np.abs(cv - av), np.maximum(np.abs(av), floor))
    tol = fd_rtol * np.maximum(np.abs(g), np.linalg.norm(a))
    fd_err = np.abs(cv - g)
    kink, flat = fd.kink() > tol, fd.noise() > tol
    disagrees = ~(fd_err <= tol) & ~kink & ~flat
    return tuple(
        DirectionRow(k, float(cv[k]), float(av[k]), float(g[k]), float(rel[k]), float(_rel(fd_err[k], tol[k] / fd_rtol)),
                     bool(rel[k] <= rtol), not bool(kink[k] or flat[k]), bool(disagrees[k]),
                     _fd_status(disagrees[k : k + 1], kink[k : k + 1], flat[k : k + 1]))
        for k in range(len(g))
    )


def _worst(*candidates) -> int:
    # The element to show: the first (mask, score) pair whose mask selects any, at its top score (NaN on top).
    for mask, score in candidates:
        if mask.any():
            return int(np.argmax(np.where(mask, np.nan_to_num(score, nan=np.inf), -np.inf)))
    return 0


def _fd_status(disagrees, kink, flat) -> str:
    n = disagrees.size

    def at(mask):
        return f" at {int(mask.sum())} of {n}" if n > 1 else ""

    unreliable = [f"{what}{at(mask)}" for what, mask in (("kink", kink), ("too flat", flat)) if mask.any()]
    parts = [f"disagrees{at(disagrees)}"] if disagrees.any() else []
    if unreliable:
        parts.append("unreliable: " + ", ".join(unreliable))
    return "; ".join(parts) or "agrees"


def _message(name, rows, worst, dirs, e: _Elements, rtol, fd_rtol) -> str:
    n = e.c.size
    failing = [(r, i) for r, i in zip(rows, worst) if not r.passed]
    if failing:
        r, i = max(failing, key=lambda ri: np.nan_to_num(ri[0].rel_error, nan=np.inf))
        text = f"{name} vs autodiff at {r.where}: {r.candidate:.6g} vs {r.autodiff:.6g}"
        if e.fd is not None:
            if e.kink[i] or e.flat[i]:
                side = "unreliable there"
            else:
                side = {"autodiff": "siding with autodiff",
                        "candidate": f"siding with {name}: the loss's autodiff derivative may be wrong"}.get(e.fd_sides_with[i], "matching neither")
            text += f" (finite differences: {r.finite_difference:.6g}, {side})"
        bad = sum(r.failures for r, _ in failing)
        text += f"; {bad} of {n} elements fail in {_count(len(failing), 'leaf', 'leaves')} (rtol {rtol:.3g})"
        if dirs:
            text += f"; {sum(not d.passed for d in dirs)} of {len(dirs)} random directions fail"
        return text
    agree = f"{name} agrees with autodiff (max rel error {max(r.rel_error for r in rows):.2g}; rtol {rtol:.3g})"
    if dirs:
        if not all(d.passed for d in dirs):
            d = next(d for d in dirs if not d.passed)
            return f"{name} vs autodiff along random direction {d.index}: {d.candidate:.6g} vs {d.autodiff:.6g} (rtol {rtol:.3g})"
        if any(d.fd_disagrees for d in dirs):
            d = next(d for d in dirs if d.fd_disagrees)
            return (f"{agree}, but finite differences disagree with both along random direction {d.index}: "
                    f"{d.finite_difference:.6g} vs {d.autodiff:.6g}, where they should be reliable: {_SUSPECT_LOSS}")
        unreliable = [d for d in dirs if not d.fd_reliable]
        if unreliable:
            return (f"{agree}; finite differences agree along {len(dirs) - len(unreliable)} of {len(dirs)} random "
                    f"directions and are unreliable along {len(unreliable)} ({_reasons(unreliable)})")
        return f"{agree} and with finite differences along all {len(dirs)} random directions"
    fd_rel = f"max rel error {float(np.max(e.fd_rel)):.2g}; fd_rtol {fd_rtol:.3g}"
    if e.disagrees.any():
        r = max((r for r in rows if r.fd_disagreements), key=lambda r: r.fd_rel_error)
        return (f"{agree}, but finite differences disagree with both at {r.where}: {r.finite_difference:.6g} vs "
                f"{r.autodiff:.6g}, where they should be reliable ({int(e.disagrees.sum())} of {n} elements): {_SUSPECT_LOSS}")
    unreliable = e.kink | e.flat
    if unreliable.any():
        r = next(r for r in rows if r.fd_reliable is False)
        return (f"{agree}; finite differences agree except at {int(unreliable.sum())} of {n} elements where they are "
                f"unreliable ({_reasons([r for r in rows if r.fd_reliable is False])}; e.g. at {r.where} they give "
                f"{r.finite_difference:.6g}, autodiff {r.autodiff:.6g})")
    return f"{agree} and with finite differences at all {n} elements ({fd_rel})"


_SUSPECT_LOSS = "the loss may be non-differentiable there, or its autodiff derivative wrong"


def _reasons(rows) -> str:
    kinds = [("kink", "a kink within eps"), ("too flat", "a loss too flat for float64")]
    return " and ".join(text for key, text in kinds if any(key in r.fd_status for r in rows))


def _count(k, one, many):
    return f"{k} {one if k == 1 else many}"


def _rel(err, ref):
    # err / ref, with 0/0 = 0 and x/0 = inf.
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ref > 0, err / np.where(ref > 0, ref, 1.0), np.where(err == 0, 0.0, np.inf))


def _dash(v):
    return "-" if v is None else v


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _positive(name, value, *, allow_zero=False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise BadType(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise BadValue(f"{name} must be {'non-negative' if allow_zero else 'positive'} and finite, got {value!r}")
    return value


def _params_to_float64(params):
    def cast(path, leaf):
        leaf = np.asarray(leaf)
        if not np.issubdtype(leaf.dtype, np.floating):
            raise BadType(f"params leaf {jax.tree_util.keystr(path)} has dtype {leaf.dtype}; check_grad needs floating parameters")
        return jnp.asarray(leaf.astype(np.float64))  # through NumPy: no conversion to compile per shape

    return jax.tree_util.tree_map_with_path(cast, params)


def _to_float64(tree):
    # Floats go to float64; integer labels stay integers.
    def cast(leaf):
        a = np.asarray(leaf)
        return jnp.asarray(a.astype(np.float64)) if np.issubdtype(a.dtype, np.floating) else jnp.asarray(leaf)

    return jax.tree.map(cast, tree)


def _flat(tree) -> np.ndarray:
    """The leaves of ``tree`` as one float64 NumPy vector, in ``jax.tree.leaves`` order."""
    leaves = [np.asarray(leaf, np.float64).reshape(-1) for leaf in jax.tree.leaves(tree)]
    return np.concatenate(leaves) if leaves else np.zeros(0)


def _check_like(candidate, params, name):
    if jax.tree.structure(candidate) != jax.tree.structure(params):
        raise BadValue(f"{name} returned a pytree of structure {jax.tree.structure(candidate)}, "
                       f"not that of params, {jax.tree.structure(params)}")
    for (path, g), p in zip(jax.tree_util.tree_flatten_with_path(candidate)[0], jax.tree.leaves(params)):
        if jnp.shape(g) != jnp.shape(p):
            raise BadValue(f"{name} returned shape {jnp.shape(g)} at {jax.tree_util.keystr(path)}, where params have {jnp.shape(p)}")
