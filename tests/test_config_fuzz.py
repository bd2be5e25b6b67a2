"""Fuzzed configs: every mutation of a valid config ends cleanly (exit 0, or exit 2 with one
line naming the problem, never a traceback or a half-written --out), and valid configs pass."""

import contextlib
import io
import os
import tempfile
import tomllib
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jmlp
from jmlp.cli import main
from jmlp.config import SCHEMA

# Fixed examples in CI (derandomized); JMLP_FUZZ_EXAMPLES=1000 explores more, with fresh draws.
EXAMPLES = int(os.environ.get("JMLP_FUZZ_EXAMPLES", "0"))
FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=not EXAMPLES)
ROOT = Path(__file__).resolve().parents[1]
BASES = {
    "seed": tomllib.loads((ROOT / "experiments" / "configs" / "seed.toml").read_text()),
    "synthetic": {
        "data": {"source": "synthetic", "n_samples": 60, "val_fraction": 0.25, "standardize": True},
        "model": {"sizes": [10, 4, 1], "activation": "tanh"},
        "train": {"loss": "mse", "optimizer": "adam", "learning_rate": 0.01, "steps": 50, "batch_size": 15},
        "sweep": {"learning_rates": {"start": 1e-3, "stop": 0.1, "num": 3}, "seeds": [0, 1], "checkpoint_every": 10},
    },
}

