"""The `status` and `list` subcommands of `mixup-sweep` (parsers and handlers)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..jobs.commands import STORE_HELP, open_store


def add_parsers(sub) -> None:
    status = sub.add_parser("status", help="where a sweep stands: trials, epochs, ETA, best so far (from MLflow)",
                            description="Progress and state of a sweep, read from the tracking store alone.")
    status.add_argument("name", metavar="NAME", nargs="?", help="the sweep (default: the newest in the store)")
    status.add_argument("--tracking-uri", help=STORE_HELP)
    status.add_argument("--watch", action="store_true", help="redraw every --interval seconds until the sweep ends")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between redraws with --watch (default 2)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=status_command)

    listing = sub.add_parser("list", help="every sweep in the tracking store, newest first",
                             description="Every sweep in a tracking store, newest first: state, size, best stop epoch.")
    listing.add_argument("--tracking-uri", help=STORE_HELP)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=list_command)


def _newest_sweep(client) -> str:
    from ..best.selection import SelectionError
    from .listing import list_sweeps

    rows = list_sweeps(client)
    if not rows:
        raise SelectionError("no sweeps in this tracking store (start one: mixup-sweep run SPEC)")
    return rows[0]["name"]


def status_command(args: argparse.Namespace) -> int:
    from ..best.selection import SelectionError
    from .status import format_status, sweep_status

    try:
        client, uri = open_store(args.tracking_uri)
        name = args.name or _newest_sweep(client)
        while True:
            st = sweep_status(client, uri, name)
            if args.json:
                print(json.dumps(st.to_dict(), indent=None if args.watch else 2), flush=True)
            elif args.watch and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J" + format_status(st) + "\n")  # redraw in place
                sys.stdout.flush()
            else:
                print(format_status(st) + ("\n" if args.watch else ""), flush=True)
            if not args.watch or st.ended:
                return 0
            time.sleep(max(0.2, args.interval))
    except SelectionError as e:
        print(f"mixup-sweep: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


def list_command(args: argparse.Namespace) -> int:
    from ..best.selection import SelectionError
    from .listing import format_listing, list_sweeps

    try:
        client, _ = open_store(args.tracking_uri)
    except SelectionError as e:
        print(f"mixup-sweep: error: {e}", file=sys.stderr)
        return e.exit_code
    rows = list_sweeps(client)
    print(json.dumps(rows, indent=2) if args.json else format_listing(rows))
    return 0
