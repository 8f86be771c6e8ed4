"""`mixup-sweep cluster`: a real multi-node Ray cluster plus an MLflow tracking server, all on 127.0.0.1.

    mixup-sweep cluster up [--workers N] [--num-cpus C] [--no-mlflow | --no-ray] [--state-dir DIR] ...
    mixup-sweep cluster status        # exit 0 up, 1 partly up, 3 no cluster
    mixup-sweep cluster down

`up` starts a Ray head and N worker nodes as separate `ray start` processes (each node has its own
temp dir, ports and a custom resource `node_head` / `node_worker_<i>` so callers can tell them apart),
and an MLflow server (SQLite backend, artifacts proxied by the server). Ray token authentication stays
on: a fresh token is written to STATE/auth_token and every process gets RAY_AUTH_MODE=token and
RAY_AUTH_TOKEN_PATH. The client environment is printed and written to STATE/env (`source` it).
Every server listens on 127.0.0.1 only (see LOOPBACK_ENV for what that takes with Ray on Linux).

Each component runs in its own Unix session (setsid), and its session id is recorded in
STATE/cluster.json: `down` signals exactly the processes of those sessions (plus any process still
naming this cluster's Ray temp dir), never `ray stop`, which would kill every Ray on the machine.
`up` refuses while a cluster of the same state dir runs; MLflow data (STATE/mlflow) outlives `down`.

Standard library only (the nodes import Ray, not this process); the `ray` and `mlflow` executables are
taken from the running interpreter's bin dir, else PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
STATE_FILE = "cluster.json"
ENV_FILE = "env"
TOKEN_FILE = "auth_token"
# Ray puts Unix sockets under its temp dir; AF_UNIX paths are limited to 107 bytes and Ray appends
# roughly 60 characters (session_<timestamp>_<pid>/sockets/plasma_store).
MAX_RAY_TEMP_DIR_LEN = 40
# Loopback only: every node process, driver and client keeps 127.0.0.1 in Ray's single-machine mode;
# worker nodes are started through ray_compat/loopback_node.py, which re-allows them in that mode.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
LOOPBACK_NODE_MODULE = "sweeps.ray_compat.loopback_node"


class ClusterError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


# ----------------------------------------------------------------------------------------------
# small helpers


def default_state_dir() -> Path:
    return Path(os.environ.get("MIXUP_CLUSTER_DIR", Path.cwd() / ".cluster")).resolve()


def find_executable(name: str) -> str:
    """Prefer the interpreter's own environment, so the nodes run the venv the project lives in."""
    candidates = [Path(sys.executable).parent / name]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"cannot find the '{name}' executable (activate the project's venv)")
    return found


