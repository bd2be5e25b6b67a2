"""The ``jmlp`` command: parses, calls the library, prints. Exit 2 on bad input."""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from . import gradcheck_cli
from .argtypes import Parser, integer, number, numbers
from .errors import BadValue, JmlpError


def _explain(args) -> int:
    from .fit import check_positive_int
    from .optim import check_learning_rate
    from .report import fmt, table
    from .walkthrough import walkthrough

    if len(args.x) != 2:
        raise BadValue(f"--x needs 2 values for the walkthrough's 2-2-1 net, got {len(args.x)}: {fmt(args.x)}")
    check_learning_rate(args.lr)
    check_positive_int("--steps", args.steps)
    w = walkthrough(args.x, args.y, args.lr, args.steps)
    if args.json:
        print(json.dumps(w))
        return 0
    f, b, p = w["forward"], w["backward"], w["params_after_first_step"]
    print(f"The walkthrough recomputed by jmlp: 2-2-1 ReLU, x = {fmt(w['x'])}, y = {fmt(w['y'])}, η = {fmt(w['learning_rate'])}, float64")
    print("\nForward")
    print(f"  z1 = W1·x + b1     = {fmt(f['z1'])}")
    print(f"  h  = relu(z1)      = {fmt(f['h'])}")
    print(f"  z2 = W2·h + b2 = ŷ = {fmt(f['z2'][0])}")
    print(f"  L  = ½(y − ŷ)²     = {fmt(w['loss'])}")
    print("\nBackward (hand-derived)")
    print(f"  dL/dŷ = −(y − ŷ)  = {fmt(b['dL_dy_hat'][0])}")
    print(f"  dW2 = dL/dz2 · h   = {fmt(b['dW2'])}")
    print(f"  db2 = dL/dz2       = {fmt(b['db2'][0])}")
    print(f"  dh  = dL/dz2 · W2  = {fmt(b['dh'])}")
    print(f"  dz1 = dh ⊙ relu'(z1) = {fmt(b['dz1'])}")
    print(f"  dW1 = dz1 ⊗ x      = {fmt(b['dW1'])}")
    print(f"  db1 = dz1          = {fmt(b['db1'])}")
    print(f"  jax.grad agrees: max |manual − autodiff| = {fmt(w['manual_vs_autodiff_max_abs_diff'])}")
    print("\nAfter one SGD step (θ ← θ − η·dθ, optax.sgd)")
    print(f"  W1 = {fmt(p['W1'])}\n  b1 = {fmt(p['b1'])}\n  W2 = {fmt(p['W2'])}\n  b2 = {fmt(p['b2'][0])}")
    losses = w["losses"]
    shown = sorted({*range(min(10, len(losses))), *range(9, len(losses), 10), len(losses) - 1})
    print(f"\nRepeat until good enough ({len(losses)} steps; L before each step's update)")
    print("  " + table([[i + 1, losses[i]] for i in shown], ["step", "L"]).replace("\n", "\n  "))
    print("\nWhat jmlp finds beyond the text")
    for note in w["findings"]:
        print(f"  - {note}")
    return 0


def _train(args) -> int:
    from .config import load
    from .experiment import train
    from .report import table, write_json

    config = load(args.config, args.set)
    out = _prepare_out(args.out, ["summary.json"], args.force)
    summary = train(config)
    splits = [(name, s) for name, s in (("train", summary["train"]), ("validation", summary["validation"])) if s]
    columns = ["loss", "accuracy"] if "accuracy" in summary["train"] else ["loss"]
    print(table([[name, *(s[c] for c in columns)] for name, s in splits], ["split", *columns]))
    print(f"steps: {summary['steps']}" + (" (stopped: loss < tol)" if summary["converged"] else ""))
    if out is not None:
        write_json(out / "summary.json", summary)
        print(f"wrote {out / 'summary.json'}")
    return 0


