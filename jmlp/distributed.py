"""Several processes, one sweep: ``jax.distributed`` setup and the few host-side agreements.

jmlp does not schedule anything itself. Every process runs the same command;
``jax.distributed.initialize`` joins them into one runtime whose devices form
the sweep's mesh; XLA runs each device's share of the runs; on CPU the
collectives go through gloo. Process 0 writes every file, the others none.

The coordinator comes from ``--coordinator/--num-processes/--process-id``,
else from ``JMLP_COORDINATOR``, ``JMLP_NUM_PROCESSES`` and ``JMLP_PROCESS_ID``,
else from jax's own cluster detection when a SLURM or Open MPI job with more
than one task is found (``JMLP_DISTRIBUTED=auto`` forces it, e.g. on a TPU pod).
"""

import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np

from .errors import BadValue

ENV = {"coordinator": "JMLP_COORDINATOR", "num_processes": "JMLP_NUM_PROCESSES", "process_id": "JMLP_PROCESS_ID"}

# How long a process waits for the others to join, and how long a silent
# peer may go before the survivors give up: a dead or missing process ends
# the sweep within these bounds instead of hanging.
JOIN_TIMEOUT_S = int(os.environ.get("JMLP_JOIN_TIMEOUT", "120"))
HEARTBEAT_TIMEOUT_S = int(os.environ.get("JMLP_HEARTBEAT_TIMEOUT", "30"))


def settings(coordinator=None, num_processes=None, process_id=None, environ=os.environ) -> dict | None:
    """The ``jax.distributed.initialize`` arguments, or None for a single process.

    Flags win over ``JMLP_*`` variables; with neither, a multi-task SLURM or
    Open MPI job (or ``JMLP_DISTRIBUTED=auto``) gives ``{}``: jax detects the rest.

    >>> settings("127.0.0.1:1234", 2, 0)
    {'coordinator_address': '127.0.0.1:1234', 'num_processes': 2, 'process_id': 0}
    >>> settings(environ={}) is None
    True
    """
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    for name, var in ENV.items():
        if given[name] is None and environ.get(var, "") != "":
            given[name] = environ[var]
    if all(v is None for v in given.values()):
        tasks = environ.get("SLURM_NTASKS") if "SLURM_JOB_ID" in environ else environ.get("OMPI_COMM_WORLD_SIZE")
        auto = environ.get("JMLP_DISTRIBUTED", "") == "auto" or (tasks or "1").isdigit() and int(tasks or "1") > 1
        return {} if auto else None
    missing = [f"--{k.replace('_', '-')}" for k, v in given.items() if v is None]
    if missing:
        raise BadValue(f"a multi-process sweep needs --coordinator, --num-processes and --process-id; missing {', '.join(missing)}")
    host, sep, port = str(given["coordinator"]).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadValue(f"--coordinator {given['coordinator']!r} must be HOST:PORT, e.g. 10.0.0.1:1234")
    n, i = _int("--num-processes", given["num_processes"]), _int("--process-id", given["process_id"])
    if n < 1:
        raise BadValue(f"--num-processes {n} must be at least 1")
    if not 0 <= i < n:
        raise BadValue(f"--process-id {i} must be in 0..{n - 1} for --num-processes {n}")
    return {"coordinator_address": str(given["coordinator"]), "num_processes": n, "process_id": i}


def _int(flag, v) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        raise BadValue(f"{flag} {v!r} must be an integer") from None


def initialize(kwargs: dict) -> None:
    """``jax.distributed.initialize`` with jmlp's bounded timeouts; before any other jax use."""
    import jax

    # gloo is jax 0.10's default for CPU collectives; said here so a newer default can't change it.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        **kwargs,
        initialization_timeout=JOIN_TIMEOUT_S,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
        shutdown_timeout_seconds=HEARTBEAT_TIMEOUT_S,
    )


def is_writer() -> bool:
    """Whether this process writes files: process 0, or the only process."""
    import jax

    return jax.process_index() == 0


