"""Modules imported in a thread while the process waits for something else (a sweep's trials): the
import's CPU time leaves the critical path. Whoever needs a module joins the thread first
(join_background_imports), then imports it again as usual (at once), and an import that fails there
says why."""

from __future__ import annotations

import contextlib
import importlib
import threading

# What drawing a selection needs (sweeps/best/plots.py): 0.6-0.8 s on 2 cores.
PLOTTING = ("matplotlib.figure", "matplotlib.backends.backend_agg")


_threads: list[threading.Thread] = []


def import_in_background(*modules: str) -> None:
    def load() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=load, name="background-imports", daemon=True)
    _threads.append(thread)
    thread.start()


def join_background_imports() -> None:
    """Wait for them before importing any of the same modules in this thread: two threads importing
    one package at once can meet in the middle, and one of them then gets a partially initialised
    module (an ImportError that only happens sometimes; a first sweep on a new machine hit it)."""
    while _threads:
        _threads.pop().join()
