"""Sweep specs: loading, `--set` semantics, grids (one mapping or a list), the bundled specs' dry runs."""

from __future__ import annotations

import math

import pytest
import yaml
from sweep_support import TINY_TRIAL, tiny_spec

from mixup_core.config import ConfigError, TrialConfig
from sweeps.cli import main
from sweeps.spec import bundled_spec_names, load_sweep, validate_sweep


def sweep_of(overrides=(), **keys):
    return validate_sweep(tiny_spec("t", **keys), "spec.yaml", list(overrides))


def test_grid_points_are_the_cartesian_product_first_key_slowest():
    sweep = sweep_of(grid={"mixup.stop_epoch": [0, 2, None], "seed": [0, 1]})
    assert sweep.grid_points() == [
        {"mixup.stop_epoch": s, "seed": seed} for s in (0, 2, None) for seed in (0, 1)
    ]
    assert sweep.n_trials == 6 and sweep.varying_keys == ["mixup.stop_epoch", "seed"]
    cfg = sweep.trial_config({"mixup.stop_epoch": 2, "seed": 1})
    assert isinstance(cfg, TrialConfig) and cfg.mixup.stop_epoch == 2 and cfg.seed == 1
    assert cfg.data.n_train == 200  # the rest from the spec's trial


def test_a_list_of_grids_is_the_union_of_products_without_duplicates_and_with_base_values():
    sweep = sweep_of(grid=[
        {"mixup.stop_epoch": [0], "seed": [0, 1]},
        {"mixup.label_policy": ["same", "independent"], "seed": [0, 1]},
        {"mixup.stop_epoch": [0], "seed": [1]},  # already in the first grid
    ])
    points = sweep.grid_points()
    assert len(points) == 6
    assert points[0] == {"mixup.stop_epoch": 0, "seed": 0, "mixup.label_policy": "same"}
    assert points[2] == {"mixup.stop_epoch": None, "seed": 0, "mixup.label_policy": "same"}  # base values
    assert points[5] == {"mixup.stop_epoch": None, "seed": 1, "mixup.label_policy": "independent"}


def test_set_on_a_trial_key_sets_it_and_pins_a_swept_key():
    sweep = sweep_of(["mixup.alpha=0.4", "trial.train.epochs=5", "seed=3"],
                     grid={"mixup.stop_epoch": [0, 2], "seed": [0, 1, 2]})
    assert sweep.base_trial["mixup"]["alpha"] == 0.4 and sweep.base_trial["train"]["epochs"] == 5
    assert sweep.spec.grid == {"mixup.stop_epoch": [0, 2]}  # seed pinned: no longer swept
    assert sweep.base_trial["seed"] == 3 and sweep.n_trials == 2
    assert sweep.notes == ["--set seed pins it: removed from grid"]


def test_set_on_spec_keys_grid_entries_and_optuna_dimensions():
    sweep = sweep_of(["max_concurrent=4", "resources.gpu=0.5", "name=other", "grid.seed=[5, 6]",
                      "optuna={n_trials: 3, space: {}}", "optuna.space.mixup.alpha={type: float, low: 0.1, high: 1}"],
                     grid={"mixup.stop_epoch": [0]})
    assert sweep.spec.max_concurrent == 4 and sweep.spec.resources.gpu == 0.5 and sweep.name == "other"
    assert sweep.spec.grid == {"mixup.stop_epoch": [0], "seed": [5, 6]}
    assert sweep.spec.optuna.space["mixup.alpha"].high == 1 and sweep.n_trials == 3
    on = sweep_of(["scheduler.type=asha", "scheduler.grace_period=2"], grid={"mixup.stop_epoch": [0, 2]})
    assert on.spec.scheduler.grace_period == 2 and on.spec.scheduler.max_t is None


def test_resolved_spec_round_trips_for_resume():
    sweep = sweep_of(["seed=2"], grid=[{"mixup.stop_epoch": [0]}, {"mixup.label_policy": ["power"]}])
    again = validate_sweep(yaml.safe_load(sweep.to_yaml()), "stored")
    assert again.to_dict() == sweep.to_dict()
    assert again.grid_points() == sweep.grid_points()
    assert again.base_trial == TrialConfig.model_validate(sweep.base_trial).to_dict()  # defaults filled