def use_every_cpu_core() -> None:
    """Expose one CPU device per core, unless the user chose a count in XLA_FLAGS.

    jax gives a CPU one device, and a sweep shards its runs over devices: with
    one device the batched program keeps about one core busy (benchmarks/NOTES.md).
    XLA reads the flag when its backend starts, so this must run before any jax
    computation; on a GPU or TPU machine the accelerator stays the default device.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={os.cpu_count() or 1}".strip()


CHECKPOINTS = "checkpoints"
OUTPUTS = ["results.csv", "config.toml", "loss_curves.png", "loss_vs_lr.png", "results.json"]


def _sweep_preflight(args):
    """Everything that can refuse the sweep, before any file is touched:
    ``(config, plan, out, resume)``."""
    from . import checkpoint as ckpt
    from .config import load, reload
    from .experiment import plan_sweep

    resume = None
    if args.resume:
        out = Path(args.resume)
        if args.out and Path(args.out).resolve() != out.resolve():
            raise BadValue(f"--resume {str(out)!r} continues in that folder; drop --out {args.out!r}")
        if not out.is_dir():
            raise BadValue(f"--resume {str(out)!r} is not a folder")
        if not ckpt.checkpoints(out / CHECKPOINTS):
            what = "a finished sweep (results.json)" if (out / "results.json").exists() else "no sweep"
            raise BadValue(f"--resume {str(out)!r} holds {what} and no checkpoint: nothing to resume")
        resume = ckpt.latest(out / CHECKPOINTS, warn=lambda m: print(m, file=sys.stderr))
        stored = resume["config"]
        config = load(args.config, args.set) if args.config else reload(stored, args.set)
        diff = ckpt.config_diff(stored, config)
        if diff:
            raise BadValue(
                f"--resume {str(out)!r}: the config differs from the checkpoint's in {', '.join(diff)}; "
                "resume with the config the sweep started with, or start a new sweep with --out"
            )
    else:
        if args.config is None:
            raise BadValue("give a config file to run, or --resume DIR to continue a sweep")
        config = load(args.config, args.set)
        out = Path(args.out) if args.out else None
        if out is not None and out.exists():
            if not out.is_dir():
                raise BadValue(f"--out {str(out)!r} exists and is not a folder")
            saved = ckpt.checkpoints(out / CHECKPOINTS)
            if saved and not args.force:
                raise BadValue(
                    f"--out {str(out)!r} holds an unfinished sweep (last checkpoint {saved[-1].name}): "
                    f"continue it with --resume {str(out)!r}, or pass --force to start over"
                )
            if any(out.iterdir()) and not args.force:
                raise BadValue(f"--out {str(out)!r} already exists and is not empty; choose another folder or pass --force to replace it")
    plan = plan_sweep(config)
    return config, plan, out, resume


def _print_plan(plan, out, resume) -> None:
    from .report import fmt
    from .sweep import _size

    n_lr, n_seed = len(plan.learning_rates), len(plan.seeds)
    devices, need = plan.mesh.devices.size, _size(plan.bytes_needed)
    print(f"plan: {plan.n_runs} runs ({n_lr} learning rates x {n_seed} seeds) x {plan.steps} steps on {devices} device(s), about {need} per process")
    lrs = [float(v) for v in plan.learning_rates]
    shown = fmt(lrs) if len(lrs) <= 8 else f"{fmt(lrs[:3])[:-1]}, …, {fmt(lrs[-3:])[1:]}"
    print(f"learning rates: {shown}")
    if resume is not None:
        print(f"resumes {out} from step {resume['done']} ({resume['path'].name})")
    print("dry run: nothing was run or written")


class _StopFlag:
    """Set by SIGINT or SIGTERM: the sweep checkpoints at the next chunk and exits.
    A second Ctrl-C quits without saving (when the running chunk returns to Python)."""

    def __init__(self):
        self.signal = None
        self._old = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, sig, frame):
        self.signal = sig
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("jmlp: stopping: saving a checkpoint after this chunk (Ctrl-C again to quit without it)", file=sys.stderr)

    def restore(self):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _sweep(args) -> int:
    import shutil
    import tempfile

    import jax

    from . import checkpoint as ckpt
    from . import distributed, plots
    from .experiment import Interrupted, run_sweep, sweep_report
    from .report import csv_text, fmt, toml_text, write_atomic, write_json

    multi = jax.process_count() > 1
    writer = distributed.is_writer()
    failure = None
    try:
        config, plan, out, resume = _sweep_preflight(args)
    except JmlpError as e:
        failure = e
    if multi:  # every process learns that one refused, instead of waiting for it forever
        refused = distributed.all_agree(failure is not None)
        if failure is None and refused.any():
            raise BadValue(f"process {int(refused.argmax())} refused the sweep; see its message")
    if failure is not None:
        raise failure
    if args.dry_run:
        if writer:
            _print_plan(plan, out, resume)
        return 0
    if multi:
        distributed.same_everywhere(ckpt.config_hash(config), "config")
        distributed.same_everywhere(f"{resume['done'] if resume else 0:016x}", "checkpoint step")

    if out is not None and writer and resume is None:
        if out.exists() and args.force:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
    bar = None
    if writer and not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=plan.steps, initial=resume["done"] if resume else 0, unit="step", desc="sweep", file=sys.stderr)

    def progress(done, total):
        bar.update(done - bar.n)

    def save(folder, snapshot):
        return ckpt.save(folder, snapshot, config) if writer else None

    flag = _StopFlag() if out is not None else None

    def stop():
        requested = flag.signal is not None
        return distributed.any_process(requested) if multi else requested

    try:
        result = run_sweep(
            config, progress if bar else None, plan=plan, checkpoints=None if out is None else out / CHECKPOINTS,
            resume=resume, stop=stop if flag else None, save=save,
        )  # fmt: skip
    except Interrupted as e:
        if bar:
            bar.close()  # before the message, not after it (closing twice is harmless)
        if writer:
            where = f"saved {e.checkpoint}" if e.checkpoint else "saved nothing new"
            again = " (with the same --coordinator/--num-processes/--process-id on every process)" if multi else ""
            print(f"jmlp: interrupted at step {e.done} of {plan.steps}; {where}\nresume with: jmlp sweep --resume {out}{again}", file=sys.stderr)
        return 143 if flag.signal == signal.SIGTERM else 130
    finally:
        if bar:
            bar.close()
        if flag:
            flag.restore()
    if not writer:
        return 0
    print(result.table())
    best = result.best()
    if best is None:
        print("best: none (every run diverged)")
    else:
        key = "val_loss" if result.val_loss is not None else "final_loss"
        print(f"best learning rate: {fmt(best['learning_rate'])} ({key} {fmt(best[key][0])})")
    if out is None:
        return 0
    # Written into a temporary folder inside DIR, then each file renamed into
    # place, results.json last; the checkpoints go only once every file is in.
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".results."))
    try:
        write_json(tmp / "results.json", sweep_report(config, result))
        write_atomic(tmp / "results.csv", csv_text(result.runs()))
        write_atomic(tmp / "config.toml", toml_text(config))
        plots.loss_curves(result, tmp / "loss_curves.png")
        plots.loss_vs_learning_rate(result, tmp / "loss_vs_lr.png")
        for name in OUTPUTS:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
    print(f"wrote {out}/: {', '.join(sorted(OUTPUTS))}")
    return 0


def _prepare_out(out, names, force):
    """Check the output folder before any work, so a refusal loses nothing."""
    if out is None:
        return None
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadValue(f"--out {str(out)!r} exists and is not a folder")
    clash = [n for n in names if (out / n).exists()]
    if clash and not force:
        raise BadValue(f"--out {str(out)!r} already holds {', '.join(clash)}; choose another folder or pass --force to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BadValue(f"cannot create --out folder {str(out)!r}: {e.strerror}") from None
    return out


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="jmlp", description="Train multilayer perceptrons with JAX: compiled loops, hand-derived gradients, checks.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    e = sub.add_parser("explain", help="recompute the seed walkthrough with jmlp's own functions")
    e.add_argument("--x", type=numbers, default=[2.0, 3.0], help="the input, comma-separated (default 2,3)")
    e.add_argument("--y", type=number, default=10.0, help="the target (default 10)")
    e.add_argument("--lr", type=number, default=0.1, help="the SGD learning rate η (default 0.1)")
    e.add_argument("--steps", type=integer, default=100, help="how many steps to run (default 100)")
    e.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    e.set_defaults(run=_explain)

    def config_command(name, help, out, force):
        c = sub.add_parser(name, help=help)
        c.add_argument("config", nargs="?" if name == "sweep" else None, help="the TOML config file")
        c.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value (repeatable)")
        c.add_argument("--out", help=out)
        c.add_argument("--force", action="store_true", help=force)
        return c

    config_command("train", "one training run from a TOML config", "folder to write summary.json into",
                   "replace an existing summary.json in --out").set_defaults(run=_train)
    s = config_command("sweep", "a learning-rate x seed grid from a config's [sweep] section, as one compiled program",
                       "folder for checkpoints while it runs, then results.json, results.csv, config.toml and plots",
                       "replace an existing --out folder")
    s.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR from its last good checkpoint (CONFIG optional)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--dry-run", action="store_true", help="check everything and print the plan (runs, devices, memory); run nothing")
    d = s.add_argument_group("several processes (jax.distributed; or JMLP_COORDINATOR etc., or SLURM/Open MPI detection)")
    d.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address, the same on every process")
    d.add_argument("--num-processes", type=integer, metavar="N", help="how many processes take part")
    d.add_argument("--process-id", type=integer, metavar="I", help="this process's index, 0..N-1")
    s.set_defaults(run=_sweep)

    gradcheck_cli.add_parser(sub)
    return p


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command == "sweep":
            from . import distributed

            use_every_cpu_core()
            settings = distributed.settings(args.coordinator, args.num_processes, args.process_id)
            if settings is not None and os.environ.get("JMLP_SUPERVISED") != "1":
                return distributed.supervise(sys.argv[1:] if argv is None else list(argv), settings)
            if settings is not None:
                distributed.initialize(settings)
        return args.run(args)
    except JmlpError as e:
        print(f"jmlp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jmlp: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        # Across processes, a peer that dies fails the next collective here
        # (a runtime error from XLA): a fault to report, not a bug to trace.
        from .distributed import is_peer_failure, lost_peer

        if os.environ.get("JMLP_SUPERVISED") != "1" or not is_peer_failure(e):
            raise
        print(f"jmlp: error: {lost_peer(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
