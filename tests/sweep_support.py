"""Helpers for the sweep tests: tiny specs, running `mixup-sweep` as a user would (a subprocess in its
own working directory), reading the MLflow store, and finding the processes a sweep started."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from sweeps.usage_reporting import USAGE_REPORTING_OFF

# A trial that takes well under a second of compute: the cost of a test sweep is Ray's start-up.
TINY_TRIAL: dict[str, Any] = {
    "seed": 0,
    "data": {"name": "feature_noise", "n_train": 200, "n_test": 200, "val_size": 0.1},
    "model": {"name": "two_layer_cnn"},
    "train": {"epochs": 3, "batch_size": 50, "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0,
              "device": "cpu", "checkpoint_interval_s": 0},  # a checkpoint every epoch: restarts resume mid-run
    "mixup": {"alpha": 1.0, "stop_epoch": None},
}


def tiny_spec(name: str, **keys: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "trial": json.loads(json.dumps(TINY_TRIAL)),
        "grid": {"mixup.stop_epoch": [0, None]},
        "metric": "val_acc",
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": 2,
        "max_failures": 1,
    }
    spec.update(keys)
    return spec


def write_spec(directory: Path, spec: dict[str, Any], filename: str = "spec.yaml") -> Path:
    path = Path(directory) / filename
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def cli_command() -> list[str]:
    script = Path(sys.executable).parent / "mixup-sweep"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sweeps.cli"]


def user_env() -> dict[str, str]:
    """The environment of a user with nothing configured: no cluster, no tracking server, no GPU."""
    # Not the usage-reporting switches either: this test process set them when it imported sweeps
    # (usage_reporting.py), and a user's shell has none of them.
    unset = ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", *USAGE_REPORTING_OFF)
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: Optional[dict[str, Optional[str]]] = None
            ) -> subprocess.CompletedProcess:
    """`env`: extra variables; a None value removes one (e.g. CUDA_VISIBLE_DEVICES on a GPU machine)."""
    merged = {**user_env(), **(env or {})}
    try:
        return subprocess.run(cli_command() + args, cwd=cwd, env={k: v for k, v in merged.items() if v is not None},
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:  # say what it was doing when it hung
        out = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"mixup-sweep {' '.join(args)} did not end within {timeout:g} s; "
                             f"its output ended with:\n{out[-6000:]}") from None


def start_cli(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cli_command() + args, cwd=cwd, env=user_env(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


# ---------------------------------------------------------------------------------------------
# Processes (Linux /proc): a sweep's driver starts Ray's processes as its descendants.


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out.setdefault(ppid, []).append(int(entry.name))
    return out


def descendants(pid: int) -> list[int]:
    tree = _children()
    found, todo = [], [pid]
    while todo:
        kids = tree.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def kill(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


# ---------------------------------------------------------------------------------------------
# MLflow store


def sql(db: Path, query: str, *args: Any) -> Optional[list[tuple]]:
    """Read-only query of the MLflow SQLite store (for polling while a sweep writes to it)."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute(query, args).fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return None


def trial_epochs_logged(db: Path) -> dict[str, tuple[str, int]]:
    """run id -> (status, largest logged step of train_loss) for every trial run."""
    rows = sql(db, """
        select r.run_uuid, r.status, coalesce(max(m.step), 0) from runs r
        join tags t on t.run_uuid = r.run_uuid and t.key = 'mixup_sweep.role' and t.value = 'trial'
        left join metrics m on m.run_uuid = r.run_uuid and m.key = 'train_loss'
        group by r.run_uuid""") or []
    return {run_id: (status, step) for run_id, status, step in rows}


def client(tmp: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlflow.db'}")


def sweep_runs(c, name: str) -> tuple[list, list]:
    """(parent runs, child runs) of the sweep's experiment."""
    exp = c.get_experiment_by_name(name)
    assert exp is not None, f"no MLflow experiment {name!r}"
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mixup_sweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mixup_sweep.role") == "trial"]
    return parents, children


def steps(c, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in c.get_metric_history(run_id, key))


def ray_epochs(tmp: Path, name: str, trial_id: str) -> list[int]:
    """The `epoch` of every result Ray recorded for a trial, in order (result.json)."""
    path = tmp / "ray_results" / name / f"trial_{trial_id}" / "result.json"
    epochs = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed driver
            continue
        if "epoch" in row:
            epochs.append(int(row["epoch"]))
    return epochs


def run_and_kill_the_trial_worker(tmp: Path, ready: Callable[[], Any], what: str) -> str:
    """`mixup-sweep run spec.yaml` in `tmp` with one trial worker; once `ready()`, SIGKILL that worker
    mid-epoch (as an OOM kill would). The sweep must still end well (exit 0), the kill having really hit
    the running trial. Returns the sweep's output."""
    driver = start_cli(["run", "spec.yaml"], cwd=tmp, log=tmp / "run.log")
    try:
        wait_for(ready, timeout=180, what=what)
        workers = [p for p in descendants(driver.pid) if "ImplicitFunc" in cmdline(p) or "train_trial" in cmdline(p)]
        assert len(workers) == 1, [cmdline(p) for p in descendants(driver.pid)]
        kill(workers)
        rc = driver.wait(timeout=240)
    finally:
        if driver.poll() is None:
            kill([driver.pid, *descendants(driver.pid)])
    log = (tmp / "run.log").read_text()
    assert rc == 0, log[-3000:]
    assert "ActorDiedError" in log  # the kill really hit the running trial
    return log
