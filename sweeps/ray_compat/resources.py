"""What an embedded Ray will offer on this machine.

Internal used: `ray._private.utils.get_num_cpus` (cgroup-aware: a container's CPU quota, not the
host's core count), which `ray.init` itself uses for the local node.
"""

from __future__ import annotations

import os


def embedded_ray_cpus() -> float:
    try:
        from ray._private.utils import get_num_cpus
    except ImportError:  # a Ray without it: the plain count (the canary test says which)
        return float(os.cpu_count() or 1)
    return float(get_num_cpus())
