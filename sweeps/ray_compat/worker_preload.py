"""Modules an embedded Ray's worker processes import as they start, before any work reaches them:
the raylet's `preload_python_modules` setting (passed to each worker as `--worker-preload-modules`;
`ray.init(_system_config=...)`). Workers the raylet prestarts when the driver connects import them too,
so that the imports of the first trials happen while the driver is still getting ready.

Those prestarted workers are idle until the trials' actors come, and the raylet keeps at most
`num_workers_soft_limit` idle workers, by default the CPUs *available*: Tune's placement groups reserve
every CPU just before the actors' leases, the limit drops to 0, and the raylet killed both prestarted
workers in that moment about one start in three (new workers then imported everything again: the first
trial 24 s after `fit` instead of 11). The limit is set to the node's CPUs: idle workers beyond that are
still killed after Ray's one second."""

from __future__ import annotations


def preload_system_config(modules: list[str], cpus: float) -> dict:
    """`_system_config` for ray.init (an embedded Ray only: a cluster's raylets are already running)."""
    if not modules:
        return {}
    return {"preload_python_modules": list(modules), "num_workers_soft_limit": max(1, int(cpus))}
