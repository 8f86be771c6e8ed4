"""The cluster's MLflow tracking server: backend store SQLite (STATE/mlflow/mlflow.db) or the cluster's
PostgreSQL; artifacts proxied by the server (clients on any node need only HTTP) into a directory or
the S3 endpoint's `mlflow` bucket. The flags and env names are the ones docker/compose.yaml uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

from .processes import HOST, ClusterError, find_executable, http_get, run_in_new_session, stop_processes, wait_until
from .state import MLFLOW_BUCKET, database_uri, s3_env, save_state

COMPONENT = "mlflow"


def data_dir(state: dict, override: Optional[str] = None) -> Path:
    if override:
        return Path(override).resolve()
    return Path(state.get("mlflow_dir") or Path(state["state_dir"]) / "mlflow")


def check_drivers(backend: str, artifacts: str) -> None:
    """The server's database driver and S3 client, before anything starts."""
    if backend == "postgres" and importlib.util.find_spec("psycopg2") is None:
        raise ClusterError("--backend postgres needs the PostgreSQL driver: pip install 'mixup-sweeps[postgres]'")
    if artifacts == "s3" and importlib.util.find_spec("boto3") is None:
        raise ClusterError("--artifacts s3 needs boto3: pip install 'mixup-sweeps[s3]'")


def server_env(state: dict, base_env: dict, creds: dict[str, str]) -> dict[str, str]:
    env = {**base_env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner: nothing to do
    data = data_dir(state)
    if state["backend"] == "postgres":
        env["MLFLOW_BACKEND_STORE_URI"] = database_uri(state, creds)  # an env var: the password stays off ps
    else:
        env["MLFLOW_BACKEND_STORE_URI"] = f"sqlite:///{data / 'mlflow.db'}"
    if state["artifacts"] == "s3":
        endpoint = s3_env(state, creds)
        env.update(endpoint, MLFLOW_S3_ENDPOINT_URL=endpoint["AWS_ENDPOINT_URL"])
    return env


def command(state: dict) -> list[str]:
    data = data_dir(state)
    destination = f"s3://{MLFLOW_BUCKET}/" if state["artifacts"] == "s3" else str(data / "artifacts")
    return [
        find_executable("mlflow"), "server",
        "--serve-artifacts", "--artifacts-destination", destination,
        "--host", HOST, "--port", str(state["ports"]["mlflow"]),
        "--workers", "1",
    ]


def start(state: dict, base_env: dict, creds: dict[str, str], timeout_s: float,
          override_dir: Optional[str] = None) -> None:
    data = data_dir(state, override_dir)
    (data / "artifacts").mkdir(parents=True, exist_ok=True)
    state["mlflow_dir"] = str(data)
    log = Path(state["state_dir"]) / "logs" / "mlflow.log"
    proc = run_in_new_session(command(state), server_env(state, base_env, creds), log, cwd=data)
    state["components"][COMPONENT] = {"sid": proc.pid, "log": str(log)}
    save_state(Path(state["state_dir"]), state)
    health = f"http://{HOST}:{state['ports']['mlflow']}/health"
    wait_until(lambda: http_get(health)[0] == 200, "the MLflow server", timeout_s, proc, log, 0.5)


def stop(state: dict, grace_s: float = 5.0) -> list[dict]:
    return stop_processes(state, grace_s, [COMPONENT])


def describe(state: dict) -> str:
    store = "PostgreSQL" if state.get("backend") == "postgres" else f"SQLite in {data_dir(state)}"
    artifacts = f"s3://{MLFLOW_BUCKET}/" if state.get("artifacts") == "s3" else f"{data_dir(state) / 'artifacts'}"
    return f"MLflow server (store: {store}; artifacts: {artifacts})"
