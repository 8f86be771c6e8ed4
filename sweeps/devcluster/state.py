"""What `cluster up` records (STATE/cluster.json), the credentials it generates (STATE/secrets.json) and
the client environment it writes (STATE/env). Secrets live only in files of mode 600 and in the
environments of the processes that need them: never on a command line, never printed."""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path
from typing import Optional

from .processes import HOST

STATE_FILE = "cluster.json"
ENV_FILE = "env"
TOKEN_FILE = "auth_token"
SECRETS_FILE = "secrets.json"
# Loopback only: every node process, driver and client keeps 127.0.0.1 in Ray's single-machine mode;
# worker nodes are started through ray_compat/loopback_node.py, which re-allows them in that mode.
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}

# The object store's layout, the same as docker/compose.yaml and cluster/kuberay/ use.
MLFLOW_BUCKET = "mlflow"
RAY_BUCKET = "ray-results"
SWEEP_STORAGE = f"s3://{RAY_BUCKET}/sweeps"
S3_REGION = "us-east-1"
DATABASE = "mlflow"
DATABASE_USER = "mlflow"
# Values `up` and `status` print as a pointer to the env file, never as themselves.
SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_BACKEND_STORE_URI")


def write_private(path: Path, text: str) -> None:
    """Create (or replace) `path` with mode 600 from the start: never readable by others, not even briefly."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


def load_state(state_dir: Path) -> Optional[dict]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def save_state(state_dir: Path, state: dict) -> None:
    tmp = state_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.replace(state_dir / STATE_FILE)


def load_or_make_secrets(state_dir: Path) -> dict[str, str]:
    """The cluster's credentials: generated on the first `up` of a state dir, kept with its data (the
    database was initialised with that password) until `down --purge`."""
    path = state_dir / SECRETS_FILE
    if path.exists():
        return json.loads(path.read_text())
    alphabet = string.ascii_uppercase + string.digits
    made = {
        "postgres_password": secrets.token_hex(24),
        "s3_access_key": "MX" + "".join(secrets.choice(alphabet) for _ in range(18)),
        "s3_secret_key": secrets.token_urlsafe(30),
    }
    write_private(path, json.dumps(made, indent=2) + "\n")
    return made


def database_uri(state: dict, creds: dict[str, str]) -> str:
    """The MLflow server's backend store: SQLAlchemy's PostgreSQL URI with the psycopg2 driver."""
    return (f"postgresql+psycopg2://{DATABASE_USER}:{creds['postgres_password']}"
            f"@{HOST}:{state['ports']['postgres']}/{DATABASE}")


def s3_env(state: dict, creds: dict[str, str]) -> dict[str, str]:
    """What every S3 client needs (boto3 for MLflow, pyarrow for Ray): endpoint, region and keys."""
    return {
        "AWS_ENDPOINT_URL": f"http://{HOST}:{state['ports']['s3']}",
        "AWS_DEFAULT_REGION": S3_REGION,
        "AWS_ACCESS_KEY_ID": creds["s3_access_key"],
        "AWS_SECRET_ACCESS_KEY": creds["s3_secret_key"],
    }


def client_env(state: dict, creds: Optional[dict[str, str]] = None) -> dict[str, str]:
    ports = state["ports"]
    env: dict[str, str] = {}
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
    if creds is not None and "s3" in ports:
        env["MIXUP_SWEEP_STORAGE"] = SWEEP_STORAGE  # Ray Tune's results and checkpoints: no shared disk
        env.update(s3_env(state, creds))
    if creds is not None and "postgres" in ports:
        env["MLFLOW_BACKEND_STORE_URI"] = database_uri(state, creds)  # the server's store, for `mlflow` tools
    return env


def shown(key: str, value: str, env_path: Path) -> str:
    """One `export` line for the terminal: a secret names the file that holds it instead."""
    if key in SECRET_ENV:
        return f"export {key}=...   # secret: in {env_path}"
    return f"export {key}={value}"


def write_env_file(state_dir: Path, env: dict[str, str]) -> Path:
    lines = ["# written by mixup-sweep cluster up; `source` this file to talk to the cluster (mode 600: "
             "it holds the cluster's credentials)"]
    lines += [f"export {key}={value}" for key, value in env.items()]
    if "RAY_AUTH_TOKEN_PATH" in env:
        # RAY_AUTH_TOKEN would take precedence over RAY_AUTH_TOKEN_PATH: drop a stale one.
        lines.append("unset RAY_AUTH_TOKEN")
    path = state_dir / ENV_FILE
    write_private(path, "\n".join(lines) + "\n")
    return path
