"""SIGTERM does what Ctrl-C does (Kubernetes, KubeRay, spot preemption, `ray job stop` send SIGTERM).

Ray Tune stops a sweep gracefully on SIGINT: it saves its experiment state one last time, stops the
trials and returns from `fit`, and the sweep stays resumable. SIGTERM used to reach Ray's own handler
(`sys.exit` from whatever ran at that moment), and the driver died of SIGABRT (exit 134). Here SIGTERM
is routed to whatever handles SIGINT at that moment (Tune's graceful stop during `fit`, Python's
KeyboardInterrupt elsewhere) and remembered, so the driver exits 143 instead of 130.

`ray.init` installs its own SIGTERM handler: `install()` again after it (runner.start_ray does).
"""

from __future__ import annotations

import signal
import threading

_terminated = threading.Event()


def _on_sigterm(signum, frame) -> None:
    _terminated.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signal.SIGINT, frame)  # e.g. Ray Tune's: save the state, stop the trials, return from fit
        return
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGTERM like SIGINT (main thread only; elsewhere signal handlers cannot be set)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def terminated() -> bool:
    """Whether this process has received SIGTERM."""
    return _terminated.is_set()


def exit_code_of_interrupt() -> int:
    return 143 if terminated() else 130
