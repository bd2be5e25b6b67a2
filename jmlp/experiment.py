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


def run_sweep(config: dict, progress=None):
    """The config's learning-rate x seed grid as one ``jmlp.sweep``; returns the result."""
    from .config import learning_rate_grid
    from .sweep import sweep

    t, sw = config["train"], config["sweep"]
    if sw["learning_rates"] is None:
        raise BadValue("config has no [sweep] learning_rates: add a list, or a table {start, stop, num, spacing}")
    dataset, model, params = build(config)
    x, y, x_val, y_val = arrays(dataset)
    return sweep(
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
        chunk_steps=sw["chunk_steps"] or (max(1, t["steps"] // 100) if progress else None),
        progress=progress,
    )


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
