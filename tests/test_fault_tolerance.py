"""Nothing lost: fault injection against real processes (embedded Ray, a local multi-node cluster, a
real MLflow SQLite store and a real `mlflow server`), on tiny CPU trials.

- a trial's worker SIGKILLed mid-epoch: restarted from its checkpoint, same MLflow run, every epoch
  once, and the metrics of an uninterrupted run (bit-exact on CPU);
- two sweeps at once into one SQLite store, one driver SIGKILLed mid-sweep, then `resume`: finished
  trials not rerun, the rest continued from checkpoints, same parent and child runs, a diverged trial
  FAILED with its reason and left out by `best`, and `best --json` equal to the uninterrupted sweep's;
- Ray's saved state damaged the ways a killed driver leaves it (a checkpoint it names already deleted;
  the trials' state and the searcher's state saved at different moments): `resume` still runs every
  trial exactly once, to the numbers of an uninterrupted run;
- an Optuna sweep's driver SIGKILLed mid-trial, that trial unknown to Ray's saved state: `resume`
  deletes its orphaned run and ends with exactly `n_trials` trials;
- the MLflow server stopped mid-sweep (two sweeps logging to it) and restarted on the same port and
  backend: MLflow's HTTP retries carry the logging over the gap, no metric dropped or duplicated;
- a worker node of the local cluster killed mid-sweep: its trials finish on the remaining node.

Per-trial epochs, restarts and MLflow histories in test_sweep_e2e.py are not repeated here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from fault_support import MlflowServer
from sweep_support import (
    TINY_TRIAL,
    cli_command,
    client,
    descendants,
    kill,
    ray_epochs,
    run_and_kill_the_trial_worker,
    run_cli,
    sql,
    steps,
    sweep_runs,
    tiny_spec,
    user_env,
    wait_for,
    write_spec,
)

from mixup_core.checkpoint import read_history
from mixup_core.trial import run_trial
from sweeps.spec import validate_sweep

EPOCH_KEYS = ("train_loss", "lr", "mixup_active", "val_acc", "val_loss", "test_acc", "test_loss", "test_acc_rare")
DIVERGING = {"train.lr": [1.0e36], "train.momentum": [0.9], "train.weight_decay": [5.0e-4]}  # NaN loss in epoch 1


def trial_with(n_train: int, epochs: int) -> dict:
    trial = json.loads(json.dumps(TINY_TRIAL))
    trial["data"]["n_train"] = n_train
    trial["train"]["epochs"] = epochs
    return trial


def start(args: list[str], cwd: Path, log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(cli_command() + args, cwd=cwd, env={**user_env(), **(env or {})},
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a driver and everything it started (its embedded Ray): no chance to save anything."""
    started = descendants(proc.pid)
    proc.kill()
    proc.wait()
    kill(started)


def progress(db: Path, experiment: str) -> list[tuple[str, int]]:
    """(status, largest logged train_loss step) of each trial run of one experiment."""
    rows = sql(db, """
        select r.status, coalesce(max(m.step), 0) from runs r
        join experiments e on e.experiment_id = r.experiment_id and e.name = ?
        join tags t on t.run_uuid = r.run_uuid and t.key = 'mixup_sweep.role' and t.value = 'trial'
        left join metrics m on m.run_uuid = r.run_uuid and m.key = 'train_loss'
        group by r.run_uuid""", experiment) or []
    return [(status, step) for status, step in rows]


def history(c, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)]


def assert_sweep_intact(c, name: str, n_trials: int, epochs: int, n_failed: int = 0) -> tuple:
    """One parent; one child per trial, all attached to that parent; every finished child has every
    epoch exactly once."""
    parents, children = sweep_runs(c, name)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(children) == n_trials
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert len({r.data.tags["mixup_sweep.trial_id"] for r in children}) == n_trials
    assert sorted(r.info.status for r in children).count("FAILED") == n_failed
    for run in children:
        if run.info.status == "FINISHED":
            for key in EPOCH_KEYS:
                assert steps(c, run.info.run_id, key) == list(range(1, epochs + 1)), (name, key)
    return parent, children


