"""From a validated sweep to Ray Tune's search: the searcher, the concurrency limit and the scheduler.

Grid: a `GridSearcher` (grid_searcher.py) suggests the planned trials, each with its grid point under
the config key `grid_point` and its plan slot: the trials `--dry-run` lists, in its order where they
are equally long, longest first otherwise (with prefix sharing, plan/sharing.py: plus trunks, first,
and branches once their trunk's checkpoint exists).
With `optuna`: Ray's `OptunaSearch` (TPE, seeded) owns the whole space; grid keys become categorical
dimensions (Optuna picks among their values); `n_trials` is the total number of trials.
Either searcher runs under a concurrency limit (`max_concurrent`) inside a search generator that, on
`resume`, agrees with the trials Ray restored (ray_compat/search_state.py).
"""

from __future__ import annotations

import functools
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from .grid_searcher import GridSearcher
from .keys import GRID_POINT, PLANNED_EPOCHS, SLOT_KEY
from .labels import ray_trial_name_of, sweep_label_keys
from .plan.packs import packs_trials
from .plan.ray_trials import concurrent_ray_trials, planned_ray_trials, ray_trial_count
from .ray_compat import asha
from .ray_compat.search_state import ReconcilingConcurrencyLimiter, ReconcilingSearchGenerator
from .spec import SearchDimension, Sweep


def optuna_distribution(dim: SearchDimension):
    import optuna

    if dim.type == "float":
        return optuna.distributions.FloatDistribution(float(dim.low), float(dim.high), log=dim.log)
    if dim.type == "int":
        return optuna.distributions.IntDistribution(int(dim.low), int(dim.high), log=dim.log)
    return optuna.distributions.CategoricalDistribution(list(dim.choices or []))


def optuna_space(sweep: Sweep) -> dict[str, Any]:
    import optuna

    assert sweep.spec.optuna is not None
    space: dict[str, Any] = {k: optuna.distributions.CategoricalDistribution(sweep.grid_values(k))
                             for k in sweep.grid_keys}
    space.update({k: optuna_distribution(d) for k, d in sweep.spec.optuna.space.items()})
    return space


def make_searcher(sweep: Sweep):
    """Ray's OptunaSearch with a seeded TPE sampler (Optuna's defaults of the installed version)."""
    if sweep.spec.optuna is None:
        return None
    from .ray_compat.optuna_search import KnowingOptunaSearch  # imports optuna: only for Optuna sweeps

    return KnowingOptunaSearch(
        space=optuna_space(sweep),
        metric=sweep.spec.metric,
        mode=sweep.spec.mode,
        seed=sweep.search_seed,
    )


class LastEpochKeepingASHA(ASHAScheduler):
    """ASHA that never stops a trial at its last epoch: there is nothing left to save there, and a
    stop would cut the trial off before it records its summary and final checkpoint."""

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if result.get("epoch", 0) >= result.get(PLANNED_EPOCHS, float("inf")):
            return TrialScheduler.CONTINUE
        return decision


def make_scheduler(sweep: Sweep):
    asha = sweep.spec.scheduler
    if asha is None:
        return None
    max_t = asha.max_t if asha.max_t is not None else sweep.max_epochs()
    return LastEpochKeepingASHA(
        time_attr="epoch",  # our epoch, not Ray's iteration counter
        max_t=max_t,
        grace_period=asha.grace_period,
        reduction_factor=asha.reduction_factor,
        # Trials that reach max_t end on their own (summary, artifacts), not stopped by ASHA.
        stop_last_trials=False,
    )


def asha_rung_epochs(sweep: Sweep) -> frozenset[int]:
    """The epochs at which the sweep's ASHA compares trials: Ray must see those results, whatever the
    report interval (resolved here, on the driver, into the trials' context)."""
    scheduler = make_scheduler(sweep)
    return asha.rung_epochs(scheduler) if scheduler is not None else frozenset()


def parameter_columns(sweep: Sweep) -> dict[str, str]:
    """Progress-table columns: flattened config key -> shown name (a packed sweep: the pack's number)."""
    if packs_trials(sweep):
        return {SLOT_KEY: "pack"}
    prefix = "" if sweep.spec.optuna is not None else f"{GRID_POINT}/"
    return {f"{prefix}{k}": k for k in sweep.varying_keys}


def trial_dirname(trial) -> str:
    """Short, stable trial directory names (Ray's default embeds every value and a timestamp)."""
    return f"trial_{trial.trial_id}"


def tune_config(sweep: Sweep, branch_root: str) -> tune.TuneConfig:
    """`branch_root`: where trunks leave their branch points (the experiment's branch_points/)."""
    if sweep.spec.optuna is not None:
        searcher: Any = make_searcher(sweep)
    else:
        searcher = GridSearcher(planned_ray_trials(sweep), branch_root, sweep.spec.metric, sweep.spec.mode)
    return tune.TuneConfig(
        metric=sweep.spec.metric,
        mode=sweep.spec.mode,
        search_alg=ReconcilingSearchGenerator(ReconcilingConcurrencyLimiter(searcher, concurrent_ray_trials(sweep))),
        scheduler=make_scheduler(sweep),
        num_samples=ray_trial_count(sweep),
        # Reused worker processes keep torch/MLflow imported: on small trials that start-up dominates.
        reuse_actors=True,
        trial_dirname_creator=trial_dirname,
        # Ray's "Trial name" column shows each trial's label, the name of its MLflow run (labels.py).
        trial_name_creator=functools.partial(ray_trial_name_of, keys=tuple(sweep_label_keys(sweep))),
    )
