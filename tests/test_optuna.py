"""The Optuna path: Ray Tune's `OptunaSearch` against the installed Optuna (5.x changed TPE's defaults),
seeded and reproducible, and a real `mixup-sweep run` that respects n_trials."""

from __future__ import annotations

import json
import math
import warnings

import optuna
import pytest
from sweep_support import client, run_cli, steps, sweep_runs, tiny_spec, write_spec

from sweeps.search import make_searcher, optuna_space
from sweeps.spec import validate_sweep


def optuna_sweep(seed: int = 7, n_trials: int = 14):
    return validate_sweep(tiny_spec(
        "opt",
        grid={"seed": [0, 1]},
        optuna={"n_trials": n_trials, "seed": seed, "space": {
            "mixup.alpha": {"type": "float", "low": 0.1, "high": 4.0, "log": True},
            "mixup.stop_epoch": {"type": "int", "low": 0, "high": 3},
            "mixup.label_policy": {"type": "categorical", "choices": ["same", "independent"]},
        }},
    ), "test")


def history_of(c, run_id: str, key: str) -> list[float]:
    return [m.value for m in sorted(c.get_metric_history(run_id, key), key=lambda m: m.step)]


def objective(cfg: dict) -> float:
    return -(math.log(cfg["mixup.alpha"]) - 0.3) ** 2 - 0.1 * cfg.get("mixup.stop_epoch", 0) + 0.05 * cfg["seed"]


def drive(searcher, n: int, concurrent: int = 2) -> list[dict]:
    """Ask/tell through Ray's Searcher API the way Tune does with max_concurrent trials in flight."""
    suggestions: list[dict] = []
    pending: list[tuple[str, dict]] = []
    for i in range(n):
        trial_id = f"t{i}"
        cfg = searcher.suggest(trial_id)
        suggestions.append(cfg)
        pending.append((trial_id, cfg))
        if len(pending) == concurrent or i == n - 1:
            for tid, c in pending:
                searcher.on_trial_result(tid, {"val_acc": objective(c), "training_iteration": 1})
                searcher.on_trial_complete(tid, {"val_acc": objective(c), "training_iteration": 1})
            pending = []
    return suggestions


def test_ray_optuna_search_runs_optuna5_tpe_seeded_and_reproducibly():
    assert int(optuna.__version__.split(".")[0]) >= 5
    sweep = optuna_sweep()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # Optuna 5 deprecates TPE arguments: Ray passes none
        searcher = make_searcher(sweep)
        first = drive(searcher, 14)  # past TPE's 10 random start-up trials
    study = searcher._ot_study
    assert isinstance(study.sampler, optuna.samplers.TPESampler)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 14
    for cfg in first:
        assert 0.1 <= cfg["mixup.alpha"] <= 4.0 and cfg["mixup.stop_epoch"] in range(4)
        assert cfg["mixup.label_policy"] in ("same", "independent") and cfg["seed"] in (0, 1)  # grid key

    assert drive(make_searcher(sweep), 14) == first  # same seed: the same 14 trials
    assert drive(make_searcher(optuna_sweep(seed=8)), 14) != first


def test_grid_keys_become_categorical_dimensions():
    sweep = optuna_sweep()
    space = optuna_space(sweep)
    assert space["seed"] == optuna.distributions.CategoricalDistribution([0, 1])
    assert space["mixup.alpha"] == optuna.distributions.FloatDistribution(0.1, 4.0, log=True)


def test_optuna_refuses_nan_so_diverged_trials_report_the_worst_value():
    # Why the trainable reports -inf (mode max) for a diverged trial: Optuna 5 refuses NaN, and Ray
    # only logs that, leaving the Optuna trial RUNNING for ever (a pending "lie" under constant_liar).
    searcher = make_searcher(optuna_sweep(n_trials=3))
    searcher.suggest("nan")
    searcher.on_trial_complete("nan", {"val_acc": float("nan"), "epoch": 0})
    assert searcher._ot_study.trials[0].state == optuna.trial.TrialState.RUNNING
    searcher.suggest("diverged")
    searcher.on_trial_complete("diverged", {"val_acc": float("-inf"), "epoch": 0})
    assert searcher._ot_study.trials[1].state == optuna.trial.TrialState.COMPLETE
    assert searcher._ot_study.trials[1].value == float("-inf")


def test_optuna_sweep_with_asha_runs_n_trials_with_seeded_suggestions(tmp_path):
    spec = tiny_spec(
        "optuna_e2e",
        grid={"seed": [0, 1]},
        optuna={"n_trials": 3, "seed": 11, "space": {
            "mixup.alpha": {"type": "float", "low": 0.2, "high": 2.0, "log": True}}},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    spec["trial"]["train"].update(epochs=4, checkpoint_interval_s=10)  # only the final epoch checkpoints
    spec["trial"]["mixup"]["stop_epoch"] = 1
    write_spec(tmp_path, spec)
    dry = run_cli(["run", "spec.yaml", "--dry-run"], cwd=tmp_path)
    assert dry.returncode == 0 and "3 trials" in dry.stdout
    res = run_cli(["run", "spec.yaml"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]

    c = client(tmp_path)
    parents, children = sweep_runs(c, "optuna_e2e")
    assert len(parents) == 1 and parents[0].data.params["optuna.n_trials"] == "3"
    assert len(children) == 3 and all(r.info.status == "FINISHED" for r in children)
    for run in children:  # ASHA may stop a trial early, never at its last epoch (it must end on its own)
        logged = steps(c, run.info.run_id, "train_loss")
        epochs = len(logged)
        if "mixup_sweep.stopped_early" in run.data.tags:
            # Stopped at a rung (epoch 1 or 2): MLflow has every epoch up to it, though no checkpoint
            # flushed them: the trial logs its history at each rung before Ray sees that result.
            assert logged == list(range(1, epochs + 1)) and epochs in (1, 2), logged
            # Its summary (for sorting runs in the MLflow UI) covers the epochs it trained.
            val = history_of(c, run.info.run_id, "val_acc")
            assert run.data.metrics["epochs"] == epochs
            assert run.data.metrics["best_val_acc"] == max(val)
            assert run.data.metrics["best_epoch"] == 1 + val.index(max(val))
            assert run.data.metrics["final_test_acc"] == history_of(c, run.info.run_id, "test_acc")[-1]
        else:
            assert epochs == 4 and "final_test_acc" in run.data.metrics
    alphas = sorted(json.loads(r.data.params["mixup.alpha"]) for r in children)
    assert all(0.2 <= a <= 2.0 for a in alphas) and len(set(alphas)) == 3
    assert {r.data.params["seed"] for r in children} <= {"0", "1"}
    # The first suggestions of a seeded TPE are its seeded random start-up draws: the same here.
    expected = drive(make_searcher(validate_sweep(spec, "test")), 3, concurrent=2)
    assert alphas == pytest.approx(sorted(cfg["mixup.alpha"] for cfg in expected), rel=1e-12)
