"""Faults: a sweep killed (SIGKILL) or stopped (Ctrl-C) resumes to the same bytes; damaged
checkpoints and changed configs are refused. Real processes, real signals."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jmlp import checkpoint as ckpt
from jmlp.cli import main

CONFIG = """\
[data]
source = "synthetic"
n_samples = 120
val_fraction = 0.25
standardize = true
standardize_target = true

[model]
sizes = [10, 8, 1]
activation = "tanh"

[train]
loss = "mse"
optimizer = "adam"
learning_rate = 0.01
steps = 6000
batch_size = 30

[sweep]
learning_rates = { start = 1e-3, stop = 0.3, num = 6 }
seeds = [0, 1]
checkpoint_every = 300
chunk_steps = 100
"""
FILES = ["results.json", "results.csv", "config.toml"]
ENV = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}


def jmlp(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "jmlp.cli", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(proc, timeout=120):
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, out, err


def wait_for_checkpoint(folder: Path, past: int, proc, timeout=90):
    """Block until a checkpoint after step ``past`` exists (the sweep is under way)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name[5:14]) for p in ckpt.checkpoints(folder / "checkpoints")]
        if steps and max(steps) > past:
            return max(steps)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint past step {past} within {timeout} s")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of CONFIG: its output folder."""
    root = tmp_path_factory.mktemp("faults")
    (root / "sweep.toml").write_text(CONFIG)
    rc, _, err = finish(jmlp("sweep", str(root / "sweep.toml"), "--out", str(root / "ref"), "--quiet"))
    assert rc == 0, err[-2000:]
    return root


def test_sigkill_at_a_random_moment_then_resume_gives_the_same_bytes(reference, tmp_path):
    out = tmp_path / "killed"
    proc = jmlp("sweep", str(reference / "sweep.toml"), "--out", str(out), "--quiet")
    wait_for_checkpoint(out, 0, proc)
    time.sleep(random.uniform(0, 1.0))  # anywhere in the run: mid-chunk, mid-write
    proc.kill()
    proc.communicate()
    assert not (out / "results.json").exists()
    rc, _, err = finish(jmlp("sweep", "--resume", str(out), "--quiet"))
    assert rc == 0, err[-2000:]
    for name in FILES:
        assert (out / name).read_bytes() == (reference / "ref" / name).read_bytes(), name
    assert not (out / "checkpoints").exists()  # finished: nothing left to resume
    rc, _, err = finish(jmlp("sweep", "--resume", str(out)))
    assert rc == 2 and "holds a finished sweep" in err and err.count("\n") == 1


def test_ctrl_c_checkpoints_exits_130_and_prints_the_resume_command(reference, tmp_path):
    out = tmp_path / "stopped"
    proc = jmlp("sweep", str(reference / "sweep.toml"), "--out", str(out), "--quiet")
    wait_for_checkpoint(out, 0, proc)
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 130, err[-2000:]
    assert f"resume with: jmlp sweep --resume {out}" in err
    assert "Traceback" not in err
    saved = ckpt.checkpoints(out / "checkpoints")
    assert saved and saved[-1].name in err  # the checkpoint it names is the one on disk
    rc, _, err = finish(jmlp("sweep", "--resume", str(out), "--quiet"))
    assert rc == 0, err[-2000:]
    for name in FILES:
        assert (out / name).read_bytes() == (reference / "ref" / name).read_bytes(), name


def test_a_rerun_is_bitwise_identical(reference, tmp_path):
    rc, _, err = finish(jmlp("sweep", str(reference / "sweep.toml"), "--out", str(tmp_path / "again"), "--quiet"))
    assert rc == 0, err[-2000:]
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (reference / "ref" / name).read_bytes(), name


# In-process from here: a short sweep stopped by a stop() that turns true, as Ctrl-C would.
SHORT = ["--set", "train.steps=400", "--set", "sweep.checkpoint_every=100", "--set", "sweep.chunk_steps=50"]


@pytest.fixture
def unfinished(tmp_path, reference, monkeypatch):
    """A folder whose sweep stopped at step 100, with checkpoints at steps 0 and 100."""
    from jmlp import cli

    calls = []

    class StopAt100(cli._StopFlag):
        @property
        def signal(self):
            calls.append(1)
            return signal.SIGINT if len(calls) >= 2 else None

        @signal.setter
        def signal(self, value):
            pass

    monkeypatch.setattr(cli, "_StopFlag", StopAt100)
    out = tmp_path / "unfinished"
    assert main(["sweep", str(reference / "sweep.toml"), "--out", str(out), "--quiet", *SHORT]) == 130
    monkeypatch.undo()
    assert [p.name for p in ckpt.checkpoints(out / "checkpoints")] == ["step-000000000.ckpt", "step-000000100.ckpt"]
    return out


