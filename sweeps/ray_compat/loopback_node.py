"""`ray start` for the nodes of the local development cluster, kept on 127.0.0.1:
`python -m sweeps.ray_compat.loopback_node start --node-ip-address=127.0.0.1 ...`.

On Linux, Ray swaps a loopback address for the machine's routable IP wherever it meets one
(`services.resolve_ip_for_localhost`: `ray start --node-ip-address`, `ray.init(address=)`) and would
then listen on the external interface. RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray keep 127.0.0.1
(its single-machine mode) in every node process, driver and client; only the `ray start` CLI itself
then refuses to add a worker node. This entry point re-allows worker nodes and keeps the address as
given, then runs Ray's own CLI.

Internals used: `ray._private.ray_constants.ENABLE_RAY_CLUSTER`,
`ray._private.services.resolve_ip_for_localhost`, `ray.scripts.scripts.main`.
"""

from __future__ import annotations

import sys


def main() -> int:
    from ray._private import ray_constants, services

    ray_constants.ENABLE_RAY_CLUSTER = True
    services.resolve_ip_for_localhost = lambda host: host
    from ray.scripts.scripts import main as ray_cli

    sys.argv[0] = "ray"
    return ray_cli()


if __name__ == "__main__":
    sys.exit(main())
