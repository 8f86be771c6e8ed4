"""`mixup-sweep submit SPEC --address http://HEAD:8265 --tracking-uri URI --storage-path P [--follow]`:
the same sweep as `run`, its driver run as a Ray Job on the cluster.

Everything `run` would refuse is refused here first, locally (the spec, the tracking server, the
storage path's form, the job API's address and token): one line, exit 2, no job submitted. Then one
`JobSubmissionClient.submit_job` call:
  * working_dir: a fresh directory holding only `spec.yaml`, the fully resolved spec (overrides
    applied), so the job runs exactly what was validated here;
  * py_modules: this checkout's `sweeps/` and `mixup_core/` when running from a source checkout, so the
    cluster runs the code you have; from an installed package (the image), the cluster's own install;
  * the entrypoint `python -m sweeps.cli run spec.yaml --tracking-uri URI --storage-path P`, and env
    vars naming the job and the address it was submitted to (the driver records both on its MLflow
    parent run, which is how `status`, `logs` and `stop` find the job later).
Ray's token authentication is the SDK's own (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN_PATH or
RAY_AUTH_TOKEN).
"""

from __future__ import annotations

import asyncio
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from mixup_core import ConfigError

from .. import keys
from ..spec import Sweep
from .client import JobsError, job_client

PACKAGES = ("sweeps", "mixup_core")
EXCLUDES = ["__pycache__", "*.pyc"]
# Job states as the SDK names them, and the exit code `submit --follow` ends with.
EXIT_CODES = {"SUCCEEDED": 0, "STOPPED": 143}


def source_checkout() -> Optional[Path]:
    """The repository this code runs from, when it is a source checkout (not an installed wheel)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "sweeps" / "cli.py").is_file() else None


def check_cluster_paths(tracking_uri: Optional[str], storage_path: Optional[str]) -> None:
    """A submitted driver runs on the head node in a temporary directory: relative paths and the
    default SQLite store there would be lost with the job."""
    if not tracking_uri:
        raise ConfigError("submit: pass --tracking-uri (an MLflow server every node reaches, e.g. "
                          "http://HEAD:5000); the default sqlite:///mlflow.db would live in the job's temporary "
                          "directory")
    if tracking_uri.startswith("sqlite:") and not tracking_uri.startswith("sqlite:////"):
        raise ConfigError(f"submit: --tracking-uri {tracking_uri} is relative to the job's temporary directory; "
                          f"use an MLflow server, or sqlite:////ABSOLUTE/path.db on a disk every node shares")
    if not storage_path:
        raise ConfigError("submit: pass --storage-path (s3://bucket/prefix, or an absolute directory every "
                          "node shares); the default ./ray_results would live in the job's temporary directory")
    if "://" not in storage_path and not storage_path.startswith("/"):
        raise ConfigError(f"submit: --storage-path {storage_path} is relative to the job's temporary directory; "
                          f"use s3://... or an absolute directory every node shares")


def submission_id(name: str) -> str:
    return f"mixup-sweep-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def entrypoint(tracking_uri: str, storage_path: str, command: list[str]) -> str:
    return shlex.join([*command, "--tracking-uri", tracking_uri, "--storage-path", storage_path])


def submit(sweep: Optional[Sweep], address: str, tracking_uri: str, storage_path: str, follow: bool,
           resume_name: Optional[str] = None) -> int:
    """Submit `run` of the validated `sweep` (or `resume` of `resume_name`); prints what to do next."""
    try:
        client = job_client(address)
    except JobsError as e:
        raise ConfigError(str(e)) from None
    name = resume_name or sweep.name  # type: ignore[union-attr]
    job_id = submission_id(name)
    with tempfile.TemporaryDirectory(prefix="mixup-sweep-submit-") as staging:
        if resume_name is None:
            (Path(staging) / "spec.yaml").write_text(sweep.to_yaml())  # type: ignore[union-attr]
            command = ["python", "-m", "sweeps.cli", "run", "spec.yaml"]
        else:
            (Path(staging) / "RESUME").write_text(resume_name + "\n")  # working_dir may not be empty
            command = ["python", "-m", "sweeps.cli", "resume", resume_name]
        runtime_env = {
            "working_dir": staging,
            "env_vars": {keys.JOB_ID_ENV: job_id, keys.JOB_ADDRESS_ENV: address, "PYTHONUNBUFFERED": "1"},
        }
        checkout = source_checkout()
        if checkout is not None:
            runtime_env["py_modules"] = [str(checkout / p) for p in PACKAGES]
            runtime_env["excludes"] = EXCLUDES
        try:
            client.submit_job(entrypoint=entrypoint(tracking_uri, storage_path, command), submission_id=job_id,
                              runtime_env=runtime_env, metadata={"mixup_sweep.name": name})
        except Exception as e:  # the SDK raises RuntimeError with the server's answer
            raise ConfigError(f"submit: the cluster at {address} refused the job: {str(e).splitlines()[0][:300]}") from None
    flags = f"--tracking-uri {shlex.quote(tracking_uri)}"
    print(f"submitted sweep {name!r} as Ray job {job_id} to {address}"
          f" ({'code from ' + str(checkout) if checkout else 'the code installed on the cluster'})")
    print(f"  progress:  mixup-sweep status {name} {flags} --watch")
    print(f"  output:    mixup-sweep logs {name} {flags} --follow")
    print(f"  stop:      mixup-sweep stop {name} {flags}   (resumable: mixup-sweep submit --resume {name} ...)")
    print(f"  result:    mixup-sweep best {name} {flags}")
    if not follow:
        return 0
    return follow_job(client, job_id)


def follow_job(client, job_id: str) -> int:
    """Stream the job's output until it ends; the exit code mirrors the driver's."""

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(stream())
    info = client.get_job_info(job_id)
    status = str(info.status.value if hasattr(info.status, "value") else info.status)
    exit_code = getattr(info, "driver_exit_code", None)
    print(f"Ray job {job_id}: {status}" + (f" (driver exit code {exit_code})" if exit_code is not None else ""),
          file=sys.stderr)
    if exit_code is not None:
        return int(exit_code)
    return EXIT_CODES.get(status, 1)
