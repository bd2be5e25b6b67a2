"""``jmlp gradcheck``: manual_grad of a random MLP against jax.grad and finite differences.

``add_parser(sub)`` adds the subcommand to the ``jmlp`` parser; ``check_mlp``
is the library call behind it. Exit 0 when every check passes, 1 when any
fails; bad input raises ``BadValue`` (exit 2 through ``jmlp.cli.main``).
"""

import argparse
import json
import math

import jax
import jax.numpy as jnp
import numpy as np

from .activations import ACTIVATIONS, get_activation
from .argtypes import integer, widths
from .check import MODES, GradCheckReport, check_grad
from .errors import BadValue, unknown_name
from .fit import check_positive_int
from .gradients import loss_fn, manual_grad
from .losses import LOSSES, get_loss
from .model import MLP
from .report import table

# --all: depths 2 to 4 with shared widths (non-square first and last layers,
# square ones between), so the deeper nets reuse the shallow one's compiled ops.
ARCHITECTURES = ((3, 5, 2), (3, 5, 5, 2), (3, 5, 5, 5, 2))
DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
DEFAULTS = {"sizes": (2, 4, 1), "activation": "relu", "loss": "half_squared_error"}


def check_mlp(sizes, activation="relu", loss="half_squared_error", *, batch=8, seed=0, mode="full",
              dtype="float32") -> GradCheckReport:
    """``check_grad`` of ``manual_grad`` for a random ``MLP(sizes, activation)`` on random data.

    Weights come from ``MLP.init``, biases are normal with scale 0.1, ``x``
    is standard normal, ``y`` fits the loss (labels, 0/1 targets or normal
    values), all drawn from ``seed`` and given to ``check_grad`` in
    ``dtype``; the check itself runs in float64.

    >>> report = check_mlp((2, 4, 1), "relu", "half_squared_error", seed=3)
    >>> report.ok, report.name, report.rows[0].path
    (True, 'manual', "[0]['W']")
    """
    model = MLP(tuple(sizes), activation)
    target = get_loss(loss)
    if target.targets == "labels" and model.sizes[-1] < 2:
        raise BadValue(f"loss {target.name!r} needs an output width of at least 2, got sizes {_text(model.sizes)} "
                       f"(output width {model.sizes[-1]})")
    batch = check_positive_int("batch", batch)
    seed = _check_seed(seed)
    if mode not in MODES:
        raise unknown_name("mode", mode, MODES)
    if dtype not in DTYPES:
        raise unknown_name("dtype", dtype, DTYPES)
    # Data from NumPy: nothing to compile per shape (the sweep's setup would otherwise outweigh its checks).
    rng = np.random.default_rng(seed)
    width = model.sizes[-1]
    x = rng.standard_normal((batch, model.sizes[0])).astype(dtype)
    if target.targets == "labels":
        y = rng.integers(0, width, batch).astype(np.int32)
    elif target.name == "sigmoid_binary_cross_entropy":
        y = rng.integers(0, 2, (batch, width)).astype(dtype)
    else:
        y = rng.standard_normal((batch, width)).astype(dtype)
    k_params, k_directions = jax.random.split(jax.random.key(seed))
    # Weights from MLP.init in float32, widened by NumPy (a float64 init
    # would compile again per shape); biases random too: with init's zeros, a
    # sample whose hidden ReLUs are all off puts the next layer exactly on its
    # kink, where FD can't judge.
    params = [
        {"W": np.asarray(layer["W"]).astype(dtype), "b": (0.1 * rng.standard_normal(layer["b"].shape)).astype(dtype)}
        for layer in model.init(k_params)
    ]
    return check_grad(manual_grad(model, target.name), loss_fn(model, target.name), params, x, y, mode=mode,
                      key=k_directions)


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``gradcheck`` subcommand to the ``jmlp`` subparsers ``sub``."""
    g = sub.add_parser(
        "gradcheck",
        help="check the hand-derived gradient against jax.grad and finite differences",
        description="Check jmlp.manual_grad of a random MLP against jax.grad (the verdict) and central finite "
        "differences (a second witness), in float64. Exit 0 when every check passes, 1 when any fails.",
    )
    g.add_argument("--sizes", type=widths, help="layer widths, comma-separated (default 2,4,1)")
    g.add_argument("--activation", help=f"hidden activation (default relu; one of {', '.join(sorted(ACTIVATIONS))})")
    g.add_argument("--loss", help=f"loss (default half_squared_error; one of {', '.join(sorted(LOSSES))})")
    g.add_argument("--batch", type=integer, default=8, help="rows of random data (default 8)")
    g.add_argument("--seed", type=integer, default=0, help="seed of the parameters and data (default 0)")
    g.add_argument("--mode", default="full", help="full: difference every element; directional: 8 random directions")
    g.add_argument("--dtype", default="float32", help="dtype of parameters and data, float32 or float64 (default "
                   "float32; the check runs in float64 either way)")
    g.add_argument("--all", action="store_true", help="sweep every activation x loss on "
                   f"{'; '.join(_text(s) for s in ARCHITECTURES)} and print one summary table")
    g.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g.set_defaults(run=run)
    return g


def run(args) -> int:
    """Run ``jmlp gradcheck``: 0 when every check passes, 1 when any fails."""
    if args.mode not in MODES:
        raise unknown_name("--mode", args.mode, MODES)
    if args.dtype not in DTYPES:
        raise unknown_name("--dtype", args.dtype, DTYPES)
    options = dict(batch=args.batch, seed=args.seed, mode=args.mode, dtype=args.dtype)
    if args.all:
        given = [f"--{name}" for name in DEFAULTS if getattr(args, name) is not None]
        if given:
            raise BadValue(f"--all sweeps every architecture, activation and loss; drop {', '.join(given)}")
        return _run_all(options, args.json)
    case = {name: default if getattr(args, name) is None else getattr(args, name) for name, default in DEFAULTS.items()}
    get_activation(case["activation"])  # a bad name fails here, before any work
    get_loss(case["loss"])
    report = check_mlp(case["sizes"], case["activation"], case["loss"], **options)
    if args.json:
        print(json.dumps({**_case(case, options), "report": report.to_dict()}))
        return 0 if report.ok else 1
    print(f"gradcheck: manual_grad of MLP({case['sizes']}, {case['activation']!r}) under {case['loss']}, "
          f"batch {args.batch}, seed {args.seed}, {args.dtype} inputs checked in float64, {args.mode} mode")
    print(report.table())
    print(report.message)
    print(f"settings: rtol {report.rtol:.3g}, atol {report.atol:.3g}, eps {report.eps:.3g}, fd_rtol {report.fd_rtol:.3g}")
    return 0 if report.ok else 1


def _run_all(options, as_json) -> int:
    cases = [
        {"sizes": sizes, "activation": activation, "loss": loss}
        for sizes in ARCHITECTURES
        for activation in sorted(ACTIVATIONS)
        for loss in sorted(LOSSES)
    ]
    reports = [check_mlp(**case, **options) for case in cases]
    ok = all(r.ok for r in reports)
    if as_json:
        checks = [{**_case(c, options), "report": r.to_dict()} for c, r in zip(cases, reports)]
        print(json.dumps({"ok": ok, "checks": checks}))
        return 0 if ok else 1
    rows = [
        [_text(c["sizes"]), c["activation"], c["loss"], r.max_rel_error, _fd_rel_error(r), "pass" if r.ok else "FAIL",
         _fd_summary(r)]
        for c, r in zip(cases, reports)
    ]
    print(table(rows, ["sizes", "activation", "loss", "rel err", "fd rel err", "result", "finite differences"]))
    failed = [(c, r) for c, r in zip(cases, reports) if not r.ok]
    print(f"{len(reports)} checks ({len(ACTIVATIONS)} activations x {len(LOSSES)} losses x {len(ARCHITECTURES)} "
          f"architectures, {options['mode']} mode, {options['dtype']} inputs): {len(reports) - len(failed)} pass, "
          f"{len(failed)} fail")
    for c, r in failed:
        print(f"  {_text(c['sizes'])} {c['activation']} {c['loss']}: {r.message}")
    return 0 if ok else 1


def _fd_rel_error(r: GradCheckReport) -> float:
    rows = [row.fd_rel_error for row in r.rows if row.fd_rel_error is not None]
    return max(rows + [d.fd_rel_error for d in r.directions], default=0.0)


def _fd_summary(r: GradCheckReport) -> str:
    if r.mode == "directional":
        bad = sum(d.fd_disagrees for d in r.directions)
        unreliable = sum(not d.fd_reliable for d in r.directions)
        of = f" of {len(r.directions)} directions"
    else:
        bad = sum(row.fd_disagreements for row in r.rows)
        unreliable = sum(row.fd_unreliable for row in r.rows)
        of = f" of {sum(math.prod(row.shape) for row in r.rows)}"
    if bad:
        return f"disagree at {bad}{of}"
    return f"unreliable at {unreliable}{of}" if unreliable else "agree"


def _case(case, options) -> dict:
    return {"sizes": list(case["sizes"]), "activation": case["activation"], "loss": case["loss"], **options}


def _text(sizes) -> str:
    return ",".join(map(str, sizes))


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise BadValue(f"seed must be an integer in [0, 2**32), got {seed!r}")
    return seed