def test_truncated_or_flipped_checkpoint_falls_back_to_the_previous_one(unfinished, reference, tmp_path, capsys):
    ref = tmp_path / "ref"
    assert main(["sweep", str(reference / "sweep.toml"), "--out", str(ref), "--quiet", *SHORT]) == 0
    newest = ckpt.checkpoints(unfinished / "checkpoints")[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0x01
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["sweep", "--resume", str(unfinished), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "fails its sha256 checksum" in err and "using step-000000000.ckpt instead" in err
    assert (unfinished / "results.json").read_bytes() == (ref / "results.json").read_bytes()


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_a_damaged_checkpoint_is_refused_never_used(unfinished, capsys, damage):
    for path in ckpt.checkpoints(unfinished / "checkpoints"):
        data = path.read_bytes()
        damaged = {
            "truncate": data[: len(data) - 7],
            "flip": data[:-40] + bytes([data[-40] ^ 0x80]) + data[-39:],
            "empty": b"",
            "garbage": b"\x93NUMPY pickle? no",
        }[damage]
        path.write_bytes(damaged)
    capsys.readouterr()
    assert main(["sweep", "--resume", str(unfinished), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jmlp: error: no usable checkpoint:") and err.count("\n") == 1
    reason = {"truncate": "truncated", "flip": "checksum", "empty": "not a jmlp checkpoint", "garbage": "not a jmlp checkpoint"}
    assert reason[damage] in err
    assert not (unfinished / "results.json").exists()


def test_resuming_with_a_changed_config_is_refused_naming_the_keys(unfinished, reference, capsys):
    capsys.readouterr()
    args = ["sweep", str(reference / "sweep.toml"), "--resume", str(unfinished), *SHORT]
    assert main([*args, "--set", "train.batch_size=20", "--set", "data.seed=3"]) == 2
    err = capsys.readouterr().err
    assert "differs from the checkpoint's in data.seed, train.batch_size" in err and err.count("\n") == 1
    # when to save is not what is computed: a resume may change it
    assert main([*args, "--set", "sweep.checkpoint_every=150", "--quiet"]) == 0


def test_starting_over_an_unfinished_sweep_needs_force(unfinished, reference, capsys):
    capsys.readouterr()
    assert main(["sweep", str(reference / "sweep.toml"), "--out", str(unfinished), *SHORT]) == 2
    err = capsys.readouterr().err
    assert "holds an unfinished sweep (last checkpoint step-000000100.ckpt)" in err and f"--resume {str(unfinished)!r}" in err
    assert len(ckpt.checkpoints(unfinished / "checkpoints")) == 2  # nothing lost


def test_a_checkpoint_resumes_on_another_device_count(unfinished, reference, tmp_path):
    """Checkpoints hold the real runs only (no padding): one saved here resumes on 3 devices."""
    script = f"""
import jax
from jmlp.cli import main
assert jax.device_count() == 3
raise SystemExit(main(["sweep", "--resume", {str(unfinished)!r}, "--quiet"]))
"""
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=3"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads((unfinished / "results.json").read_text())["runs"]
    assert len(runs) == 12 and all(r["steps"] == 400 for r in runs)


def test_checkpoint_format_round_trip_and_refusals(tmp_path):
    state = {".i": np.arange(3, dtype=np.int32), ".losses": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)}
    config = {"train": {"steps": 2, "tol": None}, "sweep": {"chunk_steps": None}}
    path = ckpt.save(tmp_path, {"done": 2, "state": state}, config)
    back = ckpt.load(path)
    assert back["done"] == 2 and back["config"] == config
    for k, v in state.items():
        np.testing.assert_array_equal(back["state"][k], v)
        assert back["state"][k].dtype == v.dtype
    for done in (3, 4, 5):
        ckpt.save(tmp_path, {"done": done, "state": state}, config)
    assert [p.name for p in ckpt.checkpoints(tmp_path)] == ["step-000000004.ckpt", "step-000000005.ckpt"]  # two kept
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind
    with pytest.raises(ckpt.CorruptCheckpoint, match="checksum"):
        data = ckpt.encode({"done": 1, "state": state}, config)
        ckpt.decode(data[:-1] + bytes([data[-1] ^ 1]))
