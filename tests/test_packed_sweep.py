"""Packed sweeps (`resources.pack: N`): N trials trained in one process, one Ray trial, with real Ray and
MLflow. A user must not be able to tell from MLflow that trials were packed, except by the
`mixup_sweep.pack_member` tag: one FINISHED run per trial, every epoch once, the numbers of the same
trial run alone (CPU: bit-exact), `best` as usual; a pack restarted from its checkpoint (worker killed)
or resumed (driver killed) ends with the same numbers.
"""

from __future__ import annotations

import json

import pytest
from sweep_support import client, ray_epochs, run_and_kill_the_trial_worker, run_cli, tiny_spec, wait_for, write_spec
from test_fault_tolerance import (
    assert_sweep_intact,
    assert_uninterrupted_numbers,
    kill_tree,
    progress,
    start,
    trial_with,
)

from sweeps.plan.packs import pack_plan
from sweeps.preflight import largest_fitting_pack
from sweeps.spec import load_sweep, validate_sweep

GRID = {"seed": [0, 1], "mixup.stop_epoch": [0, 2]}


def packed_spec(name: str, epochs: int, n_train: int = 200, **keys):
    return tiny_spec(name, trial=trial_with(n_train, epochs), grid=GRID, share_prefix=False,
                     resources={"cpu": 1, "gpu": 0, "pack": 2}, max_concurrent=2, **keys)


def params_of(run) -> dict:
    return {"seed": int(run.data.params["seed"]),
            "mixup.stop_epoch": int(run.data.params["mixup.stop_epoch"])}


