"""`mixup-sweep`: run, resume and summarise sweeps.

  mixup-sweep run SPEC [--address ADDR] [--tracking-uri URI] [--storage-path P] [--set k=v ...] [--dry-run]
  mixup-sweep resume NAME [--address ADDR] [--tracking-uri URI] [--storage-path P]
  mixup-sweep best NAME [NAME ...] [--json] [--wide] [--tracking-uri URI] [--run-id ID] [--metric M]
  mixup-sweep cluster up|status|down [...]   the local development cluster (devcluster/)

SPEC is a YAML path or the name of a bundled spec (sweeps/specs/). `--set` semantics: see sweeps/spec.py.
Every usage or configuration error is one line on stderr and exit code 2, before anything is created.
Exit codes: 0 done, 1 some trials failed, 2 bad input, 130 interrupted by Ctrl-C, 143 stopped by SIGTERM
(both resumable). One driver per sweep (lease.py): a second run/resume of a live sweep exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from mixup_core import ConfigError

from .jobs import commands as jobs_commands
from .monitor import commands as monitor_commands
from .spec import bundled_spec_names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixup-sweep", description="Mixup sweeps on Ray Tune, tracked in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{run,resume,best,submit,status,list,logs,stop,cluster}")

    def cluster_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--address", help="an existing Ray cluster (default: $RAY_ADDRESS, else an embedded local Ray)")
        p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
        p.add_argument("--storage-path", help="where Ray keeps results and checkpoints: a directory or a URI "
                                              "(default: ./ray_results)")

    run = sub.add_parser("run", help="start a sweep", description="Start a sweep.")
    run.add_argument("spec", metavar="SPEC", help=f"a spec file, or a bundled spec: {', '.join(bundled_spec_names())}")
    cluster_args(run)
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a trial key (mixup.alpha=0.5, trial.seed=1; pins a swept key) or a spec key "
                          "(max_concurrent=4, grid.seed=[0,1], optuna.n_trials=8, resources.gpu=0.5)")
    run.add_argument("--dry-run", action="store_true", help="list the trials and their cost in epochs; start nothing")

    resume = sub.add_parser("resume", help="continue an interrupted sweep",
                            description="Continue an interrupted sweep: finished trials are kept, the rest continue "
                                        "from their last checkpoint, logging into the same MLflow runs.")
    resume.add_argument("name", metavar="NAME")
    cluster_args(resume)

    best = sub.add_parser("best", help="the best configuration and early-stop epoch, from MLflow",
                          description="The best early-stop epoch and configuration of one or several sweeps, "
                                      "with each group compared with the best seed by seed.")
    best.add_argument("names", nargs="+", metavar="NAME", help="a sweep's name; several: side by side")
    best.add_argument("--json", action="store_true",
                      help="machine-readable output (several NAMEs: a mapping name -> document)")
    best.add_argument("--wide", action="store_true", help="every column of the table, however wide")
    best.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    best.add_argument("--run-id", help="the sweep (parent) run to summarise (default: the newest of NAME)")
    best.add_argument("--metric", help="select on another logged metric (printed only, not written to MLflow)")
    jobs_commands.add_parsers(sub, spec_help=f"a spec file, or a bundled spec: {', '.join(bundled_spec_names())}")
    monitor_commands.add_parsers(sub)
    cluster = sub.add_parser("cluster", add_help=False, help="the local multi-node development cluster "
                                                             "(up|status|down; mixup-sweep cluster --help)")
    cluster.add_argument("cluster_args", nargs=argparse.REMAINDER)
    return parser


def _after_sweep(outcome) -> int:
    if outcome.interrupted:
        how = "stopped by SIGTERM" if outcome.terminated else "interrupted"
        print(f"sweep {outcome.name!r} {how}: {outcome.remaining} of {outcome.n_trials} {outcome.unit} to go; "
              f"continue with: mixup-sweep resume {outcome.name}", file=sys.stderr)
        return outcome.exit_code
    from .best.command import print_selection_after_sweep  # its background import is joined (shutdown_ray)

    print_selection_after_sweep(outcome.name, outcome.tracking_uri, outcome.parent_run_id)
    failed = max(outcome.failed_runs, len(outcome.errored))
    print(f"sweep {outcome.name!r}: {outcome.finished_runs} trial(s) finished, {failed} failed; "
          f"MLflow run {outcome.parent_run_id}", file=sys.stderr)
    return outcome.exit_code


def _is_loopback(address: str) -> bool:
    import ipaddress

    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host = rest.rpartition(":")[0].strip("[]") if ":" in rest else rest
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _keep_embedded_ray_on_loopback(address: Optional[str]) -> None:
    """An embedded Ray (no --address, no $RAY_ADDRESS), or a cluster on a loopback address (127.x,
    localhost, ::1), serves this machine only: Ray's single-node mode (named for macOS/Windows, where
    it is the default) keeps 127.0.0.1 instead of swapping it for the machine's external IP
    (ray_compat/loopback_node.py). Read when ray is imported, so set before that."""
    from .ray_address import cluster_address

    target = cluster_address(address)
    if target is None or _is_loopback(target):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def _preflight(args: argparse.Namespace) -> None:
    """Tracking URI and Ray address well formed and reachable (short timeouts), before anything is created."""
    from . import preflight, tracking

    target = tracking.resolve_tracking(args.tracking_uri)
    preflight.check_tracking_uri(target.uri, "--tracking-uri" if args.tracking_uri else "$MLFLOW_TRACKING_URI")
    preflight.check_ray_address(args.address)
    preflight.check_storage_path(args.storage_path)


def _run(args: argparse.Namespace) -> int:
    from .plan.dry_run import describe
    from .spec import load_sweep

    sweep = load_sweep(args.spec, args.overrides)
    for note in sweep.notes:
        print(f"note: {note}", file=sys.stderr)
    if args.dry_run:
        print(describe(sweep))
        return 0
    _preflight(args)  # a bad URI or address fails here, before anything is created or Ray imported
    from .preflight import check_local_resources, check_trial_data

    check_trial_data(sweep, args.address)
    _keep_embedded_ray_on_loopback(args.address)  # before anything imports ray
    note = check_local_resources(sweep, args.address)
    if note:
        print(f"note: {note}", file=sys.stderr)
    from .runner import run_sweep

    return _after_sweep(run_sweep(sweep, args.address, args.tracking_uri, args.storage_path))


def _resume(args: argparse.Namespace) -> int:
    _preflight(args)
    _keep_embedded_ray_on_loopback(args.address)
    from .runner import resume_sweep

    return _after_sweep(resume_sweep(args.name, args.address, args.tracking_uri, args.storage_path))


def _best(args: argparse.Namespace) -> int:
    from . import preflight, tracking
    from .best.command import run_best

    uri = tracking.resolve_tracking(args.tracking_uri).uri  # the same default store as run/resume
    preflight.check_tracking_uri(uri, "--tracking-uri" if args.tracking_uri else "$MLFLOW_TRACKING_URI")
    return run_best(args.names, uri, args.json, args.run_id, metric=args.metric, wide=args.wide)


def _owner_only_files() -> None:
    """Everything mixup-sweep and the Ray processes it starts create (the SQLite store, artifacts,
    checkpoints, Ray's storage and session files) is owner-only by default: experiment data is often
    private and clusters are shared machines. MIXUP_SWEEP_UMASK (octal, e.g. 027) chooses another."""
    value = os.environ.get("MIXUP_SWEEP_UMASK", "077")
    try:
        mask = int(value, 8)
    except ValueError:
        raise ConfigError(f"$MIXUP_SWEEP_UMASK={value!r} is not an octal umask (e.g. 077, 027)") from None
    if not 0 <= mask <= 0o777:
        raise ConfigError(f"$MIXUP_SWEEP_UMASK={value!r} is not an octal umask (e.g. 077, 027)")
    os.umask(mask)


def _exit_after_sweep(code: int) -> None:
    """The program (not a caller passing argv, e.g. a test) ends here once a sweep ran (Ray is shut down
    already: runner.shutdown_ray): the atexit handlers run, then the process ends without the
    interpreter's teardown of thousands of modules (ray_compat/fast_exit.py): 0.5-1.5 s less.
    Ctrl-C and SIGTERM are ignored meanwhile (a second or two): the sweep is over and its outcome
    printed, so a signal now must not turn its exit code into an interruption's."""
    import signal

    from .ray_compat.fast_exit import exit_now

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    exit_now(code)


def main(argv: Optional[list[str]] = None) -> int:
    argv_given = argv
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        _owner_only_files()
    except ConfigError as e:
        print(f"mixup-sweep: error: {e}", file=sys.stderr)
        return 2
    if argv[:1] == ["cluster"]:  # its own parser (devcluster/commands.py), options and --help included
        from .devcluster import main as devcluster_main

        return devcluster_main(argv[1:])
    args = _parser().parse_args(argv)
    # Ray Tune's table reporter (metric columns) instead of its newer free-form output.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Ray snapshots its experiment state whenever trials checkpointed num_to_keep times: with
    # one checkpoint per short epoch that is often, by design (resume consistency); don't warn.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    from . import stop_signals

    if args.command in ("run", "resume"):
        stop_signals.install()  # SIGTERM = Ctrl-C: resumable, exit 143 (stop_signals.py)
    try:
        handler = getattr(args, "handler", None)
        if handler is not None:  # submit, logs, stop (jobs/commands.py); status, list (monitor/commands.py)
            code = handler(args)
        else:
            code = {"run": _run, "resume": _resume, "best": _best}[args.command](args)
        if argv_given is None and args.command in ("run", "resume"):
            _exit_after_sweep(code)
        if argv_given is None:  # the program: its work is done and said; no interpreter teardown (0.5 s)
            from .ray_compat.fast_exit import exit_now

            exit_now(code)
        return code
    except ConfigError as e:
        print(f"mixup-sweep: error: {e}", file=sys.stderr)
        return 2
    except UnicodeDecodeError as e:  # a file of the user's that is not text: one line, not a traceback
        print(f"mixup-sweep: error: a file is not UTF-8 text ({e.reason} at offset {e.start})", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - only the tracking store lost mid-sweep is expected here
        if type(e).__name__ != "TrackingLost":
            raise
        print(f"mixup-sweep: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        name = getattr(args, "name", None) or "NAME"
        how = "stopped by SIGTERM" if stop_signals.terminated() else "interrupted"
        print(f"mixup-sweep: {how}; continue with: mixup-sweep resume {name}", file=sys.stderr)
        return stop_signals.exit_code_of_interrupt()


if __name__ == "__main__":
    sys.exit(main())
