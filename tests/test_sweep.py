"""sweep: every run is fit, divergence is isolated, devices don't change the numbers."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jmlp
from jmlp.cli import main
from jmlp.data import load
from jmlp.sweep import _advance, sweep

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data():
    kx, kw = jax.random.split(jax.random.key(42))
    x = jax.random.normal(kx, (24, 3))
    y = jnp.sin(x @ jax.random.normal(kw, (3, 1)))
    return x, y


MODEL = jmlp.MLP((3, 5, 1), "tanh")


@pytest.mark.parametrize("batch_size, tol", [(None, None), (None, 0.05), (8, None)], ids=["full", "tol", "minibatch"])
def test_each_run_equals_fit(data, batch_size, tol):
    x, y = data
    # SGD: Adam's normalised steps amplify float32 rounding chaotically at large learning rates.
    kwargs = dict(loss="mse", optimizer="sgd", steps=40, tol=tol, batch_size=batch_size)
    result = sweep(MODEL, x, y, learning_rates=[0.01, 0.1, 0.5], seeds=[0, 5], **kwargs)
    for i, lr in enumerate(result.learning_rates):
        for j, seed in enumerate(result.seeds):
            key = jax.random.key(int(seed))
            ref = jmlp.fit(MODEL, MODEL.init(key), x, y, learning_rate=float(lr), key=key, **kwargs)
            assert result.steps[i, j] == ref.steps
            np.testing.assert_allclose(result.losses[i, j, : ref.steps], ref.losses, rtol=1e-5)
            assert np.isnan(result.losses[i, j, ref.steps :]).all()
            for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(result.params)):
                np.testing.assert_allclose(b[i, j], a, rtol=1e-5, atol=1e-6)  # float32 rounding
            assert result.converged[i, j] == ref.converged
            assert result.steps_to_tol[i, j] == (ref.steps if ref.converged else -1)
    if tol is not None:
        assert len(set(result.steps.ravel().tolist())) > 1  # runs stop at their own steps


def test_injected_adam_equals_plain_optax_adam(data):
    x, y = data
    result = sweep(MODEL, x, y, loss="mse", optimizer="adam", learning_rates=[0.01], seeds=[3], steps=30, grad="autodiff")
    params, tx = MODEL.init(jax.random.key(3)), optax.adam(0.01)

    @jax.jit
    def train(params):
        def body(carry, _):
            p, s = carry
            g = jax.grad(jmlp.loss_fn(MODEL, "mse"))(p, x, y)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, tx.init(params)), None, 30)[0][0]

    for a, b in zip(jax.tree.leaves(train(params)), jax.tree.leaves(result.params)):
        np.testing.assert_allclose(b[0, 0], a, rtol=1e-5, atol=1e-6)  # vmapped: float32 rounding


def test_divergence_is_isolated(data):
    x, y = data
    kwargs = dict(loss="mse", optimizer="sgd", seeds=[0, 1], steps=60)
    calm = sweep(MODEL, x, y, learning_rates=[0.01, 0.1], **kwargs)
    wild = sweep(MODEL, x, y, learning_rates=[0.01, 0.1, 1e4], **kwargs)
    assert wild.diverged[2].all() and not wild.diverged[:2].any()
    np.testing.assert_allclose(wild.losses[:2], calm.losses, rtol=1e-6)
    np.testing.assert_allclose(wild.final_loss[:2], calm.final_loss, rtol=1e-6)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree.leaves(wild.params))  # frozen at a finite state
    rows = wild.aggregate()
    assert rows[2]["final_loss"] == (None, None) and rows[2]["diverged"] == 2
    assert all(np.isfinite(r["final_loss"][0]) for r in rows[:2])
    assert wild.best()["learning_rate"] == 0.1
    assert "2/2" in wild.table().splitlines()[-1]


def test_new_learning_rates_never_recompile_and_chunks_change_nothing(data):
    x, y = data
    kwargs = dict(loss="mse", optimizer="sgd", seeds=[0], steps=20)
    first = sweep(MODEL, x, y, learning_rates=[0.1, 0.2], **kwargs)
    compiled = _advance._cache_size()
    seen = []
    again = sweep(MODEL, x, y, learning_rates=[0.1, 0.2], chunk_steps=7, progress=lambda d, t: seen.append((d, t)), **kwargs)
    other = sweep(MODEL, x, y, learning_rates=[0.5, 0.05], **kwargs)
    assert _advance._cache_size() == compiled
    assert seen == [(7, 20), (14, 20), (20, 20)]
    np.testing.assert_array_equal(first.losses, again.losses)
    assert not np.array_equal(first.losses, other.losses)


def test_validation_metrics_on_digits():
    data = load("digits", val_fraction=0.2, standardize=True)
    x, y = jnp.asarray(data.x_train, jnp.float32), jnp.asarray(data.y_train)
    result = sweep(jmlp.MLP((64, 32, 10)), x, y, loss="softmax_cross_entropy", optimizer="adam", learning_rates=[1e-3, 1e-2],
                   seeds=[0], steps=150, batch_size=128, x_val=jnp.asarray(data.x_val, jnp.float32), y_val=jnp.asarray(data.y_val))
    assert result.val_accuracy.shape == (2, 1) and result.val_accuracy.max() > 0.9
    assert result.best()["learning_rate"] in (1e-3, 1e-2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(learning_rates=[]), "learning_rates is empty"),
        (dict(learning_rates=[0.1, -0.1]), "learning_rate must be positive and finite, got -0.1"),
        (dict(seeds=[0, 1, 0]), r"seeds has duplicates \[0\]"),
        (dict(x_val=jnp.ones((4, 2)), y_val=jnp.ones((4, 1))), r"x_val has shape \(4, 2\) but x has 3 columns"),
        (dict(x_val=jnp.ones((4, 3))), "give both x_val and y_val"),
        (dict(steps=10**8, seeds=list(range(100))), r"100 runs x 100000000 steps needs about 74.\d+ GiB, over the [\d.]+ GiB allowed"),
        (dict(max_bytes=100), r"needs about [\d.]+ KiB, over the 100 bytes allowed"),
        (dict(steps=2**31), "steps must be at most 2147483647"),
    ],
)
def test_bad_input(data, kwargs, message):
    x, y = data
    args = dict(loss="mse", optimizer="sgd", learning_rates=[0.1], seeds=[0], steps=10)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=message):
        sweep(MODEL, x, y, **args)


def test_results_identical_on_1_2_and_8_devices():
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, jmlp
        from jmlp.sweep import sweep
        assert len(jax.devices()) == 8
        x = jax.random.normal(jax.random.key(0), (16, 3)); y = jnp.tanh(x[:, :1])
        model = jmlp.MLP((3, 4, 1), "tanh")
        kw = dict(loss="mse", learning_rates=[1e-3, 1e-2, 3e-2, 0.1, 0.3], seeds=[0, 1, 2], steps=25, batch_size=4)
        # 15 runs: padded to 16 on 2 and 8 devices, never dropped.
        one, two, eight = (sweep(model, x, y, optimizer="sgd", devices=jax.devices()[:n], **kw) for n in (1, 2, 8))
        for other in (two, eight):
            np.testing.assert_array_equal(one.losses, other.losses)
            np.testing.assert_array_equal(one.final_loss, other.final_loss)
            for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(other.params)):
                np.testing.assert_array_equal(a, b)
        assert one.losses.shape == (5, 3, 25)
        # Adam: equal to float32 rounding (see README, "Determinism").
        a1, a8 = (sweep(model, x, y, optimizer="adam", devices=jax.devices()[:n], **kw) for n in (1, 8))
        np.testing.assert_allclose(a1.losses, a8.losses, rtol=1e-5)
        print("identical")
        """
    )
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "identical" in proc.stdout


