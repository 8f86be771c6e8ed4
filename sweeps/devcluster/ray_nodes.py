"""The cluster's Ray nodes: a head and N workers, each a `ray start` in its own session with its own
ports, Ray temp dir and custom resource `node_<name>`, and, like machines that share no disk, its own
working directory, HOME and TMPDIR (STATE/nodes/<name>/): nothing of one node's files is where
another node looks, so a sweep whose storage is s3:// proves that trials need no shared disk."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from ..usage_reporting import USAGE_REPORTING_OFF
from .processes import (
    HOST, ClusterError, find_executable, free_ports, http_get, run_in_new_session, stop_processes,
)
from .state import LOOPBACK_ENV, save_state

# Ray puts Unix sockets under its temp dir; AF_UNIX paths are limited to 107 bytes and Ray appends
# roughly 60 characters (session_<timestamp>_<pid>/sockets/plasma_store).
MAX_RAY_TEMP_DIR_LEN = 40
LOOPBACK_NODE_MODULE = "sweeps.ray_compat.loopback_node"


def component(name: str) -> str:
    return f"ray-{name}"


def ray_temp_dir(state_dir: Path) -> tuple[Path, bool]:
    """(dir, is_fallback): STATE/ray when short enough for Unix sockets, else a fresh /tmp dir."""
    preferred = state_dir / "ray"
    if len(str(preferred)) <= MAX_RAY_TEMP_DIR_LEN:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, False
    return Path(tempfile.mkdtemp(prefix="mixup-ray-", dir="/tmp")), True


def node_dirs(state: dict, name: str) -> dict[str, Path]:
    """The node's own disk: working directory, HOME, TMPDIR and Ray temp dir."""
    root = Path(state["state_dir"]) / "nodes" / name
    return {"work": root / "work", "home": root / "home", "tmp": root / "tmp",
            "ray": Path(state["ray_temp_dir"]) / name}


def base_env(token_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The nodes share this venv (like one image on every machine): its bin dir first on PATH, so that a
    # job entrypoint such as `mixup-sweep run ...` resolves to the project's console script.
    venv_bin = str(Path(find_executable("ray")).parent)
    env["PATH"] = os.pathsep.join([venv_bin] + [p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin])
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS", "MIXUP_SWEEP_STORAGE",
                "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_PROFILE", "MLFLOW_BACKEND_STORE_URI"):
        env.pop(key, None)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        **USAGE_REPORTING_OFF,  # no phoning home: loopback traffic only
        PYTHONUNBUFFERED="1",
        **LOOPBACK_ENV,
    )
    return env


def start_node(name: str, state: dict, num_cpus: int, num_gpus: int, object_store_mb: int,
               env: dict, timeout_s: float, reserved: Optional[set[int]] = None) -> int:
    """Start one node with `ray start` in its own session; returns the session id."""
    python = Path(find_executable("ray")).parent / "python"
    python = str(python) if python.exists() else sys.executable
    dirs = node_dirs(state, name)
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    # Fresh ports on every start, a restart included: a replacement node at a dead node's address would
    # be mistaken for it by clients that cache connections by address (placement groups then wait for ever).
    used = {p for ports in state.get("node_ports", {}).values() for p in ports}
    node_ports = free_ports(6, set(reserved or ()) | set(state["ports"].values()) | used)
    state.setdefault("node_ports", {})[name] = node_ports
    node_port, object_port, agent_port, agent_grpc_port, metrics_port, runtime_env_port = node_ports
    cmd = [
        python, "-m", LOOPBACK_NODE_MODULE, "start",
        f"--node-ip-address={HOST}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        f"--resources={json.dumps({f'node_{name}': 1})}",
        f"--temp-dir={dirs['ray']}",
        f"--object-store-memory={object_store_mb * 1024 * 1024}",
        f"--node-manager-port={node_port}",
        f"--object-manager-port={object_port}",
        f"--dashboard-agent-listen-port={agent_port}",
        f"--dashboard-agent-grpc-port={agent_grpc_port}",
        f"--metrics-export-port={metrics_port}",
        f"--runtime-env-agent-port={runtime_env_port}",
        "--min-worker-port=0", "--max-worker-port=0",  # 0: each worker gets a random free port
        "--disable-usage-stats",
        "--log-style=record", "--log-color=false",
    ]
    ports = state["ports"]
    if name == "head":
        cmd += [
            "--head",
            f"--port={ports['gcs']}",
            f"--ray-client-server-port={ports['client']}",
            "--include-dashboard=true",
            f"--dashboard-host={HOST}",
            f"--dashboard-port={ports['dashboard']}",
        ]
    else:
        cmd += [f"--address={HOST}:{ports['gcs']}"]
    node_env = {**env, "HOME": str(dirs["home"]), "TMPDIR": str(dirs["tmp"])}
    log = Path(state["state_dir"]) / "logs" / f"ray-{name}.log"
    proc = run_in_new_session(cmd, node_env, log, cwd=dirs["work"])
    # Record the session before judging success: a failed start may have left processes behind.
    state["components"][component(name)] = {"sid": proc.pid, "log": str(log)}
    save_state(Path(state["state_dir"]), state)
    try:
        proc.wait(timeout=timeout_s)  # `ray start` returns once the node's processes are up
    except Exception:
        raise ClusterError(f"`ray start` for node '{name}' did not return within {timeout_s:.0f}s; see {log}")
    if proc.returncode != 0:
        raise ClusterError(f"`ray start` for node '{name}' failed (exit {proc.returncode}); see {log}")
    return proc.pid


def alive_nodes(state: dict) -> Optional[list[dict]]:
    """The dashboard's ALIVE nodes (with the token), or None when it does not answer."""
    token = Path(state["token_path"]).read_text().strip()
    status, body = http_get(f"http://{HOST}:{state['ports']['dashboard']}/api/v0/nodes?limit=100", token)
    if status != 200:
        return None
    return [n for n in json.loads(body)["data"]["result"]["result"] if n.get("state") == "ALIVE"]


def wait_for_nodes(state: dict, names: list[str], timeout_s: float, replaced: frozenset[str] = frozenset()
                   ) -> dict[str, str]:
    """Poll until every named node is alive; returns node name -> Ray node id (from node_<name>).
    `replaced`: ids of nodes these replace, which the GCS may still list as alive for a while (until
    their health checks fail) under the same name."""
    deadline = time.monotonic() + timeout_s
    seen: dict[str, str] = {}
    while time.monotonic() < deadline:
        for node in alive_nodes(state) or []:
            if node["node_id"] in replaced:
                continue
            for key in node.get("resources_total", {}):
                if key.startswith("node_"):
                    seen[key[len("node_"):]] = node["node_id"]
        if all(name in seen for name in names):
            return {name: seen[name] for name in names}
        time.sleep(1.0)
    missing = [n for n in names if n not in seen]
    raise ClusterError(f"Ray nodes {', '.join(missing)} did not come up within {timeout_s:.0f}s")


def stop_node(state: dict, name: str, grace_s: float) -> list[dict]:
    return stop_processes(state, grace_s, [component(name)])
