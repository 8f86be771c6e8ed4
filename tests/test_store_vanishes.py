"""The tracking store vanishing mid-sweep (the SQLite file deleted): trials never create a new one
(today's bug: an empty database appeared and trials logged into it), each attempt fails, and the
driver stops with one line saying how to continue; the sweep stays resumable."""

from __future__ import annotations

import pytest
from sweep_support import run_cli, tiny_spec, wait_for, write_spec
from test_fault_tolerance import kill_tree, progress, start, trial_with

from sweeps.lease import read_lease

pytestmark = pytest.mark.e2e  # a store deleted, a server killed, then resumed: ~2.5 min


def test_a_deleted_sqlite_store_is_never_recreated_and_the_driver_says_so(tmp_path):
    write_spec(tmp_path, tiny_spec("gone", trial=trial_with(1000, 30), grid={"seed": [0, 1, 2]}, max_concurrent=1,
                                   max_failures=1))
    db = tmp_path / "mlflow.db"
    driver = start(["run", "spec.yaml"], tmp_path, tmp_path / "run.log")
    try:
        wait_for(lambda: driver.poll() is not None or any(s == "RUNNING" and e >= 2 for s, e in progress(db, "gone")),
                 timeout=180, what="a trial under way")
        assert driver.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        db.unlink()
        rc = driver.wait(timeout=300)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    log = (tmp_path / "run.log").read_text()
    assert rc == 1, log[-3000:]
    assert not db.exists(), "a trial or the driver created a new, empty store"
    last = [line for line in log.splitlines() if line.strip()][-1]
    assert last.startswith("mixup-sweep: error: sweep 'gone' stopped: the MLflow store") and "is gone" in last, last
    assert "mixup-sweep resume gone" in last
    assert read_lease(str(tmp_path / "ray_results" / "gone")) is None
    res = run_cli(["resume", "gone"], cwd=tmp_path, timeout=120)  # refused up front, still creates nothing
    assert res.returncode == 2 and "no MLflow store" in res.stderr, res.stderr[-2000:]
    assert not db.exists()


def test_a_tracking_server_gone_past_its_retries_stops_the_sweep_resumably_in_one_line(tmp_path):
    """The MLflow server dies mid-sweep and stays away longer than MLflow's retries (here none, so
    the test is fast): every trial attempt fails, nothing is logged anywhere else, and the driver ends
    with one line saying how to continue (no traceback). Once the server is back, `resume` finishes
    the sweep with every epoch in MLflow exactly once."""
    from fault_support import MlflowServer

    epochs = 40
    server = MlflowServer(tmp_path / "server").start()
    backend = server.root / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": server.uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    write_spec(tmp_path, tiny_spec("away", trial=trial_with(2000, epochs), grid={"seed": [0, 1]}, max_concurrent=1,
                                   max_failures=1))
    driver = start(["run", "spec.yaml"], tmp_path, tmp_path / "run.log", env)
    try:
        wait_for(lambda: driver.poll() is not None or any(s == "RUNNING" and e >= 2 for s, e in progress(backend, "away")),
                 timeout=240, what="a trial under way")
        assert driver.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        server.stop()
        rc = driver.wait(timeout=400)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    log = (tmp_path / "run.log").read_text()
    assert rc == 1, log[-3000:]
    last = [line for line in log.splitlines() if line.strip()][-1]
    assert last.startswith("mixup-sweep: error: sweep 'away' stopped: the MLflow store"), last
    assert "mixup-sweep resume away" in last
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()  # nothing local

    server.start()
    try:
        res = run_cli(["resume", "away"], cwd=tmp_path, timeout=400, env={"MLFLOW_TRACKING_URI": server.uri})
        assert res.returncode == 0, res.stderr[-3000:]
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=server.uri)
        exp = c.get_experiment_by_name("away")
        runs = c.search_runs([exp.experiment_id], "tags.`mixup_sweep.role` = 'trial'")
        assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
        for run in runs:
            steps = sorted(m.step for m in c.get_metric_history(run.info.run_id, "val_acc"))
            assert steps == list(range(1, epochs + 1)), steps
    finally:
        server.stop()
