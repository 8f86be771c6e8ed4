"""A trial worker SIGTERMed by Ray's shutdown must not print a traceback into the user's terminal: Ray's
handler raises SystemExit wherever the worker is, and inside a finalizer Python ignores it but prints
"Exception ignored in ..." (seen in CI after a finished sweep). Other finalizer errors still print."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_system_exit_in_a_finalizer_is_quiet_and_other_errors_are_not():
    script = textwrap.dedent("""
        import os, signal, weakref
        from sweeps.trial.trainable import _quiet_sigterm_in_finalizers

        _quiet_sigterm_in_finalizers()
        _quiet_sigterm_in_finalizers()  # every trial calls it: installed once

        def sigterm(*_):  # what Ray's worker handler does
            raise SystemExit(1)

        class Held:
            pass

        def on_collect(_):
            os.kill(os.getpid(), signal.SIGTERM)  # the signal lands while a finalizer runs

        def broken(_):
            raise ValueError("a real finalizer bug")

        signal.signal(signal.SIGTERM, sigterm)
        a, b = Held(), Held()
        refs = [weakref.ref(a, on_collect), weakref.ref(b, broken)]
        del a, b
        print("still running")
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "still running" in res.stdout
    assert "SystemExit" not in res.stderr
    assert "ValueError: a real finalizer bug" in res.stderr
