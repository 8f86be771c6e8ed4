"""An embedded Ray head that starts only what a one-node sweep uses, and starts it without idle waits.

`ray.init(address="local", include_dashboard=False)` still starts two processes nothing here uses:
  * the API server (`dashboard.py`), which with the dashboard off loads one module, usage statistics,
    off here too; `ray.init` waits for it to announce its URL before it starts the raylet (about 2 s
    and 1.7 CPU-s before anything else can start);
  * the autoscaler monitor, for a node whose size is fixed (about 1 CPU-s while the node starts).
`lean_head()` is a context for that `ray.init` call: the head node it starts skips both. Nothing of
this sweep talks to either (the job API, the state API and the dashboard belong to a cluster's head,
`ray start`, which this never touches).

It also takes out two idle waits of up to a second each in `ray.init` (seen in the raylet's log and the
driver's profile of every start measured):
  * the raylet connects to its own object store, started a moment before in a thread of its own; when
    that store is not listening yet, it sleeps `raylet_client_connect_timeout_milliseconds` (1000)
    before it tries again. `LEAN_HEAD_SYSTEM_CONFIG` retries every 50 ms, as many times more, so the
    deadline stays Ray's 10 s (the setting is Ray's own, for every local socket a Ray process connects
    to: the driver's and workers' connections to the raylet retry as fast);
  * once it has started the raylet, `ray.init` asks the GCS for the node, and Ray's accessor sleeps one
    second between tries (hard-coded) while the raylet waits for its agents: the node, registered
    about 1.5 s after its start, is found after 2 s. Here the head polls the GCS every 20 ms until the
    node is registered, and Ray's own loop then finds it at once (it keeps its timeout and messages:
    this gives up on any error and leaves the rest to Ray).

And the driver does not import the dashboard's dependencies (aiohttp, OpenTelemetry, ...: 0.3 s of its
CPU, under the GIL the MLflow set-up beside `ray.init` needs too) only to learn whether they are
installed, which decides whether the raylet starts its dashboard agent in its minimal mode: here they
are looked up without being imported (`importlib.util.find_spec`), and a missing one sends the
question back to Ray's own check, which imports them and says what is missing.

Internals used: `ray._private.node.Node.start_head_processes`, `Node.start_api_server`, `Node._webui_url`,
`RayParams.no_monitor`, `Node.start_ray_processes`, `Node.get_gcs_client().get_all_node_info`,
`Node.head`, `Node._node_id`, `ray._private.utils.get_dashboard_dependency_error` and the modules it
imports (`ray.dashboard.optional_deps`).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import sys
import threading
import time

_patching = threading.Lock()

# `ray.init(_system_config=...)` of an embedded head: Ray's default retries 10 times at 1000 ms.
LEAN_HEAD_SYSTEM_CONFIG = {"raylet_client_connect_timeout_milliseconds": 50, "raylet_client_num_connect_attempts": 200}

REGISTRATION_POLL_S = 0.02
REGISTRATION_WAIT_S = 30.0  # Ray's own raylet_start_wait_time_s: beyond it, Ray's loop says what failed


# What ray/dashboard/optional_deps.py imports: the dashboard agent's full mode needs all of them.
DASHBOARD_DEPENDENCIES = ("aiohttp", "aiohttp.web", "aiohttp.typedefs", "aiohttp_cors", "grpc", "opencensus",
                          "opentelemetry", "opentelemetry.exporter.prometheus", "opentelemetry.proto",
                          "prometheus_client", "pydantic")


def _findable(name: str) -> bool:
    """Whether module `name` is installed, importing nothing (find_spec of "a.b" would import "a")."""
    top, *rest = name.split(".")
    spec = importlib.util.find_spec(top) if top not in sys.modules else sys.modules[top].__spec__
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            return False
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    return spec is not None


def dashboard_dependencies_installed() -> bool:
    try:
        return all(_findable(name) for name in DASHBOARD_DEPENDENCIES)
    except (ImportError, ValueError):  # Ray's check imports them and says what is wrong
        return False


def wait_until_registered(node, poll_s: float = REGISTRATION_POLL_S, timeout_s: float = REGISTRATION_WAIT_S) -> bool:
    """Poll the GCS until `node`'s raylet is registered (True); False on any error or at the timeout,
    leaving the outcome to Ray's own wait."""
    deadline = time.monotonic() + timeout_s
    try:
        gcs = node.get_gcs_client()
        while time.monotonic() < deadline:
            if any(node_id.hex() == node._node_id for node_id in gcs.get_all_node_info(timeout=1)):
                return True
            time.sleep(poll_s)
    except Exception:  # noqa: BLE001 - Ray's loop reports it in its own words
        pass
    return False


@contextlib.contextmanager
def lean_head():
    from ray._private import node as ray_node
    from ray._private import utils as ray_utils

    node_class = ray_node.Node
    with _patching:
        dependency_error = ray_utils.get_dashboard_dependency_error

        def dependency_error_without_importing():
            return None if dashboard_dependencies_installed() else dependency_error()

        start_head_processes = node_class.start_head_processes
        start_api_server = node_class.start_api_server
        start_ray_processes = node_class.start_ray_processes

        def lean_start_head_processes(self):
            self._ray_params.no_monitor = True
            return start_head_processes(self)

        def no_api_server(self, *, include_dashboard, raise_on_failure):
            if include_dashboard:  # asked for: Ray's own
                return start_api_server(self, include_dashboard=include_dashboard, raise_on_failure=raise_on_failure)
            self._webui_url = None

        def start_and_wait_for_registration(self):
            start_ray_processes(self)
            if self.head:
                wait_until_registered(self)

        node_class.start_head_processes = lean_start_head_processes
        node_class.start_api_server = no_api_server
        node_class.start_ray_processes = start_and_wait_for_registration
        ray_utils.get_dashboard_dependency_error = dependency_error_without_importing
        try:
            yield
        finally:
            node_class.start_head_processes = start_head_processes
            node_class.start_api_server = start_api_server
            node_class.start_ray_processes = start_ray_processes
            ray_utils.get_dashboard_dependency_error = dependency_error
