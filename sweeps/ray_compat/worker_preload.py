"""Modules an embedded Ray's worker processes import as they start, before any work reaches them:
the raylet's `preload_python_modules` setting (passed to each worker as `--worker-preload-modules`;
`ray.init(_system_config=...)`). Workers the raylet prestarts when the driver connects import them too,
so that the imports of the first trials happen while the driver is still getting ready."""

from __future__ import annotations


def preload_system_config(modules: list[str]) -> dict:
    """`_system_config` for ray.init (an embedded Ray only: a cluster's raylets are already running)."""
    return {"preload_python_modules": list(modules)} if modules else {}