def test_asha_grace_period_at_least_the_largest_stop_epoch_is_accepted():
    sweep = sweep_of(grid={"mixup.stop_epoch": [0, 2, None]},
                     scheduler={"type": "asha", "grace_period": 2, "reduction_factor": 2})
    assert sweep.spec.scheduler.grace_period == 2
    from sweeps.search import make_scheduler

    asha = make_scheduler(sweep)
    assert asha._time_attr == "epoch" and asha._max_t == 3


def test_metric_availability_depends_on_the_trials():
    assert sweep_of(["metric=test_acc_rare"]).spec.metric == "test_acc_rare"  # feature_noise has groups
    assert sweep_of(["data.val_size=0", "metric=test_acc"]).spec.metric == "test_acc"
    assert sweep_of(["metric=test_loss", "mode=min"]).spec.mode == "min"


@pytest.mark.parametrize("name", bundled_spec_names())
def test_bundled_specs_validate_and_dry_run(name, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", name, "--dry-run"]) == 0
    out = capsys.readouterr().out
    sweep = load_sweep(name)
    assert f"total: {sweep.n_trials} trials" in out
    assert list(tmp_path.iterdir()) == []  # a dry run creates nothing
    assert sweep.name == name


def test_bundled_specs_describe_the_studies():
    quick = load_sweep("quickstart")
    assert quick.n_trials == 15 and quick.spec.max_concurrent == 2 and quick.spec.resources.gpu == 0
    stops = {p["mixup.stop_epoch"] for p in quick.grid_points()}
    assert {0, None} < stops and len(stops) >= 4  # standard, Mixup, several early stops
    assert {p["seed"] for p in quick.grid_points()} == {0, 1, 2}
    for name in ("paper_early_stop_cifar10", "paper_early_stop_cifar100"):
        sweep = load_sweep(name)
        assert sweep.spec.resources.gpu == 0.5 and sweep.max_epochs() == 200
        assert {p["mixup.stop_epoch"] for p in sweep.grid_points()} == {0, 25, 50, 100, 150, None}
    decoupled = load_sweep("paper_decoupled_cifar10")
    policies = {(p["mixup.stop_epoch"], p["mixup.label_policy"]) for p in decoupled.grid_points()}
    assert policies == {(0, "same")} | {(None, p) for p in ("same", "independent", "threshold", "power", "constant")}
    assert decoupled.n_trials == 18 and decoupled.spec.resources.gpu == 1
    assert decoupled.base_trial["model"]["name"] == "resnet18"


def test_dry_run_lists_varying_keys_and_cost(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec("t", grid={"mixup.stop_epoch": [0, None], "train.epochs": [2, 4]})))
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mixup.stop_epoch" in out and "train.epochs" in out
    assert "total: 4 trials, 12 epochs" in out


def test_optuna_dry_run_lists_the_space(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec("t", grid={"seed": [0, 1]}, optuna={
        "n_trials": 5, "space": {"mixup.alpha": {"type": "float", "low": 0.1, "high": 2, "log": True}}})))
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "seed: one of 0, 1 (grid key, categorical)" in out
    assert "mixup.alpha: float in [0.1, 2] (log)" in out and "total: 5 trials, at most 15 epochs" in out


def test_loading_a_missing_spec_names_the_bundled_ones():
    with pytest.raises(ConfigError, match="bundled: .*quickstart"):
        load_sweep("no_such_spec")


