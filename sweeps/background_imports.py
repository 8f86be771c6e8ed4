"""Modules imported in a thread while the process waits for something else (a sweep's trials, a
search of its runs on a tracking server): the import's CPU time leaves the critical path. Whoever
needs a module imports it again as usual (at once when the thread is done, after it otherwise), and
an import that fails there says why."""

from __future__ import annotations

import contextlib
import importlib
import threading

# What drawing a selection needs (sweeps/best/plots.py): 0.6-0.8 s on 2 cores.
PLOTTING = ("matplotlib.figure", "matplotlib.backends.backend_agg")


def import_in_background(*modules: str) -> None:
    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    threading.Thread(target=load, name="background-imports", daemon=True).start()
