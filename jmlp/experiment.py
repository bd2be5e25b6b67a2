"""From a resolved config to a trained run and its summary (no files written here)."""

import os

import jax
import jax.numpy as jnp
import numpy as np

from . import data as data_lib
from .errors import BadValue
from .fit import fit
from .gradients import loss_fn
from .losses import get_loss
from .model import MLP
from .optim import make_optimizer
from .sweep import Sweep


def build(config: dict):
    """``(dataset, model, params)`` from a resolved config, with cross-checks.

    Raises a one-line error when the model and data don't fit together, e.g.
    ``[model] sizes[0] = 3 but the seed data has 2 features``.
    """
    d, m, t = config["data"], config["model"], config["train"]
    options = {}
    if d["source"] == "synthetic":
        options = {"n_samples": d["n_samples"], "noise": d["noise"], "seed": d["seed"]}
    elif d["source"] == "csv":
        options = {"path": d["path"], "target": d["target"]}
    dataset = data_lib.load(
        d["source"],
        val_fraction=d["val_fraction"],
        standardize=d["standardize"],
        standardize_target=d["standardize_target"],
        split_seed=d["seed"],
        **options,
    )
    model = MLP(tuple(m["sizes"]), m["activation"], m["weight_init"])
    loss = get_loss(t["loss"])
    make_optimizer(t["optimizer"], t["learning_rate"], **t["optimizer_options"])  # names and options checked now
    if model.sizes[0] != dataset.n_features:
        raise BadValue(f"[model] sizes[0] = {model.sizes[0]} but the {d['source']} data has {dataset.n_features} features")
    if dataset.classes is not None:
        if loss.targets != "labels":
            raise BadValue(f"[train] loss = {loss.name!r} needs real-valued targets, but {d['source']} has class labels: use 'softmax_cross_entropy'")
        if model.sizes[-1] != dataset.classes:
            raise BadValue(f"[model] sizes[-1] = {model.sizes[-1]} but {d['source']} has {dataset.classes} classes")
    else:
        if loss.targets == "labels":
            raise BadValue(f"[train] loss = {loss.name!r} needs class labels, but {d['source']} is a regression data set")
        if model.sizes[-1] != dataset.y_train.shape[1]:
            raise BadValue(f"[model] sizes[-1] = {model.sizes[-1]} but {d['source']} has {dataset.y_train.shape[1]} target column(s)")
    if t["batch_size"] is not None and t["batch_size"] > dataset.x_train.shape[0]:
        raise BadValue(f"[train] batch_size = {t['batch_size']} is larger than the {dataset.x_train.shape[0]} training rows")
    if m["params"] is not None:
        params = explicit_params(m["params"], model)
    else:
        params = model.init(jax.random.key(t["seed"]))
    return dataset, model, params


def explicit_params(layers, model: MLP):
    """Parameters written out in the config (``[[model.params]]`` tables of W and b)."""
    params = []
    for i, layer in enumerate(layers):
        if set(layer) != {"W", "b"}:
            raise BadValue(f"[model] params[{i}] must have exactly the keys W and b, got {sorted(layer)}")
        try:
            params.append({k: jnp.asarray(np.array(v, dtype=np.float32)) for k, v in layer.items()})
        except (ValueError, TypeError):
            raise BadValue(f"[model] params[{i}] holds a ragged or non-numeric array") from None
    model.check(params, jnp.zeros((1, model.sizes[0])))
    return params


def arrays(dataset, dtype=jnp.float32):
    """Device arrays for the train and validation splits."""

    def cast(a, labels):
        return None if a is None else jnp.asarray(a, jnp.int32 if labels else dtype)

    labels = dataset.classes is not None
    return (cast(dataset.x_train, False), cast(dataset.y_train, labels), cast(dataset.x_val, False), cast(dataset.y_val, labels))


def evaluate(model, loss, params, x, y) -> dict:
    """Loss, and accuracy for classification, on one split."""
    out = {"loss": float(loss_fn(model, loss)(params, x, y))}
    if get_loss(loss).targets == "labels":
        out["accuracy"] = float(jnp.mean(jnp.argmax(model.apply(params, x), axis=-1) == y))
    elif get_loss(loss).name == "sigmoid_binary_cross_entropy":
        out["accuracy"] = float(jnp.mean((model.apply(params, x) > 0) == (y > 0.5)))
    return out


def environment() -> dict:
    """What the numbers were computed with."""
    import optax

    return {
        "jax": jax.__version__,
        "optax": optax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_cores": os.cpu_count(),
        "process_count": jax.process_count(),
    }