def test_asha_never_stops_a_trial_at_its_last_epoch():
    """Plain ASHA stops a trial that falls below the cutoff at the max_t rung, i.e. at its last epoch:
    killed there, the trial never records its summary and final checkpoint. Ours lets it end."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import ASHAScheduler

    from sweeps.search import LastEpochKeepingASHA

    def decisions(cls):
        asha = cls(time_attr="epoch", metric="val_acc", mode="max", max_t=4, grace_period=1, reduction_factor=2)
        trials = [Trial("t", stub=True, trial_id=f"t{i}") for i in range(4)]
        for t in trials:
            asha.on_trial_add(None, t)
        out = []
        for epoch in (1, 2, 3, 4):
            for i, t in enumerate(trials):  # t3 leads until its last epoch, then drops below the rest
                value = 0.9 if i < 3 else (0.95 if epoch < 4 else 0.0)
                out.append(asha.on_trial_result(None, t, {"epoch": epoch, "val_acc": value, "planned_epochs": 4}))
        return out

    assert decisions(ASHAScheduler)[-1] == "STOP"
    assert set(decisions(LastEpochKeepingASHA)) == {"CONTINUE"}
    sweep = sweep_of(grid={"mixup.stop_epoch": [0, 1]}, scheduler={"type": "asha", "grace_period": 1})
    from sweeps.search import make_scheduler

    assert isinstance(make_scheduler(sweep), LastEpochKeepingASHA)


@pytest.mark.parametrize("grace, factor, max_t", [(1, 2, 4), (1, 4, 200), (3, 3, 200), (5, 2.5, 60), (2, 4, 2)])
def test_rung_epochs_are_the_epochs_ray_asha_compares_at(grace, factor, max_t):
    """Ray must see a trial's result at every rung even when reports are throttled: our rung epochs
    are Ray's milestones (ASHA records the first result at or past each)."""
    from sweeps.search import asha_rung_epochs, make_scheduler

    trial = {**TINY_TRIAL, "train": {**TINY_TRIAL["train"], "epochs": 200}}
    sweep = sweep_of(trial=trial, grid={"mixup.stop_epoch": [0, grace]},
                     scheduler={"type": "asha", "grace_period": grace, "reduction_factor": factor, "max_t": max_t})
    (bracket,) = make_scheduler(sweep)._brackets
    assert asha_rung_epochs(sweep) == {math.ceil(milestone) for milestone, _ in bracket._rungs}
    assert asha_rung_epochs(sweep_of()) == frozenset()  # no scheduler: no rungs


def test_report_policy_throttles_ray_but_never_skips_a_required_epoch():
    from sweeps.trial.reporters import ReportPolicy

    policy = ReportPolicy(interval_s=1.0, required_epochs=frozenset({4, 10}))
    assert policy.due(1, has_checkpoint=False, seconds_since_last=float("inf"))  # the first result
    assert not policy.due(2, has_checkpoint=False, seconds_since_last=0.3)
    assert policy.due(3, has_checkpoint=False, seconds_since_last=1.0)
    assert policy.due(4, has_checkpoint=False, seconds_since_last=0.0)  # a rung / the last epoch
    assert policy.due(5, has_checkpoint=True, seconds_since_last=0.0)  # a checkpoint
    every_epoch = ReportPolicy(interval_s=0.0)
    assert all(every_epoch.due(e, False, 0.0) for e in range(1, 20))


def test_quickstart_trial_is_the_bundled_feature_noise_config():
    """The quickstart runs the tuned feature-noise regime: keep it in step with the bundled config."""
    from mixup_core.config import load_trial_config

    assert load_sweep("quickstart").base_trial == load_trial_config("feature_noise").to_dict()


def test_dry_run_says_what_augmentation_the_trials_apply():
    from sweeps.plan.dry_run import describe
    from sweeps.spec import load_sweep

    def line(*overrides):
        return [ln for ln in describe(load_sweep("paper_early_stop_cifar10", list(overrides))).splitlines()
                if "augmentation" in ln]

    assert line() == ["  augmentation (data.augment: true): random crop padded by 4 px + horizontal flip"]
    assert line("data.augment=false") == ["  augmentation (data.augment: false): none"]
    assert line("data.augment={crop_pad: 2, flip: false}") == [
        "  augmentation (data.augment: {crop_pad: 2, flip: false}): random crop padded by 2 px"]
    assert line("data.name=npz") == ["  augmentation (data.augment: true): random crop padded by 1/8 of the image side + flip"]
    assert line("data.name=npz", "data.augment=auto") == ["  augmentation (data.augment: auto): none"]
    assert not [ln for ln in describe(load_sweep("quickstart")).splitlines() if "augmentation" in ln]
