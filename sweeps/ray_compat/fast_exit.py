"""Leaving the interpreter after a command without its teardown (CPython's `atexit._run_exitfuncs`).

A sweep's driver has imported ray, Ray Tune, mlflow, pandas, pyarrow and sqlalchemy (3,000 modules),
`best` or `status` mlflow, pandas and matplotlib; freeing all of it at exit takes 0.5-1.5 s on 2 cores
and does nothing the operating system does not do when the process ends. `exit_now` runs what matters of a normal exit (the atexit handlers: Ray's
shutdown, MLflow's, logging's flush; then stdout and stderr) and ends the process.
"""

from __future__ import annotations

import atexit
import os
import sys


def exit_now(code: int):
    atexit._run_exitfuncs()  # noqa: SLF001 - what sys.exit would run, in its order
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed, or a broken pipe: nothing more to say
            pass
    os._exit(code)