def free_ports(count: int, reserved: set[int]) -> list[int]:
    """Distinct free ports on 127.0.0.1; sockets stay bound until all are chosen so none repeats."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port not in reserved and port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


def http_get(url: str, token: str | None = None, timeout: float = 3.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


# ----------------------------------------------------------------------------------------------
# processes, found through /proc so that nothing outside the recorded sessions is touched


def list_processes() -> list[dict]:
    """Live (non-zombie) processes: pid, session id, state, command line."""
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in field 2 may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        state, session = fields[0], int(fields[3])
        if state in ("Z", "X"):  # already dead, only waiting to be reaped by its parent
            continue
        processes.append({"pid": int(entry.name), "sid": session, "cmd": cmdline.strip()})
    return processes


def cluster_processes(state: dict) -> dict[str, list[dict]]:
    """Live processes per component: members of its session, plus strays naming our Ray temp dir."""
    sessions = {component: info["sid"] for component, info in state["components"].items()}
    by_sid = {sid: component for component, sid in sessions.items()}
    found: dict[str, list[dict]] = {component: [] for component in sessions}
    ray_temp = state.get("ray_temp_dir")
    me = os.getpid()
    for proc in list_processes():
        if proc["pid"] == me:
            continue
        if proc["sid"] in by_sid:
            found[by_sid[proc["sid"]]].append(proc)
        elif ray_temp and ray_temp.rstrip("/") + "/" in proc["cmd"]:
            found.setdefault("stray", []).append(proc)
    return found


def signal_all(processes: list[dict], sig: int) -> None:
    for proc in processes:
        try:
            os.kill(proc["pid"], sig)
        except ProcessLookupError:
            pass


def stop_processes(state: dict, grace_s: float) -> list[dict]:
    """SIGTERM every process of the cluster at once, SIGKILL what outlives the grace period.

    Returns the survivors (none, unless a process is stuck in the kernel). Ray's own graceful shutdown
    can take 20 s (the GCS waits for its raylets); nothing of a throwaway local cluster needs that.
    """

    def alive() -> list[dict]:
        return [p for procs in cluster_processes(state).values() for p in procs]

    signal_all(alive(), signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.25)
    # A process may have forked after the first sweep: signal whatever is there now.
    signal_all(alive(), signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive()


# ----------------------------------------------------------------------------------------------
# state


def load_state(state_dir: Path) -> dict | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def save_state(state_dir: Path, state: dict) -> None:
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def client_env(state: dict) -> dict[str, str]:
    ports = state["ports"]
    env = {}
    if "gcs" in ports:
        dashboard = f"http://{HOST}:{ports['dashboard']}"
        env = {
            # `ray.init(address=...)`, `mixup-sweep run --address`: the GCS of the head node.
            "RAY_ADDRESS": f"{HOST}:{ports['gcs']}",
            # `ray job submit` reads RAY_API_SERVER_ADDRESS (falls back to RAY_ADDRESS): the dashboard.
            "RAY_API_SERVER_ADDRESS": dashboard,
            "RAY_DASHBOARD_ADDRESS": dashboard,
            # Token authentication: every client (driver, CLI, job submission) needs both.
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": state["token_path"],
            # Keep 127.0.0.1 as given instead of swapping in the external IP (see LOOPBACK_ENV).
            **LOOPBACK_ENV,
        }
    if "mlflow" in ports:
        env["MLFLOW_TRACKING_URI"] = f"http://{HOST}:{ports['mlflow']}"
    return env


def write_env_file(state_dir: Path, env: dict[str, str]) -> Path:
    lines = ["# written by mixup-sweep cluster up; `source` this file to talk to the cluster"]
    lines += [f"export {key}={value}" for key, value in env.items()]
    if "RAY_AUTH_TOKEN_PATH" in env:
        # RAY_AUTH_TOKEN would take precedence over RAY_AUTH_TOKEN_PATH: drop a stale one.
        lines.append("unset RAY_AUTH_TOKEN")
    path = state_dir / ENV_FILE
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------------------------
# up


def ray_temp_dir(state_dir: Path) -> tuple[Path, bool]:
    """(dir, is_fallback): STATE/ray when short enough for Unix sockets, else a fresh /tmp dir."""
    preferred = state_dir / "ray"
    if len(str(preferred)) <= MAX_RAY_TEMP_DIR_LEN:
        preferred.mkdir(parents=True, exist_ok=True)
        return preferred, False
    return Path(tempfile.mkdtemp(prefix="mixup-ray-", dir="/tmp")), True


def process_env(token_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The nodes share this venv: its bin dir first on PATH, so that a job entrypoint such as
    # `mixup-sweep run ...` (ray job submit) resolves to the project's console script.
    venv_bin = str(Path(find_executable("ray")).parent)
    env["PATH"] = os.pathsep.join([venv_bin] + [p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin])
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS"):
        env.pop(key, None)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token_path),
        RAY_USAGE_STATS_ENABLED="0",  # no phoning home: loopback traffic only
        PYTHONUNBUFFERED="1",
        **LOOPBACK_ENV,
    )
    return env


def run_in_new_session(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """Start `cmd` as the leader of a new session (its pid is the session id of all it spawns)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=os.getcwd(),
        )