def assert_uninterrupted_numbers(c, run, spec: dict, params: dict, reference: Path) -> None:
    """The run's epoch and summary metrics equal the same trial's run_trial without Ray or MLflow (CPU:
    bit-exact)."""
    summary = run_trial(validate_sweep(spec, "spec").trial_config(params), reference)
    rows = read_history(reference / "metrics.jsonl")
    for key in EPOCH_KEYS:
        assert history(c, run.info.run_id, key) == [float(r[key]) for r in rows], key
    for key in ("best_epoch", "best_val_acc", "test_acc_at_best", "final_test_acc"):
        assert run.data.metrics[key] == float(summary[key]), key


# ---------------------------------------------------------------------------------------------
# 1. a trial's worker process killed


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
def test_killed_trial_worker_restarts_to_the_uninterrupted_result(tmp_path):
    """SIGKILL the process running the trial mid-epoch; with max_failures=1 Ray restarts it from its
    last checkpoint into the same MLflow run, and it ends with exactly the metrics of the same trial
    run uninterrupted (run_trial without Ray or MLflow)."""
    spec = tiny_spec("worker_killed", trial=trial_with(2000, 12), grid={"mixup.stop_epoch": [5]},
                     max_failures=1, share_prefix=False)
    write_spec(tmp_path, spec)
    db = tmp_path / "mlflow.db"
    run_and_kill_the_trial_worker(tmp_path, lambda: any(e >= 3 for _, e in progress(db, "worker_killed")), "epoch 3")

    c = client(tmp_path)
    _, children = assert_sweep_intact(c, "worker_killed", 1, 12)
    run = children[0]
    epochs = ray_epochs(tmp_path, "worker_killed", run.data.tags["mixup_sweep.trial_id"])
    assert epochs.count(1) == 1 and epochs.count(12) == 1  # resumed from a checkpoint, not from scratch

    assert_uninterrupted_numbers(c, run, spec, {"mixup.stop_epoch": 5}, tmp_path / "uninterrupted")


# ---------------------------------------------------------------------------------------------
# 2, 5, 7. two sweeps at once into one SQLite store; one driver killed and resumed