def test_a_packed_sweep_gives_every_trial_the_run_it_would_have_alone(tmp_path):
    spec = packed_spec("packed", epochs=4)
    write_spec(tmp_path, spec)
    res = run_cli(["run", "spec.yaml"], cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "4 trial(s) finished, 0 failed" in res.stderr

    c = client(tmp_path)
    _, children = assert_sweep_intact(c, "packed", 4, 4)
    assert all(r.info.status == "FINISHED" for r in children)
    ray_trials = {r.data.tags["mixup_sweep.ray_trial_id"] for r in children}
    assert len(ray_trials) == 2  # two packs of two
    assert sorted(p.name for p in (tmp_path / "ray_results" / "packed").glob("trial_*")) == \
        sorted(f"trial_{t}" for t in ray_trials)
    for run in children:
        tags = run.data.tags
        assert tags["mixup_sweep.trial_id"].startswith(tags["mixup_sweep.ray_trial_id"] + "-")
        assert tags["mixup_sweep.pack_member"] in ("1/2", "2/2")
        artifacts = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint"} <= artifacts
        assert_uninterrupted_numbers(c, run, spec, params_of(run), tmp_path / f"alone_{run.info.run_id}")
    assert {json.dumps(params_of(r), sort_keys=True) for r in children} == \
        {json.dumps({"seed": s, "mixup.stop_epoch": e}, sort_keys=True) for s in (0, 1) for e in (0, 2)}

    best = run_cli(["best", "packed", "--json"], cwd=tmp_path)
    assert best.returncode == 0, best.stderr[-3000:]
    doc = json.loads(best.stdout)
    assert doc["n_trials"] == 4 and doc["n_used"] == 4 and not doc["excluded"]
    assert [r["n"] for r in doc["table"]] == [2, 2]


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
def test_a_packed_trial_worker_killed_restarts_every_member_from_the_pack_checkpoint(tmp_path):
    spec = packed_spec("pack_killed", epochs=12, n_train=2000, max_failures=1)
    spec["grid"] = {"mixup.stop_epoch": [0, 5]}  # one pack of two
    spec["max_concurrent"] = 2
    write_spec(tmp_path, spec)
    db = tmp_path / "mlflow.db"
    run_and_kill_the_trial_worker(
        tmp_path, lambda: (lambda runs: len(runs) == 2 and all(e >= 3 for _, e in runs))(progress(db, "pack_killed")),
        "both members at epoch 3")

    c = client(tmp_path)
    _, children = assert_sweep_intact(c, "pack_killed", 2, 12)
    (ray_trial,) = {r.data.tags["mixup_sweep.ray_trial_id"] for r in children}
    epochs = ray_epochs(tmp_path, "pack_killed", ray_trial)
    assert epochs.count(1) == 1 and epochs.count(12) == 1  # resumed from the pack checkpoint, not from scratch
    for run in children:
        stop = int(run.data.params["mixup.stop_epoch"])
        assert_uninterrupted_numbers(c, run, spec, {"mixup.stop_epoch": stop}, tmp_path / f"alone_{stop}")


@pytest.mark.e2e  # a sweep killed and resumed: minutes on 2 cores (CI runs e2e)
def test_a_killed_packed_sweep_resumes_to_the_uninterrupted_numbers(tmp_path):
    spec = packed_spec("pack_resume", epochs=12, n_train=2000)
    write_spec(tmp_path, spec)
    db = tmp_path / "mlflow.db"
    driver = start(["run", "spec.yaml"], tmp_path, tmp_path / "run.log")
    try:
        wait_for(lambda: (lambda runs: sum(s == "FINISHED" for s, _ in runs) == 2
                          and any(s == "RUNNING" and e >= 2 for s, e in runs))(progress(db, "pack_resume")),
                 timeout=240, what="one pack finished and the other mid-way")
        kill_tree(driver)
    finally:
        if driver.poll() is None:
            kill_tree(driver)
    res = run_cli(["resume", "pack_resume"], cwd=tmp_path, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    c = client(tmp_path)
    _, children = assert_sweep_intact(c, "pack_resume", 4, 12)
    assert all(r.info.status == "FINISHED" for r in children)
    for run in children:
        assert_uninterrupted_numbers(c, run, spec, params_of(run), tmp_path / f"alone_{run.info.run_id}")


def test_packs_are_even_and_only_hold_trials_that_can_train_in_lockstep():
    spec = tiny_spec("plan", grid=[{"seed": [0, 1, 2, 3, 4], "train.batch_size": [50]},
                                   {"seed": [0, 1], "train.batch_size": [25]}],
                     share_prefix=False, resources={"cpu": 1, "gpu": 0, "pack": 3}, max_concurrent=3)
    packs = pack_plan(validate_sweep(spec, "test"))
    sizes = [[(m.point["seed"], m.point["train.batch_size"]) for m in p.members] for p in packs]
    # 5 trials at batch 50 in packs of up to 3: 3 + 2 (grid order); the batch-25 trials apart.
    assert sizes == [[(0, 50), (1, 50), (2, 50)], [(3, 50), (4, 50)], [(0, 25), (1, 25)]]
    assert all(p.ray_config()["pack"] == [dict(m.point) for m in p.members] for p in packs)


def test_a_pack_too_big_for_this_machine_is_refused_before_anything_starts(tmp_path):
    spec = packed_spec("too_big", epochs=2)
    spec["resources"] = {"cpu": 64, "gpu": 0, "pack": 2}
    write_spec(tmp_path, spec)
    res = run_cli(["run", "spec.yaml"], cwd=tmp_path, timeout=120)
    assert res.returncode == 2, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    assert "a pack of 2 trials needs 128 CPU + 0 GPU" in line and "lower resources.cpu/gpu/pack" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


def test_dry_run_shows_each_trials_pack(tmp_path):
    write_spec(tmp_path, packed_spec("dry", epochs=3))
    res = run_cli(["run", "spec.yaml", "--dry-run"], cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "pack" in res.stdout.splitlines()[3]  # the table's header
    assert "packed: 2 pack(s) of up to 2 trials, each one process and one Ray trial with 2 CPU + 0 GPU; " \
           "1 pack(s) at a time" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]


# `resources.pack: auto` (the default) on the paper's early-stop spec (graphed ResNet-18 trials at
# gpu 0.5, 18 trials, max_concurrent 8): packs only when the trials share a GPU and their steps are CUDA
# graphs, and never where packing would be refused.
@pytest.mark.parametrize("sets, packed", [
    (["share_prefix=false"], 2),
    (["share_prefix=false", "resources.gpu=0.25"], 4),
    (["share_prefix=false", "resources.gpu=0.3"], 3),  # Ray fits three 0.3-GPU trials on a GPU
    (["share_prefix=false", "resources.gpu=0.25", "max_concurrent=3"], 3),
    (["share_prefix=false", "train.cuda_graphs=on", "model.name=preact_resnet18"], 2),
    ([], 1),  # prefix sharing while stop_epoch is swept: refused with pack > 1
    (["share_prefix=false", "resources.pack=1"], 1),  # explicit wins
    (["share_prefix=false", "resources.gpu=1"], 1),  # a whole GPU each: nothing to share
    (["share_prefix=false", "max_concurrent=1"], 1),
    (["share_prefix=false", "train.cuda_graphs=off"], 1),  # eager: launch-bound, processes fill the GPU
    (["share_prefix=false", "train.device=cpu"], 1),
    (["share_prefix=false", "scheduler={type: asha, grace_period: 160}"], 1),
    (["share_prefix=false", "seed=0", "grid.mixup.stop_epoch=[50]"], 1),  # one trial
])
def test_pack_auto_packs_graphed_trials_that_share_a_gpu_and_nothing_else(sets, packed):
    sweep = load_sweep("paper_early_stop_cifar10", sets)
    assert sweep.spec.resources.pack == packed
    notes = [n for n in sweep.notes if "resources.pack: auto" in n]
    assert len(notes) == (packed > 1)
    if packed > 1:
        assert f"auto trains {packed} trials per process" in notes[0] and "resources.pack: 1" in notes[0]
        assert len({m.point["seed"] for p in pack_plan(sweep) for m in p.members}) == 3
    # The sweep stores the resolved number (spec.yaml on its MLflow run), so resume plans the same packs.
    stored = sweep.to_dict()
    assert stored["resources"]["pack"] == packed
    assert validate_sweep(stored, "spec.yaml").spec.resources.pack == packed


def test_dry_run_says_when_pack_auto_packs(tmp_path):
    res = run_cli(["run", "paper_early_stop_cifar10", "--set", "share_prefix=false", "--set", f"data.root={tmp_path}",
                   "--dry-run"], cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "note: resources.pack: auto trains 2 trials per process" in res.stderr
    assert "packed: 9 pack(s) of up to 2 trials, each one process and one Ray trial with 4 CPU + 1 GPU; " \
           "4 pack(s) at a time" in res.stdout
    assert list(tmp_path.iterdir()) == []


def test_pack_auto_is_lowered_to_what_one_machine_fits():
    # A 2-core laptop with one GPU, trials at cpu 1, gpu 0.25: auto's pack of 4 would wait for ever on
    # the embedded Ray; 2 fit. At cpu 2 none fits: lone trials, which the usual check then judges.
    assert largest_fitting_pack(1, 0.25, 4, have_cpu=2, have_gpu=1) == 2
    assert largest_fitting_pack(2, 0.25, 4, have_cpu=2, have_gpu=1) == 1
    assert largest_fitting_pack(1, 0.25, 4, have_cpu=16, have_gpu=1) == 4
    assert largest_fitting_pack(1, 0.5, 2, have_cpu=16, have_gpu=0) == 1
