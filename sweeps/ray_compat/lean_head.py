"""An embedded Ray head without the two processes a one-node sweep that has no dashboard never uses.

`ray.init(address="local", include_dashboard=False)` still starts, on a 2-core machine:
  * the API server (`dashboard.py`), which with the dashboard off loads one module, usage statistics,
    off here too; `ray.init` waits for it to announce its URL before it starts the raylet (about 2 s
    and 1.7 CPU-s before anything else can start);
  * the autoscaler monitor, for a node whose size is fixed (about 1 CPU-s while the node starts).
`lean_head()` is a context for that `ray.init` call: the head node it starts skips both. Nothing of
this sweep talks to either (the job API, the state API and the dashboard belong to a cluster's head,
`ray start`, which this never touches).

Internals used: `ray._private.node.Node.start_head_processes`, `Node.start_api_server`, `Node._webui_url`
and `RayParams.no_monitor`.
"""

from __future__ import annotations

import contextlib
import threading

_patching = threading.Lock()


@contextlib.contextmanager
def lean_head():
    from ray._private import node as ray_node

    node_class = ray_node.Node
    with _patching:
        start_head_processes = node_class.start_head_processes
        start_api_server = node_class.start_api_server

        def lean_start_head_processes(self):
            self._ray_params.no_monitor = True
            return start_head_processes(self)

        def no_api_server(self, *, include_dashboard, raise_on_failure):
            if include_dashboard:  # asked for: Ray's own
                return start_api_server(self, include_dashboard=include_dashboard, raise_on_failure=raise_on_failure)
            self._webui_url = None

        node_class.start_head_processes = lean_start_head_processes
        node_class.start_api_server = no_api_server
        try:
            yield
        finally:
            node_class.start_head_processes = start_head_processes
            node_class.start_api_server = start_api_server