# Values of every TOML type, in and out of range.
anything = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, -1, 1, 2**31, 2**62, 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.booleans(),
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=4),
    st.lists(st.text(max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
key_of = st.sampled_from([(s, k) for s, keys in SCHEMA.items() for k in keys])
huge_grid = st.sampled_from(
    [
        ("sweep", "learning_rates", {"start": 1e-4, "stop": 1.0, "num": 10**9}),
        ("sweep", "learning_rates", {"start": 1e-4, "stop": 1.0, "num": 1_000_000}),
        ("sweep", "seeds", list(range(100_000))),
        ("train", "steps", 2**31 - 1),
        ("train", "steps", 2**40),
        ("model", "sizes", [2, 2**40, 1]),
        ("model", "sizes", [2, 100_000, 100_000, 1]),
    ]
)
# Over any machine's memory or jmlp's limits; the rest of huge_grid depends on the machine.
CERTAINLY_TOO_BIG = [{"start": 1e-4, "stop": 1.0, "num": 10**9}, 2**40, [2, 2**40, 1]]
mutation = st.one_of(
    st.tuples(st.just("set"), key_of, anything),
    st.tuples(st.just("delete"), key_of),
    st.tuples(st.just("unknown"), st.sampled_from(list(SCHEMA) + ["run"]), st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12)),
    st.tuples(st.just("grid"), huge_grid),
)


def apply(config: dict, op) -> None:
    """Mutate ``config`` in place."""
    kind = op[0]
    if kind == "set":
        (section, key), value = op[1], op[2]
        config.setdefault(section, {})[key] = value
    elif kind == "delete":
        section, key = op[1]
        config.get(section, {}).pop(key, None)
    elif kind == "unknown":
        section, name = op[1], op[2]
        config.setdefault(section, {})[name] = 1
    else:
        section, key, value = op[1]
        config.setdefault(section, {})[key] = value


REQUIRED = {("data", "source"), ("model", "sizes"), ("train", "loss"), ("train", "learning_rate"), ("train", "steps")}


def certainly_invalid(config: dict) -> bool:
    """Invalid whatever the machine: an unknown section or key, a required key missing, a
    value over any limit."""
    if any(section not in SCHEMA for section in config):
        return True
    if any(key not in SCHEMA[section] for section, keys in config.items() for key in keys):
        return True
    if any(key not in config.get(section, {}) for section, key in REQUIRED):
        return True
    return any(v in CERTAINLY_TOO_BIG for keys in config.values() for v in keys.values())


def run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


def check_clean(rc, err, out: Path):
    assert rc in (0, 2), (rc, err)
    if rc == 2:
        assert err.startswith("jmlp: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists(), "an --out folder was left behind"


@settings(max_examples=EXAMPLES or 60, **FUZZ)
@given(base=st.sampled_from(sorted(BASES)), ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_configs_end_cleanly(base, ops):
    config = {s: dict(v) if isinstance(v, dict) else v for s, v in BASES[base].items()}
    for op in ops:
        apply(config, op)
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "c.toml", Path(tmp) / "out"
        try:
            path.write_text(tomli_w.dumps(config))
        except (TypeError, ValueError):  # not writable as TOML (a NaN key, a lone surrogate): not a config
            return
        rc, err = run(["sweep", str(path), "--out", str(out), "--quiet", "--dry-run"])
        check_clean(rc, err, out)
        if certainly_invalid(config):
            assert rc == 2, f"accepted an invalid config: {config}"
            # the real run refuses the same way, before it creates anything
            again = run(["sweep", str(path), "--out", str(out), "--quiet"])
            assert again[0] == 2 and again[1] == err
            check_clean(*again, out)


@settings(max_examples=EXAMPLES or 30, **FUZZ)
@given(base=st.sampled_from(sorted(BASES)), cut=st.integers(min_value=0, max_value=10**6), junk=st.sampled_from(["[", "=", '"', "[[x]", "= =", "\x00", "ü"]))
def test_broken_toml_ends_cleanly(base, cut, junk):
    text = tomli_w.dumps(BASES[base])
    cut %= len(text)
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "c.toml", Path(tmp) / "out"
        path.write_text(text[:cut] + junk + text[cut:], encoding="utf-8", errors="surrogateescape")
        rc, err = run(["sweep", str(path), "--out", str(out), "--quiet", "--dry-run"])
        check_clean(rc, err, out)


# Valid configs, drawn from the documented ranges: none may be refused.
@st.composite
def valid_configs(draw):
    source = draw(st.sampled_from(["seed", "synthetic", "diabetes", "digits"]))
    features, outputs = {"seed": (2, 1), "synthetic": (10, 1), "diabetes": (10, 1), "digits": (64, 10)}[source]
    rows = {"seed": 1, "synthetic": 40, "diabetes": 442, "digits": 1797}[source]
    data = {"source": source}
    if source == "synthetic":
        data.update(n_samples=rows, noise=draw(st.floats(0, 2)), seed=draw(st.integers(0, 2**31)))
    if source != "seed":
        data["val_fraction"] = draw(st.sampled_from([0.0, 0.1, 0.25]))
        data["standardize"] = draw(st.booleans())
    hidden = draw(st.lists(st.integers(1, 16), max_size=2))
    model = {"sizes": [features, *hidden, outputs], "activation": draw(st.sampled_from(sorted(jmlp.ACTIVATIONS)))}
    model["weight_init"] = draw(st.sampled_from(["auto", "he", "glorot"]))
    loss = "softmax_cross_entropy" if source == "digits" else draw(st.sampled_from(["mse", "half_squared_error"]))
    train = {
        "loss": loss,
        "optimizer": draw(st.sampled_from(sorted(jmlp.OPTIMIZERS))),
        "learning_rate": draw(st.floats(1e-6, 10)),
        "grad": draw(st.sampled_from(["manual", "autodiff"])),
        "steps": draw(st.integers(1, 10_000)),
    }
    train_rows = rows - int(rows * data.get("val_fraction", 0.0))
    if draw(st.booleans()) and source != "seed":
        train["batch_size"] = draw(st.integers(1, max(1, train_rows // 2)))
    if draw(st.booleans()):
        train["tol"] = draw(st.floats(1e-9, 1.0))
    lrs = draw(
        st.one_of(
            st.lists(st.floats(1e-6, 10), min_size=1, max_size=8, unique=True),
            st.fixed_dictionaries({"start": st.floats(1e-6, 1e-2), "stop": st.floats(1e-2, 1), "num": st.integers(1, 50)}),
        )
    )
    sweep = {"learning_rates": lrs, "seeds": draw(st.lists(st.integers(0, 2**31 - 1), min_size=1, max_size=5, unique=True))}
    if draw(st.booleans()):
        sweep["checkpoint_every"] = draw(st.integers(1, 10**6))
    return {"data": data, "model": model, "train": train, "sweep": sweep}


@settings(max_examples=EXAMPLES or 40, **FUZZ)
@given(config=valid_configs())
def test_no_valid_config_is_refused(config):
    with tempfile.TemporaryDirectory() as tmp:
        path, out = Path(tmp) / "c.toml", Path(tmp) / "out"
        path.write_text(tomli_w.dumps(config))
        rc, err = run(["sweep", str(path), "--out", str(out), "--quiet", "--dry-run"])
        assert rc == 0, err
        assert not out.exists()
