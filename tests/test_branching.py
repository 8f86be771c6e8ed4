"""Prefix sharing (share_prefix): stop_epoch trials branch from one Mixup trunk. Real Ray, real MLflow
(SQLite), tiny feature-noise trials; `mixup-sweep` run as a user would, in a subprocess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sweep_support import (
    TINY_TRIAL,
    client,
    descendants,
    kill,
    ray_epochs,
    run_cli,
    sql,
    start_cli,
    steps,
    sweep_runs,
    tiny_spec,
    trial_epochs_logged,
    wait_for,
    write_spec,
)

from sweeps.plan.sharing import plan_cost, plan_trials
from sweeps.spec import validate_sweep

T = 12
GRID = {"mixup.stop_epoch": [0, 3, 6, None], "seed": [0, 1]}
# Every per-epoch metric that does not measure time.
EXACT_KEYS = ("train_loss", "lr", "mixup_active", "val_acc", "val_loss", "test_acc", "test_loss", "test_ece",
              "test_acc_common", "test_acc_rare")
SUMMARY_KEYS = ("best_epoch", "best_val_acc", "test_acc_at_best", "final_test_acc", "epochs")


def trial(epochs: int = T, n_train: int = 400, batch_size: int = 50, width: int = 30) -> dict:
    t = json.loads(json.dumps(TINY_TRIAL))
    t["train"]["batch_size"] = batch_size
    t["model"]["width"] = width
    t["train"]["epochs"] = epochs
    t["data"]["n_train"] = n_train
    t["data"]["n_test"] = 400
    return t


@pytest.fixture(scope="module")
def both_ways(tmp_path_factory):
    """The same 8-trial grid, with and without sharing, into one MLflow store."""
    tmp = tmp_path_factory.mktemp("branching")
    # Ray gets every epoch (report_interval_s 0): the tests count the epochs each trial trained there.
    write_spec(tmp, tiny_spec("shared", trial=trial(), grid=GRID, report_interval_s=0), "shared.yaml")
    write_spec(tmp, tiny_spec("plain", trial=trial(), grid=GRID, share_prefix=False, report_interval_s=0),
               "plain.yaml")
    results = {name: run_cli(["run", f"{name}.yaml"], cwd=tmp) for name in ("shared", "plain")}
    return tmp, results


def _by_point(c, name):
    _, children = sweep_runs(c, name)
    return {(r.data.params["mixup.stop_epoch"], r.data.params["seed"]): r for r in children}


def _history(c, run_id, key):
    return [(m.step, m.value) for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_branched_trials_equal_independent_trials_exactly(both_ways):
    tmp, results = both_ways
    for name, res in results.items():
        assert res.returncode == 0, (name, res.stderr[-3000:])
    c = client(tmp)
    shared, plain = _by_point(c, "shared"), _by_point(c, "plain")
    assert set(shared) == set(plain) and len(shared) == 8
    for point, run in shared.items():
        other = plain[point]
        assert run.info.status == other.info.status == "FINISHED"
        for key in EXACT_KEYS:
            history = _history(c, run.info.run_id, key)
            assert [s for s, _ in history] == list(range(1, T + 1)), (point, key)  # one value per epoch
            assert history == _history(c, other.info.run_id, key), (point, key)  # bit-identical
        for key in SUMMARY_KEYS:
            assert run.data.metrics[key] == other.data.metrics[key], (point, key)
    # The stop epochs really differ (the comparison is not between identical curves).
    loss = {p: _history(c, r.info.run_id, "train_loss") for p, r in shared.items()}
    assert loss[("3", "0")] != loss[("6", "0")] != loss[("null", "0")]


def test_branches_are_tagged_and_the_sweep_trains_fewer_epochs(both_ways):
    tmp, _ = both_ways
    c = client(tmp)
    shared = _by_point(c, "shared")
    for (stop, seed), run in shared.items():
        tags = run.data.tags
        assert tags["mixup_sweep.role"] == "trial"  # the trunks are the null trials: no extra runs
        if stop in ("3", "6"):
            assert tags["mixup_sweep.branch_epoch"] == stop
            assert tags["mixup_sweep.branched_from"] == shared[("null", seed)].info.run_id
        else:
            assert "mixup_sweep.branched_from" not in tags
    for name, expected in (("shared", 2 * (T + (T - 3) + (T - 6) + T)), ("plain", 8 * T)):
        trained = sum(len(ray_epochs(tmp, name, r.data.tags["mixup_sweep.trial_id"]))
                      for r in _by_point(c, name).values())
        assert trained == expected, name
    points = sorted(p.name for p in (tmp / "ray_results" / "shared" / "branch_points").glob("*/*"))
    assert points == ["epoch_0003", "epoch_0003", "epoch_0006", "epoch_0006"]
    assert not (tmp / "ray_results" / "plain" / "branch_points").exists()


def test_best_gives_the_same_answer_with_and_without_sharing(both_ways):
    tmp, _ = both_ways
    docs = {}
    for name in ("shared", "plain"):
        res = run_cli(["best", name, "--json"], cwd=tmp)
        assert res.returncode == 0, res.stderr
        docs[name] = json.loads(res.stdout)
    strip = lambda row: {k: v for k, v in row.items() if k != "run_ids"}  # noqa: E731
    assert docs["shared"]["best_stop_epoch"] == docs["plain"]["best_stop_epoch"]
    assert docs["shared"]["best_config"] == docs["plain"]["best_config"]
    assert strip(docs["shared"]["best"]) == strip(docs["plain"]["best"])
    assert [strip(r) for r in docs["shared"]["table"]] == [strip(r) for r in docs["plain"]["table"]]


def test_dry_run_prints_epochs_with_and_without_sharing(tmp_path):
    write_spec(tmp_path, tiny_spec("dry", trial=trial(epochs=40), grid={"mixup.stop_epoch": [0, 5, 10, 20, 30, None],
                                                                       "seed": [0, 1]}))
    res = run_cli(["run", "spec.yaml", "--dry-run"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # per seed: trunk 40 + branches 35 + 30 + 20 + 10 + stop_epoch 0 40 = 175
    assert "epochs with sharing: 350; without: 480 (27% saved)" in res.stdout
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def test_plan_adds_a_trunk_only_where_it_saves_epochs():
    def plan(grid):
        return plan_trials(validate_sweep(tiny_spec("p", trial=trial(epochs=30), grid=grid), "test"))

    # No null trial in the grid: an extra trunk (30) + branches 20 + 10 + 5 = 65 < 90.
    p = plan({"mixup.stop_epoch": [10, 20, 25]})
    assert [(t.kind, t.is_user_trial) for t in p] == [("trunk", False), ("branch", True), ("branch", True),
                                                      ("branch", True)]
    assert plan_cost(p) == 65
    # One early stop without a null trial: a trunk would cost more than it saves.
    assert [t.kind for t in plan({"mixup.stop_epoch": [0, 5]})] == ["single", "single"]
    # Optuna sweeps and share_prefix: false never share.
    sweep = validate_sweep(tiny_spec("p", trial=trial(epochs=30), grid={"mixup.stop_epoch": [10, None]},
                                     share_prefix=False), "test")
    assert [t.kind for t in plan_trials(sweep)] == ["single", "single"]


N_TRAIN = 8000  # with batch 10 and width 128: ~0.4 s per epoch, slow enough to kill mid-way


def trunk_progress(db: Path):
    """(run id, trial id, last logged epoch, status) of the trunk run, read with plain SQL (fast polling)."""
    rows = sql(db, """
        select r.run_uuid, tid.value, coalesce(max(m.step), 0), r.status from runs r
        join tags t on t.run_uuid = r.run_uuid and t.key = 'mixup_sweep.role' and t.value = 'trunk'
        join tags tid on tid.run_uuid = r.run_uuid and tid.key = 'mixup_sweep.trial_id'
        left join metrics m on m.run_uuid = r.run_uuid and m.key = 'train_loss'
        group by r.run_uuid""")
    return rows[0] if rows else None


def _worker_of(trial_id: str, pids: list[int]) -> list[int]:
    """Ray runs a function trial in its trial directory: find the worker process by its cwd."""
    found = []
    for pid in pids:
        try:
            if os.readlink(f"/proc/{pid}/cwd").endswith(f"trial_{trial_id}"):
                found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.slow  # ~90 s: two kills, a resume and an independent reference trial
def test_trunk_killed_midway_and_driver_killed_then_resumed(tmp_path):
    """A grid without a null trial: an extra trunk (role=trunk, ignored by `best`). SIGKILL the trunk's
    worker while a branch runs beside it: Ray restarts the trunk from its checkpoint, and no branch or
    MLflow step is duplicated. Then SIGKILL the driver after the trunk finished; `resume` completes
    the branches without retraining the trunk, and a branch equals the independent trial exactly."""
    epochs, stops = 24, [8, 16, 20]
    write_spec(tmp_path, tiny_spec("faults", trial=trial(epochs=epochs, n_train=N_TRAIN, batch_size=10, width=128),
                                   grid={"mixup.stop_epoch": stops}, max_concurrent=2, max_failures=1,
                                   report_interval_s=0))  # Ray's results are compared epoch by epoch
    db = tmp_path / "mlflow.db"
    c = client(tmp_path)

    driver = start_cli(["run", "spec.yaml"], cwd=tmp_path, log=tmp_path / "run.log")
    try:
        # The trunk past epoch 10 (branch point 8 exists) with the first branch running beside it.
        def trunk_worker():
            progress = trunk_progress(db)
            if progress is None or not trial_epochs_logged(db) or not 10 <= progress[2] < epochs - 2:
                return None
            workers = _worker_of(progress[1], descendants(driver.pid))
            return (progress, workers) if len(workers) == 1 else None

        (trunk_id, trunk_trial, _, _), workers = wait_for(trunk_worker, timeout=180,
                                                          what="trunk at epoch 10 and a branch")
        kill(workers)
        # After the restart the trunk finishes; kill the driver while a branch is still mid-way.
        wait_for(lambda: (trunk_progress(db) or [None] * 4)[3] == "FINISHED"
                 and any(s == "RUNNING" for s, _ in trial_epochs_logged(db).values()),
                 timeout=240, what="the trunk finished and a branch running")
        started = descendants(driver.pid)
        driver.kill()
        driver.wait()
        kill(started)
    finally:
        if driver.poll() is None:
            kill([driver.pid, *descendants(driver.pid)])
    assert "ActorDiedError" in (tmp_path / "run.log").read_text()  # the trunk really restarted
    trunk = c.get_run(trunk_id)
    trunk_epochs = ray_epochs(tmp_path, "faults", trunk_trial)  # Ray may not have recorded the last one
    assert trunk_epochs.count(1) == 1 and max(trunk_epochs) >= epochs - 1  # restarted from a checkpoint

    res = run_cli(["resume", "faults"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # Not retrained: the resume continues the trunk from its last checkpoint Ray knew (at most the
    # final epoch again, or its final result repeated), never from an earlier epoch.
    after = ray_epochs(tmp_path, "faults", trunk_trial)
    new = after[len(trunk_epochs):]
    assert after[:len(trunk_epochs)] == trunk_epochs and len(new) <= 1 and all(e >= max(trunk_epochs) for e in new)
    assert c.get_run(trunk_id).info.status == "FINISHED"
    assert steps(c, trunk.info.run_id, "train_loss") == list(range(1, epochs + 1))

    _, children = sweep_runs(c, "faults")  # role=trial only: the trunk is not one of them
    assert sorted(int(r.data.params["mixup.stop_epoch"]) for r in children) == stops
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mixup_sweep.branched_from"] == trunk.info.run_id
        for key in ("train_loss", "val_acc", "test_acc"):
            assert steps(c, run.info.run_id, key) == list(range(1, epochs + 1)), key
    branch_points = sorted(p.name for p in (tmp_path / "ray_results" / "faults" / "branch_points").glob("*/*"))
    assert branch_points == [f"epoch_{e:04d}" for e in stops]

    best = run_cli(["best", "faults", "--json"], cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["n_trials"] == 3  # the trunk is not a trial

    # Exactness after all that: the stop_epoch=16 branch equals the same trial run on its own.
    from mixup_core.checkpoint import read_history
    from mixup_core.config import validate_trial_config
    from mixup_core.trial import run_trial

    cfg = dict(trial(epochs=epochs, n_train=N_TRAIN, batch_size=10, width=128), mixup={"alpha": 1.0, "stop_epoch": 16})
    run_trial(validate_trial_config(cfg, "test"), tmp_path / "independent")
    rows = read_history(tmp_path / "independent" / "metrics.jsonl")
    branch = next(r for r in children if r.data.params["mixup.stop_epoch"] == "16")
    for key in ("train_loss", "val_acc", "test_acc", "test_loss"):
        logged = [m.value for m in sorted(c.get_metric_history(branch.info.run_id, key), key=lambda m: m.step)]
        assert logged == [float(r[key]) for r in rows], key
