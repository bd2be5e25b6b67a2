"""Multi-process sweeps over jax.distributed on 127.0.0.1 (gloo): the same results as
one process, files from process 0 only, and a dead or missing peer ends the others."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import CONFIG, wait_for_checkpoint

from jmlp import checkpoint as ckpt
from jmlp.cli import main

SHORT = ["--set", "train.steps=300"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(devices: int, **extra) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
        "JMLP_JOIN_TIMEOUT": "20",
        "JMLP_HEARTBEAT_TIMEOUT": "5",
        **extra,
    }


class Cluster:
    """``n`` jmlp processes, each in its own folder ``root/p<i>``; always reaped."""

    def __init__(self, root: Path, n: int, args, per_process=None, join_timeout="20", own_session=False):
        port = free_port()
        self.procs, self.dirs = [], []
        for i in range(n):
            d = root / f"p{i}"
            d.mkdir()
            argv = [*args, *(per_process(i) if per_process else [])]
            argv += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n), "--process-id", str(i)]
            cmd = [sys.executable, "-m", "jmlp.cli", *argv]
            e = env(1, JMLP_JOIN_TIMEOUT=join_timeout)
            pipe = subprocess.PIPE
            self.procs.append(subprocess.Popen(cmd, cwd=d, env=e, stdout=pipe, stderr=pipe, text=True, start_new_session=own_session))
            self.dirs.append(d)

    def wait(self, timeout=120):
        deadline = time.monotonic() + timeout
        results = []
        for p in self.procs:
            try:
                out, err = p.communicate(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("a jmlp process hung") from None
            results.append((p.returncode, out, err))
        return results

    def kill(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("distributed") / "sweep.toml"
    path.write_text(CONFIG)
    return path


def single(config, out, devices, *args):
    cmd = [sys.executable, "-m", "jmlp.cli", "sweep", str(config), "--out", str(out), "--quiet", *SHORT, *args]
    proc = subprocess.run(cmd, env=env(devices), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("n", [2, 3])
def test_n_processes_give_one_process_results_and_only_process_0_writes(config, tmp_path, n):
    with Cluster(tmp_path, n, ["sweep", str(config), "--out", "out", "--quiet", *SHORT]) as cluster:
        results = cluster.wait()
    for i, (rc, out, err) in enumerate(results):
        assert rc == 0, f"process {i}: {err[-2000:]}"
        assert "Traceback" not in err and "[Gloo]" not in out + err
    assert "best learning rate" in results[0][1] and results[1][1] == ""  # only process 0 reports
    assert [sorted(p.name for p in d.iterdir()) for d in cluster.dirs[1:]] == [[]] * (n - 1)  # and writes
    multi = json.loads((cluster.dirs[0] / "out" / "results.json").read_text())
    assert multi["environment"]["process_count"] == n
    one = single(config, tmp_path / "one", n)  # the same devices, in one process
    for key in ("runs", "aggregate", "best", "config"):
        assert multi[key] == one[key], key
    assert (cluster.dirs[0] / "out" / "results.csv").read_bytes() == (tmp_path / "one" / "results.csv").read_bytes()


def test_a_process_killed_mid_run_ends_the_others_and_the_checkpoint_resumes(config, tmp_path):

    with Cluster(tmp_path, 2, ["sweep", str(config), "--out", "out", "--quiet"]) as cluster:
        out = cluster.dirs[0] / "out"
        wait_for_checkpoint(out, 0, cluster.procs[0])
        cluster.procs[1].kill()
        killed = time.monotonic()
        rc, _, err = cluster.wait(timeout=60)[0]
        waited = time.monotonic() - killed
    assert rc == 1, err[-2000:]
    assert waited < 45  # the heartbeat timeout (5 s here), not forever
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jmlp: error: process 0:") and "died" in lines[0], err[-2000:]
    assert not (out / "results.json").exists() and ckpt.checkpoints(out / "checkpoints")
    # what process 0 saved resumes in a single process, to the end
    cmd = [sys.executable, "-m", "jmlp.cli", "sweep", "--resume", str(out), "--quiet"]
    proc = subprocess.run(cmd, env=env(2), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(r["steps"] == 6000 for r in json.loads((out / "results.json").read_text())["runs"])


def test_ctrl_c_in_every_terminal_checkpoints_all_processes_once(config, tmp_path):
    """A terminal's Ctrl-C goes to its whole process group; each process must save and exit 130
    (its sweep child sees one SIGINT, not two, which would mean quit without saving)."""
    import signal

    with Cluster(tmp_path, 2, ["sweep", str(config), "--out", "out", "--quiet"], own_session=True) as cluster:
        out = cluster.dirs[0] / "out"
        wait_for_checkpoint(out, 0, cluster.procs[0])
        for p in cluster.procs:
            os.killpg(os.getpgid(p.pid), signal.SIGINT)  # what the terminal does
        results = cluster.wait(timeout=60)
    for rc, _, err in results:
        assert rc == 130, err[-2000:]
    assert "resume with: jmlp sweep --resume out" in results[0][2] and "resume with" not in results[1][2]
    saved = ckpt.checkpoints(out / "checkpoints")
    assert saved[-1].name in results[0][2] and not (out / "results.json").exists()


def test_a_process_that_never_joins_fails_the_others_in_bounded_time(config, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "jmlp.cli", "sweep", str(config), "--quiet", *SHORT]
    cmd += ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0"]
    started = time.monotonic()
    proc = subprocess.run(cmd, env=env(1, JMLP_JOIN_TIMEOUT="4"), capture_output=True, text=True, timeout=90)
    assert time.monotonic() - started < 60
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "did not all join" in lines[0] and f"127.0.0.1:{port}" in lines[0], proc.stderr[-2000:]


def test_processes_with_different_configs_all_refuse(config, tmp_path):
    def steps(i):
        return ["--set", f"train.steps={300 + i}"]

    with Cluster(tmp_path, 2, ["sweep", str(config), "--out", "out", "--quiet"], per_process=steps) as cluster:
        results = cluster.wait()
    for rc, _, err in results:
        assert rc == 2 and "process 1 has a different config from process 0" in err and err.count("\n") == 1, err[-2000:]
    assert not (cluster.dirs[0] / "out").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--coordinator", "127.0.0.1:1234"], "missing --num-processes, --process-id"),
        (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "--coordinator 'nohost' must be HOST:PORT"),
        (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id 2 must be in 0..1"),
        (["--coordinator", "h:1", "--num-processes", "0", "--process-id", "0"], "--num-processes 0 must be at least 1"),
    ],
)
def test_bad_distributed_flags(config, capsys, flags, message):
    assert main(["sweep", str(config), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
