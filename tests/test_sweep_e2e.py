"""End to end: `mixup-sweep run` / `resume` / `best` in a subprocess, in a fresh working directory, on
a real embedded Ray and a real MLflow SQLite store; tiny feature-noise trials."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from sweep_support import (
    TINY_TRIAL,
    client,
    descendants,
    kill,
    ray_epochs,
    run_and_kill_the_trial_worker,
    run_cli,
    start_cli,
    steps,
    sweep_runs,
    tiny_spec,
    trial_epochs_logged,
    wait_for,
    write_spec,
)

from mixup_core.config import TrialConfig, flatten

EPOCH_KEYS = ("train_loss", "lr", "mixup_active", "val_acc", "test_acc", "test_acc_rare", "images_per_s")
SUMMARY_KEYS = ("best_epoch", "best_val_acc", "test_acc_at_best", "final_test_acc", "wall_s")


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """4 trials (stop_epoch x seed) plus one that diverges at epoch 1, 3 epochs each."""
    tmp = tmp_path_factory.mktemp("grid_sweep")
    spec = tiny_spec("e2e", grid=[
        {"mixup.stop_epoch": [0, 2], "seed": [0, 1]},
        {"train.lr": [1.0e36], "train.momentum": [0.9], "train.weight_decay": [5.0e-4]},  # NaN loss in epoch 1
    ])
    write_spec(tmp, spec)
    # A cluster that `ray start` once registered on this machine, long gone: with no --address the
    # sweep must start its own Ray, not try to join that one. (A private Ray temp dir, short enough
    # for Ray's socket paths, so no other Ray on the machine sees the stale file.)
    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    (ray_tmp / "ray").mkdir()
    (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
    started = time.monotonic()
    res = run_cli(["run", "spec.yaml"], cwd=tmp, env={"RAY_TMPDIR": str(ray_tmp)})
    elapsed = time.monotonic() - started
    yield tmp, res, elapsed, ray_tmp
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_grid_sweep_creates_parent_and_one_child_run_per_trial(grid_sweep):
    tmp, res, elapsed, _ = grid_sweep
    assert res.returncode == 1, res.stderr[-3000:]  # 1: the diverged trial failed
    assert "Traceback" not in res.stderr
    assert (tmp / "mlflow.db").exists() and (tmp / "mlartifacts").is_dir()
    assert (tmp / "ray_results" / "e2e" / "tuner.pkl").exists()

    c = client(tmp)
    exp = c.get_experiment_by_name("e2e")
    assert exp.artifact_location == (tmp / "mlartifacts").as_uri()
    parents, children = sweep_runs(c, "e2e")
    assert len(parents) == 1 and len(children) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mixup_sweep.storage"] == str(tmp / "ray_results" / "e2e")
    assert parent.data.params["metric"] == "val_acc" and parent.data.params["max_concurrent"] == "2"
    stored = yaml.safe_load(open(c.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp))))
    assert stored["name"] == "e2e" and stored["grid"][0] == {"mixup.stop_epoch": [0, 2], "seed": [0, 1]}

    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert len({r.data.tags["mixup_sweep.trial_id"] for r in children}) == 5
    all_keys = set(flatten(TrialConfig().to_dict()))
    points = set()
    for run in children:
        assert set(run.data.params) == all_keys  # the flattened trial configuration
        assert run.data.tags["mixup_sweep.device"] == "cpu" and run.data.tags["mixup_sweep.gpu_ids"] == "none"
        assert run.data.tags["mixup_sweep.node"] == "127.0.0.1"  # the embedded Ray stays on loopback
        # a 1-CPU trial's torch uses one thread, even in a worker that loaded torch before the trial came
        assert run.data.tags["mixup_sweep.cpu_threads"] == "1"
        p = run.data.params
        points.add((p["mixup.stop_epoch"], p["seed"], p["train.lr"]))
    assert points == {("0", "0", "0.5"), ("0", "1", "0.5"), ("2", "0", "0.5"), ("2", "1", "0.5"),
                      ("null", "0", "1e+36")}


def test_grid_sweep_starts_only_the_ray_processes_it_uses(grid_sweep):
    """The embedded Ray runs no API server and no autoscaler monitor: nothing of a one-node sweep talks
    to them, and `ray.init` waited for the API server before it started the raylet."""
    _, _, _, ray_tmp = grid_sweep
    logs = ray_tmp / "ray" / "session_latest" / "logs"
    names = {p.name for p in logs.iterdir()}
    assert "raylet.out" in names and "gcs_server.out" in names, sorted(names)
    assert not names & {"dashboard.log", "dashboard.out", "dashboard.err"}, sorted(names)  # the API server
    assert not names & {"monitor.log", "monitor.out", "monitor.err"}, sorted(names)  # the autoscaler monitor


def test_grid_sweep_starts_its_first_trials_in_the_workers_ray_prestarted(grid_sweep):
    """When the sweep's concurrent trials fill the node's CPUs, the raylet prestarts one worker per CPU
    as the driver connects, and they import the trial's modules while the driver gets ready
    (ray_compat/worker_preload.py). Each of them hosts a trial: the raylet keeps them although Tune's
    placement groups take every CPU just before the trials' leases (it killed both, about one start in
    three, before num_workers_soft_limit; new workers then imported everything again). Prestarted
    workers have no job id in their log's name (ffffffff); a worker's .out names each actor it hosted."""
    from sweeps.ray_compat.resources import embedded_ray_cpus

    if embedded_ray_cpus() > 2:
        pytest.skip("the sweep's 2 concurrent trials fill the CPUs of a 2-CPU node only: no preloading here")
    _, res, _, ray_tmp = grid_sweep
    logs = ray_tmp / "ray" / "session_latest" / "logs"
    prestarted = sorted(logs.glob("worker-*-ffffffff-*.out"))
    assert len(prestarted) == int(embedded_ray_cpus()), sorted(p.name for p in logs.glob("worker-*"))
    for out in prestarted:
        assert ":actor_name:" in out.read_text(errors="replace"), (out.name, res.stderr[-2000:])


def test_grid_sweep_logs_each_epoch_once_and_the_trial_outputs(grid_sweep):
    tmp, _, _, _ = grid_sweep
    c = client(tmp)
    _, children = sweep_runs(c, "e2e")
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len(finished) == 4
    for run in finished:
        run_id = run.info.run_id
        for key in EPOCH_KEYS:
            assert steps(c, run_id, key) == [1, 2, 3], key
        rows = [json.loads(line) for line in open(c.download_artifacts(run_id, "metrics.jsonl", str(tmp / run_id)))]
        assert [r["epoch"] for r in rows] == [1, 2, 3]
        for key in EPOCH_KEYS:
            logged = [m.value for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)]
            assert logged == pytest.approx([float(r[key]) for r in rows], rel=1e-12), key
        summary = json.load(open(c.download_artifacts(run_id, "summary.json", str(tmp / run_id))))
        for key in SUMMARY_KEYS:
            assert run.data.metrics[key] == pytest.approx(summary[key]), key
            assert steps(c, run_id, key) == [0]
        assert run.data.metrics["final_test_acc"] == pytest.approx(rows[-1]["test_acc"])
        artifacts = {a.path for a in c.list_artifacts(run_id)}
        assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint"} <= artifacts
        checkpoint = {a.path for a in c.list_artifacts(run_id, "checkpoint")}
        assert {"checkpoint/state.pt", "checkpoint/metrics.jsonl", "checkpoint/config.yaml"} <= checkpoint
        expected_mixup = [1.0 if (run.data.params["mixup.stop_epoch"] == "2" and e < 2) else 0.0 for e in range(3)]
        assert [r["mixup_active"] for r in rows] == expected_mixup


def test_ray_gets_a_result_a_second_while_mlflow_gets_every_epoch(tmp_path):
    """Per-epoch results to Ray cost a small trial more than its training (a blocking round trip, and
    driver CPU on the same cores): Ray gets one a second plus the checkpoint epochs and the last epoch
    (`report_interval_s`). MLflow still records every epoch."""
    trial = json.loads(json.dumps(TINY_TRIAL))
    trial["train"].update(epochs=60, checkpoint_interval_s=10)  # the default interval: few checkpoints
    write_spec(tmp_path, tiny_spec("throttled", trial=trial, grid={"mixup.stop_epoch": [0, 20]}))
    res = run_cli(["run", "spec.yaml"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    c = client(tmp_path)
    _, children = sweep_runs(c, "throttled")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED"
        for key in ("train_loss", "val_acc", "test_acc", "lr"):
            assert steps(c, run.info.run_id, key) == list(range(1, 61)), key
        epochs = ray_epochs(tmp_path, "throttled", run.data.tags["mixup_sweep.trial_id"])
        assert epochs[0] == 1 and epochs[-1] == 60 and epochs == sorted(set(epochs))
        wall = run.data.metrics["wall_s"]
        assert len(epochs) <= wall / 1.0 + 2 + (wall / 10 + 1), (len(epochs), wall)


def test_diverged_trial_is_failed_with_its_error(grid_sweep):
    tmp, _, _, _ = grid_sweep
    c = client(tmp)
    _, children = sweep_runs(c, "e2e")
    failed = [r for r in children if r.info.status == "FAILED"]
    assert len(failed) == 1
    run = failed[0]
    assert run.data.params["train.lr"] == "1e+36"
    assert run.data.tags["mixup_sweep.error"].startswith("diverged at epoch 1")
    assert "train_loss" not in run.data.metrics  # no finished epoch to log


def test_run_again_is_refused_and_resume_of_a_finished_sweep_changes_nothing(grid_sweep):
    tmp, _, _, _ = grid_sweep
    c = client(tmp)
    _, before = sweep_runs(c, "e2e")
    snapshot = {r.info.run_id: (r.info.end_time, steps(c, r.info.run_id, "train_loss")) for r in before}

    again = run_cli(["run", "spec.yaml"], cwd=tmp)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "mixup-sweep resume e2e" in again.stderr

    resumed = run_cli(["resume", "e2e"], cwd=tmp)
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # still: one diverged trial
    parents, after = sweep_runs(c, "e2e")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.info.run_id: (r.info.end_time, steps(c, r.info.run_id, "train_loss")) for r in after} == snapshot


def test_best_reads_the_sweep_from_mlflow(grid_sweep):
    tmp, _, _, _ = grid_sweep
    res = run_cli(["best", "e2e", "--json"], cwd=tmp)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["sweep"] == "e2e"


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
def test_sweep_survives_ctrl_c_and_sigkill_and_resume_completes_it(tmp_path):
    """Ctrl-C once a trial finished and the next is mid-way: exit 130, runs KILLED, resumable. Resume,
    then SIGKILL the driver (and everything it started) mid-way through the last trial. Resume again:
    the sweep completes with one run per trial, every epoch logged once, finished trials untouched,
    interrupted trials continued from their checkpoints."""
    trial = json.loads(json.dumps(TINY_TRIAL))
    trial["data"]["n_train"] = 2000
    trial["train"]["epochs"] = 25
    write_spec(tmp_path, tiny_spec("killed", trial=trial, grid={"mixup.stop_epoch": [0, 5, None]}, max_concurrent=1,
                                   share_prefix=False))  # independent trials (branching: test_branching.py)
    db = tmp_path / "mlflow.db"

    def finished_and_midway(n_finished):
        def check():
            runs = trial_epochs_logged(db).values()
            return (sum(s == "FINISHED" for s, _ in runs) >= n_finished
                    and any(s == "RUNNING" and e >= 3 for s, e in runs))
        return check

    driver = start_cli(["run", "spec.yaml"], cwd=tmp_path, log=tmp_path / "run.log")
    try:
        wait_for(finished_and_midway(1), timeout=180, what="a finished trial and one mid-way")
        driver.send_signal(signal.SIGINT)  # Ctrl-C
        assert driver.wait(timeout=120) == 130
    finally:
        if driver.poll() is None:
            kill([driver.pid, *descendants(driver.pid)])
    assert "continue with: mixup-sweep resume killed" in (tmp_path / "run.log").read_text()
    c = client(tmp_path)
    parents, children = sweep_runs(c, "killed")
    assert parents[0].info.status == "KILLED"
    assert sorted(r.info.status for r in children) == ["FINISHED", "KILLED"]

    driver = start_cli(["resume", "killed"], cwd=tmp_path, log=tmp_path / "resume1.log")
    try:
        wait_for(finished_and_midway(2), timeout=180, what="two finished trials and one mid-way")
        started = descendants(driver.pid)
        driver.kill()  # SIGKILL: no chance to save anything
        driver.wait()
        kill(started)
    finally:
        if driver.poll() is None:
            kill([driver.pid, *descendants(driver.pid)])

    _, before = sweep_runs(c, "killed")
    finished_before = {r.info.run_id: (r.info.end_time, steps(c, r.info.run_id, "train_loss"))
                       for r in before if r.info.status == "FINISHED"}
    assert len(finished_before) == 2 and len(before) == 3

    res = run_cli(["resume", "killed"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    parents, after = sweep_runs(c, "killed")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(after) == 3
    assert len({r.data.tags["mixup_sweep.trial_id"] for r in after}) == 3
    for run in after:
        assert run.info.status == "FINISHED"
        for key in ("train_loss", "val_acc", "test_acc"):
            assert steps(c, run.info.run_id, key) == list(range(1, 26)), key
        epochs = ray_epochs(tmp_path, "killed", run.data.tags["mixup_sweep.trial_id"])
        assert epochs.count(1) == 1 and max(epochs) == 25  # continued from a checkpoint, not from scratch
    for run_id, (end_time, history) in finished_before.items():
        assert c.get_run(run_id).info.end_time == end_time  # not rerun
        assert steps(c, run_id, "train_loss") == history


def test_failed_trial_restarts_from_its_checkpoint_without_duplicate_steps(tmp_path):
    """Kill the trial's worker process mid-way (as an OOM kill would): with max_failures Ray restarts it
    from its last checkpoint, and it keeps logging into the same MLflow run, each epoch once."""
    trial = json.loads(json.dumps(TINY_TRIAL))
    trial["data"]["n_train"] = 2000
    trial["train"]["epochs"] = 30
    write_spec(tmp_path, tiny_spec("restarted", trial=trial, grid={"mixup.stop_epoch": [5]}, max_failures=1))
    db = tmp_path / "mlflow.db"
    run_and_kill_the_trial_worker(tmp_path, lambda: any(e >= 4 for _, e in trial_epochs_logged(db).values()),
                                  "the trial's 4th epoch")

    c = client(tmp_path)
    _, children = sweep_runs(c, "restarted")
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_acc", "test_acc", "lr"):
        assert steps(c, run.info.run_id, key) == list(range(1, 31)), key
    epochs = ray_epochs(tmp_path, "restarted", run.data.tags["mixup_sweep.trial_id"])
    # From a checkpoint, not from scratch. (Ray's own result.json may miss the epoch the killed worker
    # had in flight; MLflow, checked above, has every epoch exactly once.)
    assert epochs.count(1) == 1 and max(epochs) == 30


@pytest.mark.gpu
def test_fractional_gpu_trials_train_on_the_gpu_ray_assigned(tmp_path):
    """Two trials share one GPU (resources.gpu 0.5); `train.device: auto` trains on the GPU Ray assigned."""
    trial = json.loads(json.dumps(TINY_TRIAL))
    trial["train"]["device"] = "auto"
    write_spec(tmp_path, tiny_spec("gpu", trial=trial, resources={"cpu": 1, "gpu": 0.5}))
    res = run_cli(["run", "spec.yaml"], cwd=tmp_path, env={"CUDA_VISIBLE_DEVICES": None})
    assert res.returncode == 0, res.stderr[-3000:]
    _, children = sweep_runs(client(tmp_path), "gpu")
    assert len(children) == 2
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mixup_sweep.device"].startswith("cuda")
        assert run.data.tags["mixup_sweep.gpu_ids"] != "none"
