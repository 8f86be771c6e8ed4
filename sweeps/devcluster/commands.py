"""`mixup-sweep cluster`: a real multi-node Ray cluster plus an MLflow tracking server, all on 127.0.0.1,
optionally on the production backends: PostgreSQL for MLflow's store and an S3 endpoint for MLflow's
artifacts and Ray Tune's storage.

    mixup-sweep cluster up [--workers N] [--num-cpus C] [--head-cpus H] [--backend sqlite|postgres]
                           [--artifacts local|s3] [--no-mlflow | --no-ray] [--state-dir DIR] ...
    mixup-sweep cluster status              # exit 0 up, 1 partly up, 3 no cluster
    mixup-sweep cluster restart COMPONENT [--down-for S] [--signal KILL|TERM]
    mixup-sweep cluster down [--purge]

`up` starts a Ray head and N worker nodes as separate `ray start` processes (ray_nodes.py: each with
its own ports, temp dir, working dir, HOME and TMPDIR, like machines that share no disk), an MLflow
server (mlflow_server.py) and, as asked, a PostgreSQL server (postgres.py) and an S3 endpoint
(object_store.py). Ray token authentication stays on: a fresh token in STATE/auth_token. Credentials
for PostgreSQL and S3 are generated per state dir (STATE/secrets.json, mode 600). The client
environment is written to STATE/env (mode 600; `source` it) and printed without its secrets.

Each component runs in its own Unix session recorded in STATE/cluster.json: `down` and `restart`
signal exactly the processes of those sessions (plus any process still naming this cluster's Ray temp
dir), never `ray stop`, which would kill every Ray on the machine. `up` refuses while a cluster of the
same state dir runs. Data (STATE/mlflow, STATE/postgres, STATE/s3) and credentials outlive `down`;
`down --purge` deletes them too.

The nodes import Ray, not this process; the `ray`, `mlflow` and `weed` executables are taken from the
running interpreter's bin dir, else PATH; PostgreSQL's from PATH or /usr/lib/postgresql/*/bin.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

from . import mlflow_server, object_store, postgres, ray_nodes
from .processes import (
    HOST, ClusterError, cluster_processes, free_ports, http_get, port_in_use, stop_processes,
)
from .state import (
    ENV_FILE, SECRETS_FILE, STATE_FILE, TOKEN_FILE, client_env, load_or_make_secrets, load_state, s3_env,
    save_state, shown, write_env_file,
)


def default_state_dir() -> Path:
    return Path(os.environ.get("MIXUP_CLUSTER_DIR", Path.cwd() / ".cluster")).resolve()


def _pick_ports(args: argparse.Namespace) -> dict[str, int]:
    requested: dict[str, int] = {}
    if not args.no_ray:
        requested.update(gcs=args.ray_port, dashboard=args.dashboard_port, client=args.client_port)
    if not args.no_mlflow:
        requested["mlflow"] = args.mlflow_port
        if args.backend == "postgres":
            requested["postgres"] = args.postgres_port
    if args.artifacts == "s3":
        requested.update({name: 0 for name in object_store.PORT_NAMES})
        requested["s3"] = args.s3_port
    for name, port in requested.items():
        if port and port_in_use(port):
            raise ClusterError(f"port {port} ({name}) is already in use on {HOST}")
    taken = {p for p in requested.values() if p}
    chosen = iter(free_ports(sum(1 for p in requested.values() if not p), taken))
    return {name: port or next(chosen) for name, port in requested.items()}


def _creds(state: dict) -> dict[str, str]:
    """The cluster's generated credentials; none for a cluster of SQLite and local artifacts."""
    if state.get("backend") != "postgres" and state.get("artifacts") != "s3":
        return {}
    return load_or_make_secrets(Path(state["state_dir"]))


def _node_cpus(state: dict, name: str) -> int:
    return state["head_cpus"] if name == "head" else state["num_cpus"]


def _start_node(state: dict, name: str, env: dict, timeout_s: float) -> None:
    ray_nodes.start_node(name, state, _node_cpus(state, name), state["num_gpus"], state["object_store_mb"],
                         env, timeout_s)


