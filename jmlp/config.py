"""TOML experiment configs: load, override with ``--set``, validate, resolve defaults.

Configs are data (stdlib ``tomllib``), never executed. ``resolve`` returns a
plain dict with every key filled in, which is what reports record.
"""

import math
import tomllib
from pathlib import Path

from .errors import BadValue, unknown_name

REQUIRED = object()
NUMBER = (int, float)


def _positive_int(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _positive_number(v):
    return isinstance(v, NUMBER) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# section -> key -> (default, description of the allowed values, check)
SCHEMA = {
    "data": {
        "source": (REQUIRED, "one of seed, synthetic, diabetes, digits, csv", lambda v: v in ("seed", "synthetic", "diabetes", "digits", "csv")),
        "path": (None, "a file path (csv)", lambda v: isinstance(v, str)),
        "target": (None, "a column name (csv)", lambda v: isinstance(v, str)),
        "n_samples": (442, "a positive integer", _positive_int),
        "noise": (0.1, "a number >= 0", lambda v: isinstance(v, NUMBER) and not isinstance(v, bool) and math.isfinite(v) and v >= 0),
        "seed": (0, "an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
        "val_fraction": (0.0, "a number in [0, 1)", lambda v: isinstance(v, NUMBER) and not isinstance(v, bool) and 0 <= v < 1),
        "standardize": (False, "true or false", lambda v: isinstance(v, bool)),
        "standardize_target": (False, "true or false", lambda v: isinstance(v, bool)),
    },
    "model": {
        "sizes": (REQUIRED, "a list of at least 2 positive integers", lambda v: isinstance(v, list) and len(v) >= 2 and all(_positive_int(s) for s in v)),
        "activation": ("relu", "an activation name", lambda v: isinstance(v, str)),
        "weight_init": ("auto", "auto, he or glorot", lambda v: v in ("auto", "he", "glorot")),
        "params": (None, "a list of {W, b} tables, one per layer", lambda v: isinstance(v, list) and all(isinstance(p, dict) for p in v)),
    },
    "train": {
        "loss": (REQUIRED, "a loss name", lambda v: isinstance(v, str)),
        "optimizer": ("sgd", "an optimizer name", lambda v: isinstance(v, str)),
        "optimizer_options": ({}, "a table of optimizer arguments", lambda v: isinstance(v, dict)),
        "learning_rate": (REQUIRED, "a positive finite number", _positive_number),
        "grad": ("manual", "manual or autodiff", lambda v: v in ("manual", "autodiff")),
        "steps": (REQUIRED, "a positive integer", _positive_int),
        "tol": (None, "a positive finite number", _positive_number),
        "batch_size": (None, "a positive integer", _positive_int),
        "seed": (0, "an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    },
    "sweep": {
        "learning_rates": (None, "a list of positive numbers or a table {start, stop, num, spacing}", lambda v: isinstance(v, (list, dict))),
        "seeds": ([0], "a list of distinct integers >= 0", lambda v: isinstance(v, list) and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in v)),
        "chunk_steps": (None, "a positive integer", _positive_int),
        "checkpoint_every": (None, "a positive integer (steps between checkpoints)", _positive_int),
    },
}

GRID_KEYS = {"start", "stop", "num", "spacing"}
MAX_LEARNING_RATES = 1_000_000  # a bigger grid is a typo, and its list alone would take gigabytes


def learning_rate_grid(spec) -> list[float]:
    """The learning rates of ``[sweep] learning_rates``: a list, or a table
    ``{start, stop, num, spacing = "log" | "linear"}`` (both ends included).

    >>> learning_rate_grid({"start": 1e-3, "stop": 1e-1, "num": 3})
    [0.001, 0.01, 0.1]
    """
    if isinstance(spec, list):
        for v in spec:
            if not _positive_number(v):
                raise BadValue(f"config [sweep] learning_rates holds {v!r}: every learning rate must be a positive finite number")
        if not spec:
            raise BadValue("config [sweep] learning_rates is empty: give at least one learning rate")
        if len(spec) > MAX_LEARNING_RATES:
            raise BadValue(f"config [sweep] learning_rates holds {len(spec)} values, over the {MAX_LEARNING_RATES} one sweep takes")
        if len(set(spec)) != len(spec):
            raise BadValue(f"config [sweep] learning_rates has duplicates: {spec}")
        return [float(v) for v in spec]
    unknown = set(spec) - GRID_KEYS
    if unknown:
        raise unknown_name("key in [sweep] learning_rates", sorted(unknown)[0], GRID_KEYS)
    missing = {"start", "stop", "num"} - set(spec)
    if missing:
        raise BadValue(f"config [sweep] learning_rates table is missing {sorted(missing)}")
    start, stop, num, spacing = spec["start"], spec["stop"], spec["num"], spec.get("spacing", "log")
    for name, v in (("start", start), ("stop", stop)):
        if not _positive_number(v):
            raise BadValue(f"config [sweep] learning_rates.{name} = {v!r} must be a positive finite number")
    if not _positive_int(num) or num > MAX_LEARNING_RATES:
        raise BadValue(f"config [sweep] learning_rates.num = {num!r} must be an integer in 1..{MAX_LEARNING_RATES}")
    if spacing not in ("log", "linear"):
        raise BadValue(f"config [sweep] learning_rates.spacing = {spacing!r} must be 'log' or 'linear'")
    if num == 1:
        return [float(start)]
    if spacing == "log":
        grid = [math.exp(math.log(start) + (math.log(stop) - math.log(start)) * k / (num - 1)) for k in range(num)]
    else:
        grid = [start + (stop - start) * k / (num - 1) for k in range(num)]
    grid[0], grid[-1] = float(start), float(stop)  # exact ends, whatever the rounding
    return [float(f"{g:.12g}") for g in grid]


def read(path) -> dict:
    """Parse a TOML file, turning I/O and syntax problems into one-line errors."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise BadValue(f"config file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadValue(f"cannot read config file {str(path)!r}: {getattr(e, 'strerror', None) or e}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise BadValue(f"config file {str(path)!r} is not valid TOML: {e}") from None


def parse_override(text: str):
    """``"train.learning_rate=0.05"`` -> ``("train", "learning_rate", 0.05)``.

    The value is read as TOML (numbers, booleans, lists, quoted strings); a bare
    word that isn't TOML is taken as a string, so ``--set train.optimizer=adam`` works.
    """
    key, sep, raw = text.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not section or not name:
        raise BadValue(f"--set expects section.key=value, got {text!r}")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, name, value


def apply_overrides(config: dict, overrides) -> dict:
    """A copy of ``config`` with each ``section.key=value`` override applied."""
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for text in overrides or ():
        section, name, value = parse_override(text)
        config.setdefault(section, {})
        if not isinstance(config[section], dict):
            raise BadValue(f"--set {text!r}: [{section}] is not a table in the config")
        config[section][name] = value
    return config


def resolve(config: dict, schema=SCHEMA) -> dict:
    """Validate every section and key, fill in defaults, and return the full config.

    >>> resolve({"data": {"source": "seed"}, "model": {"sizes": [2, 2, 1]},
    ...          "train": {"loss": "mse", "learning_rate": 0.1, "steps": 10}})["train"]["optimizer"]
    'sgd'
    """
    for section in config:
        if section not in schema:
            raise unknown_name("config section", f"[{section}]", [f"[{s}]" for s in schema])
    out = {}
    for section, keys in schema.items():
        given = config.get(section, {})
        if not isinstance(given, dict):
            raise BadValue(f"config [{section}] must be a table, got {given!r}")
        for key in given:
            if key not in keys:
                raise unknown_name(f"key in [{section}]", key, keys)
        out[section] = {}
        for key, (default, allowed, check) in keys.items():
            if key not in given:
                if default is REQUIRED:
                    raise BadValue(f"config [{section}] is missing the required key {key!r} ({allowed})")
                out[section][key] = default
                continue
            value = given[key]
            if not check(value):
                raise BadValue(f"config [{section}] {key} = {value!r} is invalid: expected {allowed}")
            out[section][key] = value
    if out["sweep"]["learning_rates"] is not None:
        learning_rate_grid(out["sweep"]["learning_rates"])
    seeds = out["sweep"]["seeds"]
    if not seeds or len(set(seeds)) != len(seeds):
        raise BadValue(f"config [sweep] seeds = {seeds} must be a non-empty list of distinct integers")
    data = out["data"]
    if data["source"] == "csv" and (data["path"] is None or data["target"] is None):
        raise BadValue("config [data] source = 'csv' needs both path and target")
    return out


def load(path, overrides=()) -> dict:
    """Read, override and resolve a config file.

    A relative csv ``path`` is taken relative to the config file's folder, so a
    config and its data can move together.
    """
    config = resolve(apply_overrides(read(path), overrides))
    data = config["data"]
    if data["path"] is not None and not Path(data["path"]).is_absolute():
        data["path"] = str(Path(path).parent / data["path"])
    return config


def reload(resolved: dict, overrides=()) -> dict:
    """A resolved config (as a checkpoint stores it) with ``--set`` overrides applied and
    resolved again; unset keys (None) are left out first, as a config file would.

    >>> c = resolve({"data": {"source": "seed"}, "model": {"sizes": [2, 2, 1]},
    ...              "train": {"loss": "mse", "learning_rate": 0.1, "steps": 10}})
    >>> reload(c, ["train.steps=20"])["train"]["steps"]
    20
    """
    given = {s: {k: v for k, v in keys.items() if v is not None} for s, keys in resolved.items()}
    return resolve(apply_overrides(given, overrides))