def comparable(best_json: str) -> dict:
    """`best --json` without what necessarily differs between two sweeps (names, run and trial ids)."""
    ids = {"sweep", "parent_run_id", "run_id", "run_ids", "trial_id", "experiment_id", "tracking_uri",
           "superseded_run_ids", "written_to_parent", "artifacts"}

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in ids}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node
    return strip(json.loads(best_json))


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
@pytest.mark.parametrize("fault", ["deleted", "damaged"])
def test_resume_when_the_checkpoint_its_saved_state_names_is_deleted_or_damaged(tmp_path, fault):
    """Ray deletes a trial's older checkpoints as soon as newer ones arrive but saves its experiment state
    only every few seconds: a driver killed in between leaves a state that names a deleted checkpoint,
    and Ray refuses to restore that trial on every retry. Inject exactly that (kill the driver, delete
    the checkpoint the saved state names), or damage it (bytes flipped inside its tensors, same size:
    its checksums fail): `resume` restores from the newest checkpoint that loads and the trial ends
    with the uninterrupted run's numbers, every epoch logged once."""
    epochs = 30
    spec = tiny_spec("stale", trial=trial_with(1000, epochs), grid={"mixup.stop_epoch": [5]},
                     max_concurrent=1, share_prefix=False)
    write_spec(tmp_path, spec)
    db = tmp_path / "mlflow.db"
    driver = start(["run", "spec.yaml"], tmp_path, tmp_path / "run.log")
    try:
        wait_for(lambda: any(e >= 8 for _, e in progress(db, "stale")), timeout=180, what="epoch 8")
        kill_tree(driver)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    experiment = tmp_path / "ray_results" / "stale"
    (trial_dir,) = experiment.glob("trial_*")
    saved_state = "".join(p.read_text(errors="replace") for p in experiment.glob("experiment_state-*.json"))
    named = set(re.findall(r"checkpoint_\d+", saved_state))
    assert named, saved_state[-2000:]
    for name in named:
        if fault == "deleted":  # what Ray's num_to_keep deletion does just before an unlucky crash
            shutil.rmtree(trial_dir / name, ignore_errors=True)
        else:  # a disk or a copy that flipped bytes
            if not (trial_dir / name / "state.pt").exists():
                # Ray deleted it already (the state is older than its num_to_keep deletion): put the
                # newest checkpoint there, so that the state names one that exists, then damage it.
                newest = max(trial_dir.glob("checkpoint_*"), key=lambda d: d.name)
                shutil.rmtree(trial_dir / name, ignore_errors=True)
                shutil.copytree(newest, trial_dir / name)
            state = trial_dir / name / "state.pt"
            data = bytearray(state.read_bytes())
            middle = len(data) // 2
            data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
            state.write_bytes(bytes(data))

    res = run_cli(["resume", "stale"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert ("is gone" if fault == "deleted" else "is damaged") in res.stderr, res.stderr[-3000:]
    c = client(tmp_path)
    _, (run,) = assert_sweep_intact(c, "stale", 1, epochs)
    assert run.info.status == "FINISHED"
    assert_uninterrupted_numbers(c, run, spec, {"mixup.stop_epoch": 5}, tmp_path / "uninterrupted")


SEARCH_STATE_FILES = ("basic-variant-state-*", "search_gen_state-*", "searcher-state-*")


def saved_trials(experiment: Path) -> dict[str, str]:
    """Trial id -> status in Ray's newest saved experiment state ({} while there is none)."""
    files = sorted(experiment.glob("experiment_state-*.json"))
    try:
        state = json.loads(files[-1].read_text()) if files else {"trial_data": []}
    except ValueError:  # caught mid-write
        return {}
    return {t["trial_id"]: t["status"] for t in (json.loads(d[0]) for d in state["trial_data"])}


def copy_state_files(source: Path, target: Path, patterns: tuple[str, ...]) -> None:
    """Replace `target`'s files matching `patterns` by `source`'s."""
    for pattern in patterns:
        for f in target.glob(pattern):
            f.unlink()
        for f in source.glob(pattern):
            shutil.copy2(f, target / f.name)


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
@pytest.mark.parametrize("older", ["search_state", "trial_state"])
def test_resume_when_search_and_trial_state_were_saved_at_different_moments(tmp_path, older):
    """Ray saves the trials (experiment_state-*.json) and the searcher's state (which grid points it
    handed out, which trials it counts as running) side by side and uploads them with one background
    copy: a driver killed mid-copy, or a save racing an upload, leaves the two from different moments.
    Inject both orders (state files of a moment when only the first trial existed, put back after a
    kill while the second runs): `resume` finishes, every grid point runs exactly once, in one MLflow
    run, with the numbers of an uninterrupted run. (An older search state made Ray's grid generator
    wait forever for a trial that had already finished.)"""
    epochs = 20
    seeds = [0, 1, 2]
    spec = tiny_spec("skew", trial=trial_with(1000, epochs), grid={"seed": seeds}, max_concurrent=1,
                     share_prefix=False)
    write_spec(tmp_path, spec)
    db, experiment, snapshot = tmp_path / "mlflow.db", tmp_path / "ray_results" / "skew", tmp_path / "snapshot"
    driver = start(["run", "spec.yaml"], tmp_path, tmp_path / "run.log")
    try:
        # Both files of the search generator's state (Ray writes them one after the other: a snapshot
        # between the two would lack the searcher's, a state no save leaves behind).
        wait_for(lambda: len(saved_trials(experiment)) == 1
                 and all(any(experiment.glob(p)) for p in ("search_gen_state-*", "searcher-state-*")),
                 timeout=180, what="the first trial in Ray's saved state")
        snapshot.mkdir()
        copy_state_files(experiment, snapshot, ("experiment_state-*",) + SEARCH_STATE_FILES)
        assert len(saved_trials(snapshot)) == 1

        def second_trial_saved_midway():
            saved = saved_trials(experiment)
            runs = progress(db, "skew")
            return (len(saved) == 2 and set(saved.values()) != {"TERMINATED"}
                    and any(s == "FINISHED" for s, _ in runs) and any(s == "RUNNING" and e >= 2 for s, e in runs))
        wait_for(second_trial_saved_midway, timeout=180, what="the second trial in Ray's saved state, mid-way")
        kill_tree(driver)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    copy_state_files(snapshot, experiment, SEARCH_STATE_FILES if older == "search_state" else ("experiment_state-*",))

    res = run_cli(["resume", "skew"], cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    c = client(tmp_path)
    _, children = assert_sweep_intact(c, "skew", len(seeds), epochs)
    by_seed = {int(r.data.params["seed"]): r for r in children}
    assert sorted(by_seed) == seeds
    for seed, run in by_seed.items():
        assert run.info.status == "FINISHED"
        assert_uninterrupted_numbers(c, run, spec, {"seed": seed}, tmp_path / f"uninterrupted_{seed}")


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
def test_killed_optuna_sweep_resumes_to_exactly_n_trials(tmp_path):
    """An Optuna sweep whose driver is SIGKILLed mid-trial, with Ray's trial state from before that trial
    started (a driver killed within Ray's ~10 s between saves loses the trials it started since):
    `resume` deletes the lost trial's orphaned MLflow run, hands its place out again, and ends with
    exactly `n_trials` trials, each with one FINISHED run and every epoch once."""
    epochs, n_trials = 20, 3
    spec = tiny_spec("tpe", trial=trial_with(1000, epochs), grid={"seed": [0, 1]}, max_concurrent=1,
                     optuna={"n_trials": n_trials, "seed": 5, "space": {
                         "mixup.alpha": {"type": "float", "low": 0.2, "high": 2.0, "log": True}}})
    write_spec(tmp_path, spec)
    db, experiment, snapshot = tmp_path / "mlflow.db", tmp_path / "ray_results" / "tpe", tmp_path / "snapshot"
    driver = start(["run", "spec.yaml"], tmp_path, tmp_path / "run.log")
    try:
        wait_for(lambda: len(saved_trials(experiment)) == 1, timeout=180, what="the first trial in Ray's saved state")
        snapshot.mkdir()
        copy_state_files(experiment, snapshot, ("experiment_state-*",))
        wait_for(lambda: (lambda runs: any(s == "FINISHED" for s, _ in runs)
                          and any(s == "RUNNING" and e >= 2 for s, e in runs))(progress(db, "tpe")),
                 timeout=180, what="a finished trial and one mid-way")
        kill_tree(driver)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    copy_state_files(snapshot, experiment, ("experiment_state-*",))  # the mid-way trial: lost to Ray
    c = client(tmp_path)
    lost = {r.info.run_id for r in sweep_runs(c, "tpe")[1] if r.info.status == "RUNNING"}
    assert len(lost) == 1

    res = run_cli(["resume", "tpe"], cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "deleted 1 MLflow run(s) of trial(s) lost" in res.stderr
    _, children = assert_sweep_intact(c, "tpe", n_trials, epochs)
    assert all(r.info.status == "FINISHED" for r in children)
    assert not lost & {r.info.run_id for r in children}
    assert len({r.data.params["mixup.alpha"] for r in children}) == n_trials


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
def test_concurrent_sweeps_survive_a_killed_driver_and_resume_to_the_uninterrupted_answer(tmp_path):
    epochs = 10
    grid = [{"mixup.stop_epoch": [0, 3], "seed": [0, 1]}, DIVERGING]
    for name in ("ref", "cut"):
        write_spec(tmp_path, tiny_spec(name, trial=trial_with(1000, epochs), grid=grid, max_concurrent=1,
                                       share_prefix=False), f"{name}.yaml")
    db = tmp_path / "mlflow.db"

    def finished_and_midway():
        assert cut.poll() is None, (tmp_path / "cut.log").read_text()[-3000:]  # it gave up: say why now
        runs = progress(db, "cut")
        return sum(s == "FINISHED" for s, _ in runs) >= 1 and any(s == "RUNNING" and e >= 2 for s, e in runs)

    ref = start(["run", "ref.yaml"], tmp_path, tmp_path / "ref.log")
    cut = start(["run", "cut.yaml"], tmp_path, tmp_path / "cut.log")
    try:
        wait_for(finished_and_midway, timeout=240, what="a finished trial of 'cut' and one mid-way")
        kill_tree(cut)  # the driver of 'cut' dies; 'ref' goes on in the same store
        assert ref.wait(timeout=300) == 1, (tmp_path / "ref.log").read_text()[-3000:]  # 1: the diverged trial
    finally:
        for proc in (ref, cut):
            if proc.poll() is None:
                kill_tree(proc)

    c = client(tmp_path)
    _, before = sweep_runs(c, "cut")
    finished_before = {r.info.run_id: (r.info.end_time, steps(c, r.info.run_id, "train_loss"))
                       for r in before if r.info.status in ("FINISHED", "FAILED")}
    assert finished_before and any(r.info.status == "RUNNING" for r in before)  # really cut mid-sweep

    res = run_cli(["resume", "cut"], cwd=tmp_path)
    assert res.returncode == 1, res.stderr[-3000:]  # 1: the diverged trial

    ref_parent, ref_children = assert_sweep_intact(c, "ref", 5, epochs, n_failed=1)
    cut_parent, cut_children = assert_sweep_intact(c, "cut", 5, epochs, n_failed=1)
    for run_id, (end_time, hist) in finished_before.items():  # finished trials not rerun
        assert c.get_run(run_id).info.end_time == end_time
        assert steps(c, run_id, "train_loss") == hist
    for run in cut_children:  # interrupted trials continued from a checkpoint, not from scratch
        if run.info.status == "FINISHED":
            assert ray_epochs(tmp_path, "cut", run.data.tags["mixup_sweep.trial_id"]).count(1) == 1

    # Same configuration, same numbers: CPU training is bit-exact, with or without the interruption.
    def by_config(children):
        return {(r.data.params["mixup.stop_epoch"], r.data.params["seed"], r.data.params["train.lr"]): r
                for r in children}
    ref_runs, cut_runs = by_config(ref_children), by_config(cut_children)
    assert ref_runs.keys() == cut_runs.keys()
    for point, run in ref_runs.items():
        if run.info.status == "FINISHED":
            for key in ("train_loss", "val_acc", "test_acc"):
                assert history(c, cut_runs[point].info.run_id, key) == history(c, run.info.run_id, key), (point, key)

    # 5: the diverged trial is FAILED with its reason in both sweeps, and `best` leaves it out, saying so.
    for runs in (ref_runs, cut_runs):
        diverged = runs[("null", "0", "1e+36")]
        assert diverged.info.status == "FAILED"
        assert diverged.data.tags["mixup_sweep.error"].startswith("diverged at epoch 1")
    best_ref = run_cli(["best", "ref", "--json"], cwd=tmp_path)
    best_cut = run_cli(["best", "cut", "--json"], cwd=tmp_path)
    assert best_ref.returncode == 0 and best_cut.returncode == 0, best_ref.stderr + best_cut.stderr
    assert comparable(best_cut.stdout) == comparable(best_ref.stdout)
    doc = json.loads(best_cut.stdout)
    assert doc["n_used"] == 4 and len(doc["excluded"]) == 1
    assert doc["excluded"][0]["reason"].startswith("FAILED: diverged at epoch 1")
    text = run_cli(["best", "cut"], cwd=tmp_path)
    assert "4 of 5 used, 1 excluded" in text.stdout and "diverged at epoch 1" in text.stdout


# ---------------------------------------------------------------------------------------------
# 4, 7. the tracking server goes away mid-sweep (two sweeps logging to it) and comes back


@pytest.mark.slow  # ~1 min on 2 cores: a server start, two sweeps, a restart
def test_tracking_server_outage_mid_sweep_loses_no_metric(tmp_path):
    """Decision (docs/failure_recovery.md): MLflow's HTTP client retries every request with backoff
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7, BACKOFF_FACTOR=2: about 4 minutes), connection refused
    included; trials wait through an outage and log once the server is back. Here: stopped after
    epoch 2 of the first trials, down for ~8 s, restarted on the same port and backend."""
    # Trials of ~20 s on 2 cores (each sweep ~40 s): the two drivers start Ray seconds apart, and the first
    # sweep must still run when the second reaches epoch 2 (40-epoch trials left a window of about 1 s).
    epochs = 150
    server = MlflowServer(tmp_path / "server").start()
    backend = server.root / "mlflow.db"
    env = {"MLFLOW_TRACKING_URI": server.uri}
    drivers = []
    try:
        for name in ("left", "right"):
            write_spec(tmp_path, tiny_spec(name, trial=trial_with(2000, epochs), grid={"seed": [0, 1]},
                                           max_concurrent=1, share_prefix=False), f"{name}.yaml")
            drivers.append(start(["run", f"{name}.yaml"], tmp_path, tmp_path / f"{name}.log", env))
        wait_for(lambda: all(any(s == "RUNNING" and e >= 2 for s, e in progress(backend, n)) for n in ("left", "right")),
                 timeout=240, what="epoch 2 of a running trial in both sweeps")
        server.stop()
        logged_at_stop = {n: progress(backend, n) for n in ("left", "right")}
        time.sleep(8)
        assert all(d.poll() is None for d in drivers)  # the sweeps wait; nothing failed
        server.start()
        codes = [d.wait(timeout=400) for d in drivers]
    finally:
        for d in drivers:
            if d.poll() is None:
                kill_tree(d)
        server_uri = server.uri
    try:
        for name, code in zip(("left", "right"), codes):
            assert code == 0, (tmp_path / f"{name}.log").read_text()[-3000:]
            assert any(s == "RUNNING" and e < epochs for s, e in logged_at_stop[name])  # the gap was mid-trial
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=server_uri)
        for name in ("left", "right"):
            _, children = assert_sweep_intact(c, name, 2, epochs)
            assert all(r.info.status == "FINISHED" for r in children)
            for run in children:
                assert {a.path for a in c.list_artifacts(run.info.run_id)} >= {"metrics.jsonl", "summary.json"}
    finally:
        server.stop()


def session_processes(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


# ---------------------------------------------------------------------------------------------
# 3. a worker node of the local multi-node cluster lost mid-sweep


@pytest.mark.cluster
@pytest.mark.slow
def test_lost_worker_node_trials_finish_on_the_remaining_node(tmp_path):
    import tempfile

    from test_local_cluster import clean_environ, local_cluster, read_env_file

    state_dir = Path(tempfile.mkdtemp(prefix="mxf-", dir="/tmp"))
    up = local_cluster("up", "--state-dir", str(state_dir), "--workers", "1", "--num-cpus", "1")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state = json.loads((state_dir / "cluster.json").read_text())
        env = {**clean_environ(), **read_env_file(state_dir / "env")}
        write_spec(tmp_path, tiny_spec("node_lost", trial=trial_with(3000, 30), grid={"seed": [0, 1]},
                                       max_concurrent=2, max_failures=2, share_prefix=False))
        storage = tmp_path / "ray_results"
        driver = subprocess.Popen(cli_command() + ["run", "spec.yaml", "--storage-path", str(storage)],
                                  cwd=tmp_path, env=env, stdout=(tmp_path / "run.log").open("w"),
                                  stderr=subprocess.STDOUT)
        from mlflow import MlflowClient

        c = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        worker_node = state["node_ids"]["worker_1"]

        def on_worker_mid_way():
            exp = c.get_experiment_by_name("node_lost")
            if exp is None:
                return False
            for run in c.search_runs([exp.experiment_id], "tags.`mixup_sweep.role` = 'trial'"):
                if run.data.tags.get("mixup_sweep.node_id") == worker_node and run.data.metrics.get("train_loss") \
                        is not None and len(c.get_metric_history(run.info.run_id, "train_loss")) >= 2:
                    return run.info.run_id
            return False
        try:
            lost_run = wait_for(on_worker_mid_way, timeout=240, what="a trial mid-way on the worker node", interval=1)
            node = session_processes(state["components"]["ray-worker_1"]["sid"])
            assert node, "no process in the worker node's session"
            kill(node)  # the node is gone: its raylet, object store, agents and trial worker
            rc = driver.wait(timeout=400)
        finally:
            if driver.poll() is None:
                kill_tree(driver)
        assert rc == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert not session_processes(state["components"]["ray-worker_1"]["sid"])
        _, children = assert_sweep_intact(c, "node_lost", 2, 30)
        lost = c.get_run(lost_run)
        assert lost.info.status == "FINISHED"
        assert lost.data.tags["mixup_sweep.node_id"] == state["node_ids"]["head"]  # rescheduled on the head
    finally:
        local_cluster("down", "--state-dir", str(state_dir), timeout=120)