def _node_env(state: dict) -> dict[str, str]:
    env = ray_nodes.base_env(Path(state["token_path"]))
    if state.get("artifacts") == "s3":  # trials and drivers read and write Ray's storage on S3
        env.update(s3_env(state, _creds(state)))
    return env


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    if args.no_ray and args.no_mlflow:
        raise ClusterError("--no-ray and --no-mlflow together start nothing")
    if args.no_mlflow and args.backend == "postgres":
        raise ClusterError("--backend postgres is MLflow's store: it needs the MLflow server (drop --no-mlflow)")
    if not args.no_mlflow:
        mlflow_server.check_drivers(args.backend, args.artifacts)
    pg_bin = postgres.server_binaries(args.postgres_bin) if args.backend == "postgres" and not args.no_mlflow else None
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

    ports = _pick_ports(args)
    (state_dir / "logs").mkdir(exist_ok=True)
    token_path = state_dir / TOKEN_FILE
    token_path.write_text(secrets.token_hex(32))  # 256 bits, the format `ray get-auth-token` makes
    token_path.chmod(0o600)
    temp_dir, temp_is_fallback = (None, False) if args.no_ray else ray_nodes.ray_temp_dir(state_dir)
    state = {
        "state_dir": str(state_dir),
        "cwd": os.getcwd(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "ports": ports,
        "token_path": str(token_path),
        "ray_temp_dir": str(temp_dir) if temp_dir else None,
        "ray_temp_dir_is_fallback": temp_is_fallback,
        "nodes": [] if args.no_ray else ["head"] + [f"worker_{i}" for i in range(1, args.workers + 1)],
        "num_cpus": args.num_cpus,
        "head_cpus": args.num_cpus if args.head_cpus is None else args.head_cpus,
        "num_gpus": args.num_gpus,
        "object_store_mb": args.object_store_mb,
        "backend": None if args.no_mlflow else args.backend,
        "artifacts": args.artifacts,
        "components": {},
    }
    save_state(state_dir, state)
    creds = _creds(state)
    try:
        # Storage first: the MLflow server needs its database and bucket, the nodes their bucket.
        if args.artifacts == "s3":
            object_store.start(state, creds, args.timeout)
        if pg_bin is not None:
            postgres.start(state, pg_bin, creds["postgres_password"], args.timeout)
        if state["nodes"]:
            env = _node_env(state)
            for node in state["nodes"]:
                _start_node(state, node, env, args.timeout)
            state["node_ids"] = ray_nodes.wait_for_nodes(state, state["nodes"], args.timeout)
        if not args.no_mlflow:
            mlflow_server.start(state, ray_nodes.base_env(token_path), creds, args.timeout, args.mlflow_dir)
    except BaseException:  # noqa: BLE001 - whatever went wrong, leave nothing running
        print("mixup-sweep cluster: start failed, stopping what was started", file=sys.stderr)
        stop_processes(state, grace_s=5.0)
        if "s3" in state["ports"]:
            object_store.remove_sockets(state)
        save_state(state_dir, state)
        raise
    save_state(state_dir, state)
    env_vars = client_env(state, creds or None)
    env_path = write_env_file(state_dir, env_vars)
    parts = [] if args.no_ray else [
        f"{len(state['nodes'])} Ray nodes ({', '.join(state['nodes'])}), {state['num_cpus']} CPU each"
        + (f", head {state['head_cpus']}" if state["head_cpus"] != state["num_cpus"] else "")]
    parts += [] if args.no_mlflow else [mlflow_server.describe(state)]
    if args.artifacts == "s3":
        parts.append(f"S3 endpoint {env_vars['AWS_ENDPOINT_URL']} (SeaweedFS, data in {object_store.data_dir(state)})")
    if pg_bin is not None:
        parts.append(f"PostgreSQL on {HOST}:{ports['postgres']} (data in {postgres.data_dir(state)})")
    print(f"# local cluster up: {'; '.join(parts)}")
    print(f"# state: {state_dir}   logs: {state_dir / 'logs'}" + ("" if args.no_ray else f"   Ray logs: {temp_dir}"))
    print(f"# run `source {env_path}` to use it:")
    for key, value in env_vars.items():
        print(shown(key, value, env_path))
    return 0


# ----------------------------------------------------------------------------------------------
# status / restart / down


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    if state is None:
        print(f"local cluster: down (no state in {state_dir})")
        return 3
    found = cluster_processes(state)
    up = all(found.get(c) for c in state["components"])
    print(f"local cluster ({state_dir}): {'up' if up else 'DEGRADED' if any(found.values()) else 'down'}")
    for component, info in state["components"].items():
        procs = found.get(component, [])
        print(f"  {component:<16} session {info['sid']:<8} {len(procs)} processes")
    if found.get("stray"):
        print(f"  {'stray':<16} {len(found['stray'])} processes naming {state['ray_temp_dir']}")
    if any(found.values()):
        if "dashboard" in state["ports"]:
            dash = f"http://{HOST}:{state['ports']['dashboard']}"
            alive = ray_nodes.alive_nodes(state)
            if alive is not None:
                # A killed node stays ALIVE until the GCS's health checks fail: count node names, not records.
                names = {k for n in alive for k in n.get("resources_total", {}) if k.startswith("node_")}
                print(f"  ray nodes alive  {len(names)} of {len(state['nodes'])} (dashboard {dash})")
            else:
                print(f"  ray dashboard    not answering at {dash}")
        if "mlflow" in state["ports"]:
            uri = f"http://{HOST}:{state['ports']['mlflow']}"
            ok = http_get(f"{uri}/health")[0] == 200
            print(f"  mlflow server    {'healthy' if ok else 'not answering'} at {uri}")
        if "s3" in state["ports"]:
            uri = f"http://{HOST}:{state['ports']['s3']}"
            ok = http_get(f"{uri}/healthz")[0] == 200
            print(f"  s3 endpoint      {'healthy' if ok else 'not answering'} at {uri}")
        env_path = state_dir / ENV_FILE
        for key, value in client_env(state, _creds(state) or None).items():
            print("  " + shown(key, value, env_path))
    return 0 if up else 1


RESTARTABLE = "mlflow, postgres, s3, or a worker node (worker_1, ...)"
# A fast shutdown for the database (SIGINT to its postmaster); a short grace for SeaweedFS (its own
# graceful stop takes ~25 s, and its data is synced per write). Others: SIGTERM, then SIGKILL.
GRACEFUL_STOP = {postgres.COMPONENT: postgres.stop, object_store.COMPONENT: object_store.stop}


def cmd_restart(args: argparse.Namespace) -> int:
    """Stop one component (as a crash, a preemption or a maintenance restart would) and start it again
    on the same ports and data after --down-for seconds. The head node is not restartable: it is the
    cluster (its GCS keeps the cluster's state)."""
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    if state is None:
        raise ClusterError(f"no cluster in {state_dir}")
    name = args.component
    component = ray_nodes.component(name) if name in state.get("nodes", []) else name
    if name == "head" or component not in state["components"]:
        raise ClusterError(f"cannot restart {name!r}: choose {RESTARTABLE}")
    if args.signal == "TERM":  # each component's own graceful stop
        survivors = GRACEFUL_STOP.get(component, lambda s: stop_processes(s, args.grace, [component]))(state)
    else:  # KILL (a crash) or INT, as asked, to every process of the component
        survivors = stop_processes(state, args.grace, [component], first_signal=getattr(signal, f"SIG{args.signal}"))
    if component == object_store.COMPONENT:
        object_store.remove_sockets(state)  # SIGKILL leaves them; idempotent after a graceful stop
    if survivors:
        raise ClusterError(f"{name} did not stop: pids {', '.join(str(p['pid']) for p in survivors)} "
                           f"(stuck in the kernel?); end them, then run `mixup-sweep cluster restart {name}` again")
    print(f"mixup-sweep cluster: {name} stopped (SIG{args.signal}); starting it again in {args.down_for:g} s",
          flush=True)
    time.sleep(args.down_for)
    creds = _creds(state)
    if component == object_store.COMPONENT:
        object_store.start(state, creds, args.timeout)
    elif component == postgres.COMPONENT:
        postgres.start(state, Path(state["postgres_bin"]), creds["postgres_password"], args.timeout)
    elif component == mlflow_server.COMPONENT:
        mlflow_server.start(state, ray_nodes.base_env(Path(state["token_path"])), creds, args.timeout)
    else:
        before = frozenset(state.get("node_ids", {}).values())
        _start_node(state, name, _node_env(state), args.timeout)
        state.setdefault("node_ids", {}).update(ray_nodes.wait_for_nodes(state, [name], args.timeout, before))
    save_state(state_dir, state)
    print(f"mixup-sweep cluster: {name} is up again")
    return 0


def cleanup_state(state_dir: Path, state: dict) -> None:
    if state.get("ray_temp_dir_is_fallback"):
        shutil.rmtree(state["ray_temp_dir"], ignore_errors=True)
    for name in (STATE_FILE, ENV_FILE, TOKEN_FILE):
        (state_dir / name).unlink(missing_ok=True)


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir).resolve()
    state = load_state(state_dir)
    if state is None:
        if args.purge:
            _purge(state_dir)
        print(f"local cluster: nothing to stop (no state in {state_dir})")
        return 0
    count = sum(len(p) for p in cluster_processes(state).values())
    # The database last and in order (a fast shutdown), once nothing writes to it any more.
    others = [c for c in state["components"] if c != postgres.COMPONENT]
    survivors = stop_processes(state, args.grace, others + ["stray"])
    survivors += postgres.stop(state) if postgres.COMPONENT in state["components"] else []
    if "s3" in state["ports"]:
        object_store.remove_sockets(state)
    if survivors:
        pids = ", ".join(str(p["pid"]) for p in survivors)
        raise ClusterError(f"processes still alive after SIGKILL: {pids}")
    cleanup_state(state_dir, state)
    if args.purge:
        _purge(state_dir)
    print(f"local cluster down: stopped {count} processes of {', '.join(state['components'])}"
          + ("; data and credentials deleted" if args.purge else ""))
    return 0


