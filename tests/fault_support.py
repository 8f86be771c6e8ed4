"""Helpers for the fault-injection tests: a real `mlflow server` on 127.0.0.1 that a test can stop and
restart on the same port and backend, and reading what such a server holds."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class MlflowServer:
    """`mlflow server` in its own session (so stop() ends its workers too), SQLite backend and proxied
    artifacts under `root`, listening on 127.0.0.1 only."""

    def __init__(self, root: Path, port: Optional[int] = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> "MlflowServer":
        (self.root / "artifacts").mkdir(parents=True, exist_ok=True)
        mlflow = BIN / "mlflow"
        cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server",
               "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
               "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        log = (self.root / "server.log").open("a")
        self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({self.proc.returncode}); see {self.root / 'server.log'}")
            if _healthy(self.uri):
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer within {timeout}s")

    def stop(self) -> None:
        """Kill the server's whole session: the port is free (and refusing) right after."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _healthy(self.uri):
            time.sleep(0.2)

    def snapshot(self) -> tuple:
        """Everything a test could have created on the server: experiments and runs (ids)."""
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=self.uri)
        experiments = sorted(e.experiment_id for e in c.search_experiments())
        runs = sorted(r.info.run_id for r in c.search_runs(experiments, max_results=1000)) if experiments else []
        return experiments, runs
