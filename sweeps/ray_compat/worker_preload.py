"""Modules an embedded Ray's worker processes import as they start, before any work reaches them:
the raylet's `preload_python_modules` setting (passed to each worker as `--worker-preload-modules`;
`ray.init(_system_config=...)`). Workers the raylet prestarts when the driver connects import them too,
so that the imports of the first trials happen while the driver is still getting ready.

The raylet wants its prestarted workers for about two seconds, then kills those idle for longer than
`idle_worker_killing_time_threshold_ms` (1 s): the first trials' leases often came just after, started
new workers, and every import ran twice on the same cores (seen as 3 or 4 workers for 2 trials, each
importing torch, Ray Tune and MLflow: about 10 CPU-s apiece). A preloaded worker stays a minute."""

from __future__ import annotations


PRELOADED_IDLE_MS = 60_000


def preload_system_config(modules: list[str]) -> dict:
    """`_system_config` for ray.init (an embedded Ray only: a cluster's raylets are already running)."""
    if not modules:
        return {}
    return {"preload_python_modules": list(modules), "idle_worker_killing_time_threshold_ms": PRELOADED_IDLE_MS}
