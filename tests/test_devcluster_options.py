"""`mixup-sweep cluster` refuses bad options in one line before it starts or writes anything (the
clusters themselves run in test_local_cluster.py and test_production_backends.py, marker `cluster`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def cluster(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mixup-sweep"), "cluster", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("args, message", [
    (["up", "--backend", "postgres", "--postgres-bin", "/nonexistent"], "--postgres-bin /nonexistent: no initdb"),
    (["up", "--backend", "postgres", "--no-mlflow"], "--backend postgres is MLflow's store"),
    (["up", "--no-ray", "--no-mlflow"], "start nothing"),
])
def test_up_refuses_bad_options_before_starting_anything(tmp_path: Path, args: list[str], message: str):
    state = tmp_path / "state"
    done = cluster(*args, "--state-dir", str(state))
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert not state.exists()


@pytest.mark.parametrize("args", [["up", "--head-cpus", "-1"], ["up", "--backend", "mysql"],
                                  ["up", "--artifacts", "gcs"], ["restart", "mlflow", "--down-for", "-3"]])
def test_option_values_outside_their_range_are_usage_errors(tmp_path: Path, args: list[str]):
    done = cluster(*args, "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 2 and "usage:" in done.stderr, done.stderr
    assert not (tmp_path / "state").exists()


def test_restart_without_a_cluster_or_of_the_head_says_what_can_be_restarted(tmp_path: Path):
    done = cluster("restart", "mlflow", "--state-dir", str(tmp_path))
    assert done.returncode == 1 and f"no cluster in {tmp_path}" in done.stderr
    (tmp_path / "cluster.json").write_text('{"components": {"ray-head": {"sid": 1}}, "nodes": ["head"], '
                                           '"ports": {}, "state_dir": "%s"}' % tmp_path)
    done = cluster("restart", "head", "--state-dir", str(tmp_path))
    assert done.returncode == 1 and "cannot restart 'head'" in done.stderr and "worker_1" in done.stderr
