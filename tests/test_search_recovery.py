"""`resume` with Ray's search state and trial state saved at different moments (sweeps/ray_compat/search_state.py):
the searcher's record is rebuilt from the trials Ray restored. Real searchers, driven through Ray's
Searcher API the way Tune drives them; the end-to-end case (a real killed driver and Ray's own restore)
is in test_fault_tolerance.py."""

from __future__ import annotations

from sweep_support import tiny_spec

from sweeps.keys import SLOT_KEY
from sweeps.plan.sharing import plan_trials
from sweeps.grid_searcher import GridSearcher
from sweeps.search import make_searcher
from sweeps.ray_compat.experiment_state import RestoredTrial
from sweeps.ray_compat.search_state import ReconcilingConcurrencyLimiter
from sweeps.spec import validate_sweep
from sweeps.keys import GRID_POINT


def limited_grid(tmp_path, max_concurrent: int = 1) -> ReconcilingConcurrencyLimiter:
    sweep = validate_sweep(tiny_spec("g", grid={"seed": [0, 1, 2]}, max_concurrent=max_concurrent), "test")
    searcher = GridSearcher(plan_trials(sweep), str(tmp_path / "branch_points"), sweep.spec.metric, sweep.spec.mode)
    return ReconcilingConcurrencyLimiter(searcher, max_concurrent)


def restored(trial_id: str, status: str, slot: int) -> RestoredTrial:
    return RestoredTrial(trial_id, status, {GRID_POINT: {"seed": slot}, SLOT_KEY: slot})


def test_a_trial_ray_lost_is_suggested_again_once_the_running_one_ends(tmp_path):
    limiter = limited_grid(tmp_path)
    assert limiter.suggest("a")[GRID_POINT] == {"seed": 0}
    limiter.on_trial_complete("a", {"val_acc": 0.5})
    assert limiter.suggest("b")[GRID_POINT] == {"seed": 1}
    # Saved search state: a done, b running. Saved trial state: from before b existed, a still running.
    limiter.reconcile([restored("a", "RUNNING", 0)])
    assert limiter.suggest("c") is None  # a runs again first (max_concurrent 1)
    limiter.on_trial_complete("a", {"val_acc": 0.5})
    assert limiter.suggest("c")[GRID_POINT] == {"seed": 1}  # b's grid point, under a new trial id
    limiter.on_trial_complete("c", {"val_acc": 0.5})
    assert limiter.suggest("d")[GRID_POINT] == {"seed": 2}
    limiter.on_trial_complete("d", {"val_acc": 0.5})
    assert limiter.suggest("e") == "FINISHED"


def test_a_finished_trial_the_search_state_still_counts_as_running_does_not_block_the_sweep(tmp_path):
    limiter = limited_grid(tmp_path)
    limiter.suggest("a")
    # Saved search state: a running (limit reached). Saved trial state: a finished, b running.
    limiter.reconcile([restored("a", "TERMINATED", 0), restored("b", "RUNNING", 1)])
    assert limiter.suggest("x") is None  # b runs again first
    limiter.on_trial_result("b", {"val_acc": 0.4, "epoch": 3})
    limiter.on_trial_complete("b", {"val_acc": 0.5})
    assert limiter.suggest("c")[GRID_POINT] == {"seed": 2}  # b's point is not suggested twice
    limiter.on_trial_complete("c", {"val_acc": 0.5})
    assert limiter.suggest("d") == "FINISHED"


def test_optuna_never_hears_of_a_restored_trial_it_did_not_suggest():
    sweep = validate_sweep(tiny_spec("o", grid={"seed": [0, 1]}, max_concurrent=1, optuna={
        "n_trials": 4, "seed": 3, "space": {"mixup.alpha": {"type": "float", "low": 0.1, "high": 4.0}}}), "test")
    limiter = ReconcilingConcurrencyLimiter(make_searcher(sweep), 1)
    first = limiter.suggest("a")
    assert set(first) == {"seed", "mixup.alpha"}
    # Saved search state: a running. Saved trial state: a finished, b (unknown to Optuna) running.
    limiter.reconcile([RestoredTrial("a", "TERMINATED", first), RestoredTrial("b", "RUNNING", first)])
    assert limiter.suggest("x") is None
    limiter.on_trial_result("b", {"val_acc": 0.4, "training_iteration": 1})  # Optuna would raise KeyError
    limiter.on_trial_complete("b", {"val_acc": 0.5, "training_iteration": 1})
    assert set(limiter.suggest("c")) == {"seed", "mixup.alpha"}