def test_cli_sweep_writes_everything_and_never_overwrites(capsys, tmp_path):
    out = tmp_path / "seed"
    config = ROOT / "experiments" / "configs" / "seed.toml"
    assert main(["sweep", str(config), "--out", str(out), "--quiet", "--set", "train.steps=200"]) == 0
    printed = capsys.readouterr().out
    assert "best learning rate" in printed and "learning_rate" in printed
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "loss_curves.png", "loss_vs_lr.png", "results.csv", "results.json"]
    results = json.loads((out / "results.json").read_text())
    assert {"runs", "best", "environment", "aggregate"} <= set(results)
    run = next(r for r in results["runs"] if r["learning_rate"] == 0.1)
    assert {"learning_rate", "seed", "final_loss", "val_loss", "steps", "steps_to_tol", "diverged"} <= set(run)
    assert run["steps_to_tol"] == 89 and not run["diverged"]  # the walkthrough's η, as `jmlp train` finds
    assert any(r["diverged"] for r in results["runs"])  # η = 3 dies
    assert (out / "loss_curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "learning_rates = [" in (out / "config.toml").read_text()
    assert len((out / "results.csv").read_text().splitlines()) == 1 + len(results["runs"])
    # the resolved config.toml reproduces the same results
    assert main(["sweep", str(out / "config.toml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    assert json.loads((tmp_path / "again" / "results.json").read_text())["runs"] == results["runs"]

    before = (out / "results.json").read_bytes()
    assert main(["sweep", str(config), "--out", str(out), "--quiet"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before


@pytest.mark.parametrize(
    "override, message",
    [
        ("sweep.learning_rates=[]", "learning_rates is empty"),
        ("sweep.learning_rates=[0.1, 0]", "learning_rates holds 0"),
        ("sweep.seeds=[1, 1]", "seeds = [1, 1] must be a non-empty list of distinct integers"),
        ("sweep.learning_rates={start = 1e-3, stop = 1, num = 0}", "learning_rates.num = 0 must be an integer in 1..1000000"),
        ("sweep.learning_rates={start = 1e-3, stop = 1, num = 3, spacing = 'cubic'}", "spacing = 'cubic' must be 'log' or 'linear'"),
        ("sweep.learning_rates={start = 1e-3, num = 3}", "missing ['stop']"),
    ],
)
def test_cli_sweep_bad_config(capsys, tmp_path, override, message):
    config = ROOT / "experiments" / "configs" / "seed.toml"
    assert main(["sweep", str(config), "--out", str(tmp_path / "o"), "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_snapshot_and_restore_continue_bit_for_bit(data):
    """A Sweep stopped at any step, snapshotted to the host and restored into a new Sweep,
    ends exactly where an uninterrupted one does (Adam, minibatches, tol stops)."""
    from jmlp import checkpoint

    x, y = data
    kw = dict(loss="mse", optimizer="adam", learning_rates=[0.01, 0.1, 0.5], seeds=[0, 5, 7], steps=40, batch_size=5, tol=0.05)
    whole = jmlp.Sweep(MODEL, x, y, **kw)
    whole.advance(40)
    ref = whole.result()
    part = jmlp.Sweep(MODEL, x, y, **kw)
    part.advance(13)
    saved = checkpoint.decode(checkpoint.encode(part.snapshot(), {"train": {}}))  # through the file format
    resumed = jmlp.Sweep(MODEL, x, y, **kw).restore(saved)
    resumed.advance(27)
    resumed.advance(40)
    out = resumed.result()
    assert len(set(ref.steps.ravel().tolist())) > 1  # some runs stopped early, at their own steps
    for name in ("final_loss", "losses", "steps", "converged", "diverged"):
        np.testing.assert_array_equal(getattr(out, name), getattr(ref, name), err_msg=name)
    for a, b in zip(jax.tree.leaves(ref.params), jax.tree.leaves(out.params)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="snapshot leaf .losses is float32"):
        bad = {**saved, "state": {**saved["state"], ".losses": saved["state"][".losses"][:5]}}
        jmlp.Sweep(MODEL, x, y, **kw).restore(bad)


def test_blocks_of_unchecked_steps_stop_every_run_at_its_own_step(data, monkeypatch):
    """Runs step in blocks of loop.BLOCK with one stop check per block; a run that converges or
    diverges inside a block still stops at exactly its step, and chunk boundaries that cut
    blocks change no bit (Adam, full batch: the case most sensitive to code paths)."""
    from jmlp import loop

    x, y = data
    kw = dict(loss="mse", optimizer="adam", learning_rates=[0.01, 0.1, 0.5, 1e4], seeds=[0, 5], steps=300, tol=0.02)
    assert loop.BLOCK < kw["steps"]
    blocked = sweep(MODEL, x, y, **kw)
    stops = blocked.steps[~blocked.diverged]
    assert blocked.diverged[3].all() and len(set(stops.tolist())) > 2 and (stops % loop.BLOCK != 0).any()
    chunked = sweep(MODEL, x, y, chunk_steps=7, **kw)
    for a, b in zip(jax.tree.leaves((blocked.params, blocked.losses, blocked.steps)), jax.tree.leaves((chunked.params, chunked.losses, chunked.steps))):
        np.testing.assert_array_equal(a, b)
    monkeypatch.setattr(loop, "BLOCK", 0)  # every step checked: the reference semantics
    jax.clear_caches()
    checked = sweep(MODEL, x, y, **kw)
    jax.clear_caches()
    np.testing.assert_array_equal(blocked.steps, checked.steps)
    np.testing.assert_array_equal(blocked.converged, checked.converged)
    np.testing.assert_array_equal(blocked.diverged, checked.diverged)
    # float32 rounding (the two programs fuse differently), until Adam at η = 0.5 amplifies it
    np.testing.assert_allclose(blocked.losses[..., :150], checked.losses[..., :150], rtol=1e-5)


@pytest.mark.parametrize("lr, stop", [(0.5, "converged"), (1e4, "diverged")])
def test_a_single_run_steps_in_long_blocks_and_stops_at_its_own_step(data, monkeypatch, lr, stop):
    """A single run (fit, or a one-run sweep) steps in blocks of loop.BLOCK_ONE_RUN: it stops at
    the step the per-step checks stop it, and chunks that cut its blocks change no bit."""
    from jmlp import loop

    x, y = data
    monkeypatch.setattr(loop, "BLOCK_ONE_RUN", 16)  # several blocks in a short test
    kw = dict(loss="mse", optimizer="adam", learning_rates=[lr], seeds=[3], steps=120, tol=0.05)
    jax.clear_caches()
    blocked = sweep(MODEL, x, y, **kw)
    assert getattr(blocked, stop).all() and blocked.steps[0, 0] % 16 not in (0, 1)  # stopped inside a block
    chunked = sweep(MODEL, x, y, chunk_steps=7, **kw)
    fitted = jmlp.fit(MODEL, MODEL.init(jax.random.key(3)), x, y, loss="mse", optimizer="adam", learning_rate=lr, steps=120, tol=0.05)
    monkeypatch.setattr(loop, "BLOCK_ONE_RUN", 0)  # every step checked: the reference semantics
    jax.clear_caches()
    checked = jmlp.fit(MODEL, MODEL.init(jax.random.key(3)), x, y, loss="mse", optimizer="adam", learning_rate=lr, steps=120, tol=0.05)
    jax.clear_caches()
    for a, b in zip(jax.tree.leaves((blocked.params, blocked.losses)), jax.tree.leaves((chunked.params, chunked.losses))):
        np.testing.assert_array_equal(a, b)
    assert fitted.steps == checked.steps == blocked.steps[0, 0]
    assert (fitted.converged, fitted.diverged) == (checked.converged, checked.diverged)
    np.testing.assert_allclose(fitted.losses, checked.losses, rtol=1e-5)