def all_agree(value) -> np.ndarray:
    """``value`` (a small array) from every process, stacked: a collective every process must call."""
    import jax

    value = np.asarray(value)
    if jax.process_count() == 1:
        return value[None]
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(value))


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is True on any (e.g. Ctrl-C reached one)."""
    return bool(all_agree(np.array(bool(flag))).any())


def same_everywhere(digest: str, what: str) -> None:
    """Refuse unless every process holds the same ``digest`` (a hex string) of ``what``."""
    import jax

    mine = np.frombuffer(bytes.fromhex(digest), np.uint8)
    every = all_agree(mine)
    odd = [p for p in range(every.shape[0]) if not np.array_equal(every[p], every[0])]
    if odd:
        raise BadValue(f"process {odd[0]} has a different {what} from process 0 (this is process {jax.process_index()}): every process must run the same one")


# XLA's C++ logging: glog lines ("E1204 09:12:27.59 ... file.cc:289] ..."), the
# stack trace after a fatal one, and gloo's connection chatter.
_CXX_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|\s+@\s+0x|\*\*\* Check failure)")
_GLOO = "[Gloo] "  # one line per connection, on stdout


def supervise(argv, settings: dict) -> int:
    """Run this ``jmlp`` command as a child process and report a failure of the
    distributed runtime as one line.

    When a peer dies or never joins, XLA ends the survivors from C++
    (``LOG(FATAL)``: an abort with a stack trace) where Python cannot catch it.
    The child's stderr passes through here, less XLA's C++ log lines
    (``JMLP_DEBUG=1`` keeps them), and such an abort becomes a one-line
    ``jmlp: error`` and exit status 1. The child dies with this process.
    """
    env = dict(os.environ, JMLP_SUPERVISED="1")
    pipe = subprocess.PIPE
    # Its own process group: a terminal's Ctrl-C reaches only this process, which forwards it
    # once (two SIGINTs would mean "quit without saving").
    child = subprocess.Popen(
        [sys.executable, "-m", "jmlp.cli", *argv], env=env, stdout=pipe, stderr=pipe, preexec_fn=_die_with_parent, process_group=0
    )

    def forward(sig, frame):  # a signal sent to this process alone still reaches the sweep
        child.send_signal(sig)

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    out = threading.Thread(target=_relay, args=(child.stdout, sys.stdout), daemon=True)
    out.start()
    try:
        errors, reported = _relay(child.stderr, sys.stderr)
        rc = child.wait()
        out.join()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if child.poll() is None:
            child.kill()
            child.wait()
    if rc in (0, 1, 2, 130, 143) or not any(line.startswith("F") for line in errors):
        return rc if rc >= 0 else 128 - rc
    if reported:  # the sweep already said what failed; XLA's abort on the way out adds nothing
        return 1
    print(f"jmlp: error: process {settings.get('process_id', '?')}: {_diagnose(''.join(errors), settings)}", file=sys.stderr)
    return 1


def _relay(source, sink) -> tuple[list[str], bool]:
    """Copy ``source`` lines to ``sink``, less XLA's C++ log records; ``JMLP_DEBUG=1``
    copies everything. Returns the C++ error records and whether jmlp printed an error."""
    debug = os.environ.get("JMLP_DEBUG") == "1"
    errors, reported = [], False
    in_record = False  # a record runs over several lines, up to jmlp's or Python's next own line
    for raw in source:
        line = raw.decode(errors="replace")
        if line.startswith(_GLOO):
            pass
        elif _CXX_LOG.match(line):
            in_record = True
            if line[0] in "EF":
                errors.append(line)
        elif in_record and not line.startswith(("jmlp: ", "Traceback")):
            pass
        else:
            in_record = False
            reported = reported or line.startswith("jmlp: error:")
            sink.write(line)
            sink.flush()
            continue
        if debug:
            sink.write(line)
            sink.flush()
    return errors, reported


def is_peer_failure(error: Exception) -> bool:
    """Whether ``error`` is a collective failing because another process went away: XLA
    raises it as a ``JaxRuntimeError`` or, from gloo, a ``ValueError``."""
    text = str(error)
    return type(error).__name__ == "JaxRuntimeError" or any(s in text for s in ("Gloo", "UNAVAILABLE", "heartbeat"))


def lost_peer(error: Exception) -> str:
    """The one-line message for a collective that failed because a peer went away."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (
        f"process {_index()}: a collective with the other processes failed ({first[:200]}); "
        "another process probably died. Checkpoints, if any, resume with: jmlp sweep --resume DIR"
    )


def _index():
    import jax

    return jax.process_index()


def _diagnose(log: str, settings: dict) -> str:
    where = settings.get("coordinator_address", "the coordinator")
    if "RegisterTask" in log or "DEADLINE_EXCEEDED" in log and "heartbeat" not in log:
        return (
            f"the {settings.get('num_processes', '?')} processes did not all join at {where} within "
            f"{JOIN_TIMEOUT_S} s: start every process with the same --coordinator and --num-processes"
        )
    if "heartbeat" in log or "another task died" in log:
        return (
            f"another process of the sweep died or stopped responding (no heartbeat for {HEARTBEAT_TIMEOUT_S} s); "
            "its checkpoints, if any, resume with: jmlp sweep --resume DIR"
        )
    first = next((line for line in log.splitlines() if line.startswith("F")), log.splitlines()[0])
    return f"the distributed runtime failed: {first.split('] ', 1)[-1][:300]}"


def _die_with_parent() -> None:
    # Linux: the kernel kills the child when the supervising jmlp dies (even by SIGKILL).
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
