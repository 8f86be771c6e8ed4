"""The embedded Ray head a sweep starts (sweeps/ray_compat/lean_head.py): a real `ray.init` through
`runner.start_ray`, in a process of its own.

- It registers and runs work, its waits taken out: the raylet has the faster retry setting, the
  registration wait finds the node (and gives up, False, on a node the GCS does not know);
- the driver never imported the dashboard's dependencies, yet the raylet's dashboard agent runs in
  its full mode, as with Ray's own check (it published a metrics port; the minimal mode publishes -1);
- the dependency lookup imports nothing and says False for a module that is not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from sweep_support import user_env

EMBEDDED_HEAD = textwrap.dedent("""
    import json, sys, time, types
    from pathlib import Path
    import ray
    from sweeps import runner
    from sweeps.ray_compat.lean_head import LEAN_HEAD_SYSTEM_CONFIG, wait_until_registered

    runner.start_ray(None)
    node = ray._private.worker._global_node
    stranger = types.SimpleNamespace(get_gcs_client=node.get_gcs_client, _node_id="ff" * 28)
    start = time.monotonic()
    stranger_found = wait_until_registered(stranger, timeout_s=0.5)
    gave_up_after = time.monotonic() - start
    session = Path(node.get_session_dir_path())
    ports = {p.name.rsplit("_", 1)[0]: int(p.read_text()) for p in session.glob("*_port_*")}
    print(json.dumps({
        "registered": wait_until_registered(node, timeout_s=5),
        "stranger_found": stranger_found, "gave_up_after": gave_up_after,
        "task": ray.get(ray.remote(lambda: 41 + 1).remote()),
        "retry_ms": ray._raylet.Config.raylet_client_connect_timeout_milliseconds(),
        "attempts": ray._raylet.Config.raylet_client_num_connect_attempts(),
        "expected": LEAN_HEAD_SYSTEM_CONFIG,
        "dashboard_deps_imported": sorted(m for m in ("aiohttp", "opentelemetry", "prometheus_client") if m in sys.modules),
        "ports": ports,
    }))
    ray.shutdown()
""")


def test_the_embedded_head_registers_runs_work_and_keeps_the_agents_full_mode(tmp_path):
    proc = subprocess.run([sys.executable, "-c", EMBEDDED_HEAD], cwd=tmp_path, env=user_env(),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["registered"] is True and out["task"] == 42
    assert out["stranger_found"] is False and 0.4 < out["gave_up_after"] < 3, out
    assert out["retry_ms"] == out["expected"]["raylet_client_connect_timeout_milliseconds"]
    assert out["attempts"] == out["expected"]["raylet_client_num_connect_attempts"]
    assert out["dashboard_deps_imported"] == [], out
    assert out["ports"]["metrics_agent_port"] > 0 and out["ports"]["dashboard_agent_listen_port"] > 0, out["ports"]


def test_the_dashboard_dependencies_are_looked_up_without_importing_them():
    code = textwrap.dedent("""
        import sys
        from sweeps.ray_compat.lean_head import DASHBOARD_DEPENDENCIES, _findable, dashboard_dependencies_installed
        print(dashboard_dependencies_installed(), _findable("aiohttp.no_such_module"), _findable("no_such_package.x"),
              _findable("no_such_package"), sorted({d.split(".")[0] for d in DASHBOARD_DEPENDENCIES} & set(sys.modules)))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "False", "False", "False", "[]"], proc.stdout
