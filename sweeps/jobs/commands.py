"""The `submit`, `logs` and `stop` subcommands of `mixup-sweep` (parsers and handlers)."""

from __future__ import annotations

import argparse
import os
import sys

from mixup_core import ConfigError

STORE_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)"
DASHBOARD_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_DASHBOARD_ADDRESS")


def add_parsers(sub, spec_help: str) -> None:
    submit = sub.add_parser(
        "submit", help="run a sweep's driver as a Ray Job on a cluster",
        description="Validate and preflight a sweep here, then run its driver as a Ray Job on the cluster "
                    "(the same sweep as `run`). Prints the job id and the commands to follow it.")
    submit.add_argument("spec", metavar="SPEC", nargs="?", help=spec_help)
    submit.add_argument("--resume", metavar="NAME", help="submit `resume NAME` instead: continue an interrupted sweep")
    submit.add_argument("--address", help="the Ray dashboard (job API), e.g. http://HEAD:8265 "
                                          "(default: $RAY_API_SERVER_ADDRESS, else $RAY_DASHBOARD_ADDRESS)")
    submit.add_argument("--tracking-uri", help="an MLflow server every node reaches (default: $MLFLOW_TRACKING_URI)")
    submit.add_argument("--storage-path", help="s3://... or an absolute directory every node shares "
                                               "(default: $MIXUP_SWEEP_STORAGE)")
    submit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a trial or spec key, as with `run`")
    submit.add_argument("--follow", action="store_true", help="stream the driver's output until it ends")
    submit.set_defaults(handler=submit_command)

    logs = sub.add_parser("logs", help="a submitted sweep's driver output",
                          description="The output of a submitted sweep's driver (its Ray job).")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("--tracking-uri", help=STORE_HELP)
    logs.add_argument("--follow", action="store_true", help="stream until the job ends")
    logs.set_defaults(handler=logs_command)

    stop = sub.add_parser("stop", help="stop a running sweep gracefully (resumable)",
                          description="Stop a running sweep: Ray Tune saves its state, trials stop, the sweep "
                                      "stays resumable.")
    stop.add_argument("name", metavar="NAME")
    stop.add_argument("--tracking-uri", help=STORE_HELP)
    stop.set_defaults(handler=stop_command)


def _dashboard(address):
    address = address or next((os.environ[v] for v in DASHBOARD_ENV if os.environ.get(v)), None)
    if not address:
        raise ConfigError("submit: pass --address http://HEAD:8265 (the Ray dashboard; or set $RAY_API_SERVER_ADDRESS)")
    return address.rstrip("/")


def submit_command(args: argparse.Namespace) -> int:
    from .. import preflight, tracking
    from .submit import check_cluster_paths, submit

    if bool(args.spec) == bool(args.resume):
        raise ConfigError("submit: give a SPEC to start a sweep, or --resume NAME to continue one (not both)")
    if args.resume and args.overrides:
        raise ConfigError("submit --resume: --set applies to new sweeps only (a resumed sweep keeps its spec)")
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    storage_path = args.storage_path or os.environ.get("MIXUP_SWEEP_STORAGE")
    check_cluster_paths(tracking_uri, storage_path)
    sweep = None
    if args.spec:
        from .. import preflight as checks
        from ..spec import load_sweep

        sweep = load_sweep(args.spec, args.overrides)
        for note in sweep.notes:
            print(f"note: {note}", file=sys.stderr)
        checks.check_trial_data(sweep, "cluster")  # files present here are checked; others may be on the nodes
    target = tracking.resolve_tracking(tracking_uri)
    preflight.check_tracking_uri(target.uri, "--tracking-uri" if args.tracking_uri else "$MLFLOW_TRACKING_URI")
    return submit(sweep, _dashboard(args.address), target.uri, storage_path, args.follow, resume_name=args.resume)


def open_store(tracking_uri):
    """(client, uri) of an existing store, the same default as run; SelectionError when it is missing."""
    from .. import preflight
    from ..best.command import resolve_store
    from ..tracking import client_for

    uri = resolve_store(tracking_uri)
    preflight.check_tracking_uri(uri, "--tracking-uri" if tracking_uri else "$MLFLOW_TRACKING_URI")
    return client_for(uri), uri


def _parent(name: str, tracking_uri):
    from ..best.command import find_parent_run
    from ..best.selection import SelectionError

    try:
        client, uri = open_store(tracking_uri)
        _, parent, _ = find_parent_run(client, name, None, uri)
    except SelectionError as e:
        raise ConfigError(str(e)) from None
    return parent


def logs_command(args: argparse.Namespace) -> int:
    from .control import show_logs

    return show_logs(args.name, _parent(args.name, args.tracking_uri), args.follow)


def stop_command(args: argparse.Namespace) -> int:
    from .control import stop_sweep

    return stop_sweep(args.name, _parent(args.name, args.tracking_uri), stop_local_driver)


def stop_local_driver(name: str, parent) -> int:
    """A sweep driven by `mixup-sweep run`/`resume`, not a Ray job: SIGTERM to the driver that holds its
    lease (lease.py), which it treats as Ctrl-C (resumable, exit 143). Only on the driver's own host."""
    import signal

    from .. import keys
    from ..lease import read_lease

    storage = parent.data.tags.get(keys.STORAGE_TAG)
    holder = read_lease(storage) if storage else None
    if holder is None or not holder.live():
        raise ConfigError(f"sweep {name!r} has no live driver (its run says RUNNING, but no driver holds its lease "
                          f"at {storage}): it was killed; continue it with `mixup-sweep resume {name}`")
    if not holder.on_this_host():
        raise ConfigError(f"sweep {name!r} is driven from another machine ({holder.describe()}): stop it there with "
                          f"`mixup-sweep stop {name}`, Ctrl-C or SIGTERM; it stays resumable")
    os.kill(holder.pid, signal.SIGTERM)
    print(f"sweep {name!r}: sent SIGTERM to its driver ({holder.describe()}); it saves its state and exits "
          f"resumably; continue with: mixup-sweep resume {name}")
    return 0
