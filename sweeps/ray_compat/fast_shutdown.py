"""An embedded Ray's shutdown without its one-second wait for the autoscaler monitor.

`ray.shutdown()` stops the node's processes one after another, each with SIGTERM and up to a second's
wait, then SIGKILL. Every process but one exits in a few milliseconds; the autoscaler monitor answers
SIGTERM by reporting its own death to the GCS (which is already gone by then: Ray stops the GCS before
it), so it is always killed after the full second. `kill_autoscaler_monitor()` SIGKILLs it first, the
end Ray reaches anyway, without the wait (and without the report, which would reach the driver as
"The autoscaler failed" while the GCS is still up).

Internals used: `ray._private.worker._global_node` (the node this driver started), its `all_processes`
and `ray._private.ray_constants.PROCESS_TYPE_MONITOR`.
"""

from __future__ import annotations

import contextlib
import subprocess


def kill_autoscaler_monitor() -> None:
    try:
        from ray._private import ray_constants, worker
    except ImportError:
        return
    node = getattr(worker, "_global_node", None)
    processes = getattr(node, "all_processes", None)
    if not isinstance(processes, dict):
        return
    for info in processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
        process = getattr(info, "process", None)
        if process is not None and process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=2)