def plan_sweep(config: dict):
    """The config's learning-rate x seed grid as a ``jmlp.sweep.Sweep``, validated and
    placed on the devices but not yet run (nothing compiles here)."""
    from .config import learning_rate_grid

    t, sw = config["train"], config["sweep"]
    if sw["learning_rates"] is None:
        raise BadValue("config has no [sweep] learning_rates: add a list, or a table {start, stop, num, spacing}")
    dataset, model, params = build(config)
    x, y, x_val, y_val = arrays(dataset)
    return Sweep(
        model,
        x,
        y,
        loss=t["loss"],
        optimizer=t["optimizer"],
        optimizer_options=t["optimizer_options"],
        learning_rates=learning_rate_grid(sw["learning_rates"]),
        seeds=sw["seeds"],
        grad=t["grad"],
        steps=t["steps"],
        tol=t["tol"],
        batch_size=t["batch_size"],
        x_val=x_val,
        y_val=y_val,
        params=params if config["model"]["params"] is not None else None,
    )


class Interrupted(Exception):
    """A sweep stopped on request at step ``done``; ``checkpoint`` is where it was saved (or None)."""

    def __init__(self, done: int, checkpoint):
        super().__init__(f"interrupted at step {done}")
        self.done, self.checkpoint = done, checkpoint


def run_sweep(config: dict, progress=None, *, plan=None, checkpoints=None, resume=None, stop=None, save=None):
    """Run the config's sweep chunk by chunk and return its ``SweepResult``.

    With ``checkpoints`` (a folder) the state is saved at step 0, every
    ``[sweep] checkpoint_every`` steps (default a tenth of the run) and when
    ``stop()`` turns true, which then raises ``Interrupted``; ``resume`` (a
    loaded checkpoint) continues from its step. ``save`` writes a snapshot
    (default ``checkpoint.save``; under ``jax.distributed`` only process 0's
    writes). Chunking never changes the numbers: each step depends only on the
    state, and ``loop.advance``'s blocks and replays run one loop body.
    """
    from . import checkpoint as ckpt

    sweep = plan if plan is not None else plan_sweep(config)
    steps, sw = sweep.steps, config["sweep"]
    save = save or (lambda folder, snapshot: ckpt.save(folder, snapshot, config))
    watched = progress is not None or checkpoints is not None or stop is not None
    chunk = sw["chunk_steps"] or (max(1, steps // 100) if watched else steps)
    every = sw["checkpoint_every"] or max(1, steps // 10)
    saved = None  # (step, path) of the newest checkpoint
    if resume is not None:
        sweep.restore(resume)
        saved = (sweep.done, resume.get("path"))
    elif checkpoints is not None:
        saved = (0, save(checkpoints, sweep.snapshot()))

    def next_multiple(n, k):
        return (n // k + 1) * k

    while sweep.done < steps:
        target = min(next_multiple(sweep.done, chunk), next_multiple(sweep.done, every) if checkpoints else steps, steps)
        sweep.advance(target)
        if progress is not None:
            progress(sweep.done, steps)
        finished = sweep.done >= steps or not sweep.active
        stopping = stop is not None and stop() and not finished
        due = stopping or sweep.done % every == 0
        if checkpoints is not None and not finished and due and saved[0] != sweep.done:
            saved = (sweep.done, save(checkpoints, sweep.snapshot()))
        if stopping:
            raise Interrupted(sweep.done, saved[1] if saved else None)
        if finished:
            if progress is not None:
                progress(steps, steps)
            break
    return sweep.result()


def sweep_report(config: dict, result) -> dict:
    """What ``results.json`` holds: every run, the aggregate per learning rate, the best."""
    return {
        "runs": result.runs(),
        "aggregate": result.aggregate(),
        "best": result.best(),
        "config": config,
        "environment": environment(),
    }


def train(config: dict) -> dict:
    """Run the config's one training run and return its summary.

    >>> from jmlp.config import load
    >>> summary = train(load("experiments/configs/seed.toml"))
    >>> summary["steps"] <= 1000 and summary["train"]["loss"] < 1e-6
    True
    """
    t = config["train"]
    dataset, model, params = build(config)
    x, y, x_val, y_val = arrays(dataset)
    result = fit(
        model,
        params,
        x,
        y,
        loss=t["loss"],
        optimizer=t["optimizer"],
        optimizer_options=t["optimizer_options"],
        learning_rate=t["learning_rate"],
        grad=t["grad"],
        steps=t["steps"],
        tol=t["tol"],
        batch_size=t["batch_size"],
        key=jax.random.key(t["seed"]),
    )
    summary = {
        "train": evaluate(model, t["loss"], result.params, x, y),
        "validation": None if x_val is None else evaluate(model, t["loss"], result.params, x_val, y_val),
        "steps": result.steps,
        "converged": result.converged,
        "first_loss": float(result.losses[0]),
        "last_step_loss": float(result.losses[-1]),
        "config": config,
        "environment": environment(),
    }
    return summary