def _purge(state_dir: Path) -> None:
    for name in ("mlflow", "postgres", "s3", "nodes", "ray", "logs"):
        shutil.rmtree(state_dir / name, ignore_errors=True)
    (state_dir / SECRETS_FILE).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    state_help = ("where pids, token, env file, logs and data live "
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
    up.add_argument("--head-cpus", type=int, default=None,
                    help="CPUs the head advertises (default: --num-cpus; 0 keeps trials off the head, "
                         "as on a production cluster)")
    up.add_argument("--num-gpus", type=int, default=0, help="GPUs each node advertises (default 0)")
    up.add_argument("--object-store-mb", type=int, default=256, help="object store per node (default 256)")
    up.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite",
                    help="MLflow's backend store (default sqlite; postgres: a PostgreSQL server in STATE/postgres)")
    up.add_argument("--artifacts", choices=("local", "s3"), default="local",
                    help="where MLflow's artifacts and Ray Tune's storage live (default local: a directory "
                         "every node shares; s3: an S3 endpoint on 127.0.0.1, nodes share no disk)")
    up.add_argument("--postgres-bin", default=None, help="directory of PostgreSQL's initdb and postgres "
                                                         "(default: PATH, else /usr/lib/postgresql/*/bin)")
    up.add_argument("--ray-port", type=int, default=0, help="head GCS port (default: a free one)")
    up.add_argument("--dashboard-port", type=int, default=0, help="dashboard / job API port (default: free)")
    up.add_argument("--client-port", type=int, default=0, help="Ray client server port (default: free)")
    up.add_argument("--mlflow-port", type=int, default=0, help="MLflow server port (default: free)")
    up.add_argument("--postgres-port", type=int, default=0, help="PostgreSQL port (default: free)")
    up.add_argument("--s3-port", type=int, default=0, help="S3 endpoint port (default: free)")
    up.add_argument("--mlflow-dir", default=None, help="MLflow SQLite db + artifacts (default STATE/mlflow)")
    up.add_argument("--no-mlflow", action="store_true", help="start only the Ray nodes")
    up.add_argument("--no-ray", action="store_true", help="start only the MLflow server")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    sub.add_parser("status", parents=[common], help="what runs, and the client environment")
    restart = sub.add_parser("restart", parents=[common],
                             help="stop one component and start it again (fault drills)")
    restart.add_argument("component", help=f"what to restart: {RESTARTABLE}")
    restart.add_argument("--down-for", type=float, default=0.0, help="seconds it stays down (default 0)")
    restart.add_argument("--signal", choices=("TERM", "KILL", "INT"), default="TERM",
                         help="how it is stopped (default TERM: a preemption's or an eviction's signal)")
    restart.add_argument("--grace", type=float, default=10.0,
                         help="seconds between the signal and SIGKILL (default 10)")
    restart.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    down = sub.add_parser("down", parents=[common], help="stop exactly what `up` started")
    down.add_argument("--grace", type=float, default=5.0,
                      help="seconds between SIGTERM and SIGKILL (default 5)")
    down.add_argument("--purge", action="store_true",
                      help="also delete the cluster's data (MLflow, PostgreSQL, S3) and credentials")
    args = parser.parse_args(argv)
    if args.command == "up" and (args.workers < 0 or args.num_cpus < 1 or args.num_gpus < 0
                                 or (args.head_cpus is not None and args.head_cpus < 0)):
        parser.error("--workers must be >= 0, --num-cpus >= 1, --head-cpus >= 0, --num-gpus >= 0")
    if args.command == "restart" and args.down_for < 0:
        parser.error("--down-for must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    handlers = {"up": cmd_up, "status": cmd_status, "restart": cmd_restart, "down": cmd_down}
    try:
        return handlers[args.command](args)
    except ClusterError as err:
        print(f"mixup-sweep cluster: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