def start_ray_node(
    name: str, head: bool, state: dict, args: argparse.Namespace, env: dict, reserved: set[int]
) -> int:
    """Start one node with `ray start` in its own session; returns the session id."""
    python = Path(find_executable("ray")).parent / "python"
    python = str(python) if python.exists() else sys.executable
    temp_dir = Path(state["ray_temp_dir"]) / name
    temp_dir.mkdir(parents=True, exist_ok=True)
    (node_port, object_port, agent_port, agent_grpc_port, metrics_port, runtime_env_port) = free_ports(
        6, reserved
    )
    reserved.update([node_port, object_port, agent_port, agent_grpc_port, metrics_port, runtime_env_port])
    cmd = [
        python, "-m", LOOPBACK_NODE_MODULE, "start",
        f"--node-ip-address={HOST}",
        f"--num-cpus={args.num_cpus}",
        f"--num-gpus={args.num_gpus}",
        f"--resources={json.dumps({f'node_{name}': 1})}",
        f"--temp-dir={temp_dir}",
        f"--object-store-memory={args.object_store_mb * 1024 * 1024}",
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
    if head:
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
    log = Path(state["state_dir"]) / "logs" / f"ray-{name}.log"
    proc = run_in_new_session(cmd, env, log)
    # Record the session before judging success: a failed start may have left processes behind.
    state["components"][f"ray-{name}"] = {"sid": proc.pid, "log": str(log)}
    save_state(Path(state["state_dir"]), state)
    try:
        proc.wait(timeout=args.timeout)  # `ray start` returns once the node's processes are up
    except subprocess.TimeoutExpired:
        raise ClusterError(f"`ray start` for node '{name}' did not return within {args.timeout:.0f}s; see {log}")
    if proc.returncode != 0:
        raise ClusterError(f"`ray start` for node '{name}' failed (exit {proc.returncode}); see {log}")
    return proc.pid


def wait_for_nodes(state: dict, expected: int, timeout_s: float) -> list[dict]:
    """Poll the dashboard's state API (with the token) until `expected` nodes are alive."""
    token = Path(state["token_path"]).read_text().strip()
    url = f"http://{HOST}:{state['ports']['dashboard']}/api/v0/nodes?limit=100"
    deadline = time.monotonic() + timeout_s
    nodes: list[dict] = []
    while time.monotonic() < deadline:
        status, body = http_get(url, token)
        if status == 200:
            nodes = json.loads(body)["data"]["result"]["result"]
            alive = [n for n in nodes if n.get("state") == "ALIVE"]
            if len(alive) >= expected:
                return alive
        time.sleep(1.0)
    raise ClusterError(f"only {len(nodes)} of {expected} Ray nodes came up within {timeout_s:.0f}s")


def start_mlflow(state: dict, args: argparse.Namespace, env: dict) -> None:
    mlflow = find_executable("mlflow")
    data = Path(args.mlflow_dir).resolve() if args.mlflow_dir else Path(state["state_dir"]) / "mlflow"
    (data / "artifacts").mkdir(parents=True, exist_ok=True)
    port = state["ports"]["mlflow"]
    cmd = [
        mlflow, "server",
        "--backend-store-uri", f"sqlite:///{data / 'mlflow.db'}",
        # Artifacts go through the server (mlflow-artifacts:/ URIs): clients on any node need only HTTP.
        "--serve-artifacts", "--artifacts-destination", str(data / "artifacts"),
        "--host", HOST, "--port", str(port),
        "--workers", "1",
    ]
    log = Path(state["state_dir"]) / "logs" / "mlflow.log"
    # MLflow's background job runner (GenAI jobs, several huey consumers) has nothing to do here.
    env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = run_in_new_session(cmd, env, log)
    state["components"]["mlflow"] = {"sid": proc.pid, "log": str(log)}
    state["mlflow_dir"] = str(data)
    save_state(Path(state["state_dir"]), state)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClusterError(f"the MLflow server exited (code {proc.returncode}); see {log}")
        if http_get(f"http://{HOST}:{port}/health")[0] == 200:
            return
        time.sleep(0.5)
    raise ClusterError(f"the MLflow server did not answer on port {port} within {args.timeout}s; see {log}")


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = load_state(state_dir)
    if previous is not None:
        running = {c: p for c, p in cluster_processes(previous).items() if p}
        if running:
            raise ClusterError(
                f"a cluster from {state_dir} is already up ({', '.join(sorted(running))}); "
                "run `mixup-sweep cluster down` first"
            )
        cleanup_state(state_dir, previous)  # stale record of a cluster that died on its own

    if args.no_ray and args.no_mlflow:
        raise ClusterError("--no-ray and --no-mlflow together start nothing")
    requested = {}
    if not args.no_ray:
        requested.update(gcs=args.ray_port, dashboard=args.dashboard_port, client=args.client_port)
    if not args.no_mlflow:
        requested["mlflow"] = args.mlflow_port
    for name, port in requested.items():
        if port and port_in_use(port):
            raise ClusterError(f"port {port} ({name}) is already in use on {HOST}")
    taken = {p for p in requested.values() if p}
    chosen = iter(free_ports(sum(1 for p in requested.values() if not p), taken))
    ports = {name: port or next(chosen) for name, port in requested.items()}
    reserved = set(ports.values())

    (state_dir / "logs").mkdir(exist_ok=True)
    token_path = state_dir / TOKEN_FILE
    token_path.write_text(secrets.token_hex(32))  # 256 bits, the format `ray get-auth-token` makes
    token_path.chmod(0o600)
    temp_dir, temp_is_fallback = (None, False) if args.no_ray else ray_temp_dir(state_dir)
    state = {
        "state_dir": str(state_dir),
        "cwd": os.getcwd(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ports": ports,
        "token_path": str(token_path),
        "ray_temp_dir": str(temp_dir) if temp_dir else None,
        "ray_temp_dir_is_fallback": temp_is_fallback,
        "nodes": [] if args.no_ray else ["head"] + [f"worker_{i}" for i in range(1, args.workers + 1)],
        "components": {},
    }
    save_state(state_dir, state)
    env = process_env(token_path)
    try:
        for node in state["nodes"]:
            start_ray_node(node, node == "head", state, args, env, reserved)
        if state["nodes"]:
            alive = wait_for_nodes(state, len(state["nodes"]), args.timeout)
            # node name (from its custom resource node_<name>) -> Ray node id
            state["node_ids"] = {
                next(k[len("node_"):] for k in n.get("resources_total", {}) if k.startswith("node_")): n["node_id"]
                for n in alive
            }
        if not args.no_mlflow:
            start_mlflow(state, args, env)
    except BaseException:  # noqa: BLE001 - whatever went wrong, leave nothing running
        print("mixup-sweep cluster: start failed, stopping what was started", file=sys.stderr)
        stop_processes(state, grace_s=5.0)
        save_state(state_dir, state)
        raise
    save_state(state_dir, state)
    env_vars = client_env(state)
    env_path = write_env_file(state_dir, env_vars)
    parts = [] if args.no_ray else [f"{len(state['nodes'])} Ray nodes ({', '.join(state['nodes'])}), "
                                    f"{args.num_cpus} CPU each"]
    parts += [] if args.no_mlflow else [f"MLflow server (data in {state['mlflow_dir']})"]
    print(f"# local cluster up: {'; '.join(parts)}")
    print(f"# state: {state_dir}   logs: {state_dir / 'logs'}" + ("" if args.no_ray else f"   Ray logs: {temp_dir}"))
    print(f"# run `source {env_path}` to use it:")
    for key, value in env_vars.items():
        print(f"export {key}={value}")
    return 0


# ----------------------------------------------------------------------------------------------
# status / down


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    if state is None:
        print(f"local cluster: down (no state in {state_dir})")
        return 3
    found = cluster_processes(state)
    up = all(found.get(c) for c in state["components"])
    token = Path(state["token_path"]).read_text().strip() if Path(state["token_path"]).exists() else None
    print(f"local cluster ({state_dir}): {'up' if up else 'DEGRADED' if any(found.values()) else 'down'}")
    for component, info in state["components"].items():
        procs = found.get(component, [])
        print(f"  {component:<16} session {info['sid']:<8} {len(procs)} processes")
    if found.get("stray"):
        print(f"  {'stray':<16} {len(found['stray'])} processes naming {state['ray_temp_dir']}")
    if any(found.values()):
        if "dashboard" in state["ports"]:
            dash = f"http://{HOST}:{state['ports']['dashboard']}"
            code, body = http_get(f"{dash}/api/v0/nodes?limit=100", token)
            if code == 200:
                nodes = json.loads(body)["data"]["result"]["result"]
                alive = sum(1 for n in nodes if n.get("state") == "ALIVE")
                print(f"  ray nodes alive  {alive} of {len(state['nodes'])} (dashboard {dash})")
            else:
                print(f"  ray dashboard    not answering (HTTP {code}) at {dash}")
        if "mlflow" in state["ports"]:
            uri = f"http://{HOST}:{state['ports']['mlflow']}"
            ok = http_get(f"{uri}/health")[0] == 200
            print(f"  mlflow server    {'healthy' if ok else 'not answering'} at {uri}")
        for key, value in client_env(state).items():
            print(f"  export {key}={value}")
    return 0 if up else 1


def cleanup_state(state_dir: Path, state: dict) -> None:
    if state.get("ray_temp_dir_is_fallback"):
        shutil.rmtree(state["ray_temp_dir"], ignore_errors=True)
    for name in (STATE_FILE, ENV_FILE, TOKEN_FILE):
        (state_dir / name).unlink(missing_ok=True)


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    if state is None:
        print(f"local cluster: nothing to stop (no state in {state_dir})")
        return 0
    count = sum(len(p) for p in cluster_processes(state).values())
    survivors = stop_processes(state, grace_s=args.grace)
    if survivors:
        pids = ", ".join(str(p["pid"]) for p in survivors)
        raise ClusterError(f"processes still alive after SIGKILL: {pids}")
    cleanup_state(state_dir, state)
    print(f"local cluster down: stopped {count} processes of {', '.join(state['components'])}")
    return 0


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    state_help = ("where pids, token, env file, logs and MLflow data live "
                  "(default: $MIXUP_CLUSTER_DIR, else ./.cluster)")
    # --state-dir is accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", default=argparse.SUPPRESS, help=state_help)
    parser = argparse.ArgumentParser(prog="mixup-sweep cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=str(default_state_dir()), help=state_help)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", parents=[common], help="start the Ray head, workers and MLflow server")
    up.add_argument("--workers", type=int, default=1, help="Ray worker nodes besides the head (default 1)")
    up.add_argument("--num-cpus", type=int, default=1, help="CPUs each node advertises (default 1)")
    up.add_argument("--num-gpus", type=int, default=0, help="GPUs each node advertises (default 0)")
    up.add_argument("--object-store-mb", type=int, default=256, help="object store per node (default 256)")
    up.add_argument("--ray-port", type=int, default=0, help="head GCS port (default: a free one)")
    up.add_argument("--dashboard-port", type=int, default=0, help="dashboard / job API port (default: free)")
    up.add_argument("--client-port", type=int, default=0, help="Ray client server port (default: free)")
    up.add_argument("--mlflow-port", type=int, default=0, help="MLflow server port (default: free)")
    up.add_argument("--mlflow-dir", default=None, help="MLflow SQLite db + artifacts (default STATE/mlflow)")
    up.add_argument("--no-mlflow", action="store_true", help="start only the Ray nodes")
    up.add_argument("--no-ray", action="store_true", help="start only the MLflow server")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    sub.add_parser("status", parents=[common], help="what runs, and the client environment")
    down = sub.add_parser("down", parents=[common], help="stop exactly what `up` started")
    down.add_argument("--grace", type=float, default=5.0,
                      help="seconds between SIGTERM and SIGKILL (default 5)")
    args = parser.parse_args(argv)
    if args.command == "up" and (args.workers < 0 or args.num_cpus < 1 or args.num_gpus < 0):
        parser.error("--workers must be >= 0, --num-cpus >= 1, --num-gpus >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {"up": cmd_up, "status": cmd_status, "down": cmd_down}
    try:
        return handlers[args.command](args)
    except ClusterError as err:
        print(f"mixup-sweep cluster: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
