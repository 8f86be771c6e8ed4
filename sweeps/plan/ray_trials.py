"""The Ray trials a sweep creates: for a grid, the planned trials (with prefix sharing: trunks and
branches, sharing.py) or the packs (packs.py); for Optuna, `n_trials` of them."""

from __future__ import annotations

from typing import Union

from ..spec import Sweep
from .packs import PlannedPack, pack_plan, packs_trials
from .sharing import PlannedTrial, plan_trials


def planned_ray_trials(sweep: Sweep) -> Union[list[PlannedTrial], list[PlannedPack]]:
    """A grid sweep's Ray trials: the packs (resources.pack > 1), else the planned trials (with prefix
    sharing: trunks and branches)."""
    return pack_plan(sweep) if packs_trials(sweep) else plan_trials(sweep)


def ray_trial_count(sweep: Sweep) -> int:
    """How many Ray trials the sweep creates (with prefix sharing: plus the trunks the grid lacks;
    packed: one per pack)."""
    return sweep.n_trials if sweep.spec.optuna else len(planned_ray_trials(sweep))


def concurrent_ray_trials(sweep: Sweep) -> int:
    """max_concurrent counts trials; a pack is `resources.pack` of them (the spec ensures >= 1 pack)."""
    return sweep.spec.max_concurrent // sweep.spec.resources.pack


def total_epochs(sweep: Sweep) -> int:
    """Epochs the whole sweep trains, counted per trial (a pack of N trains N trials' epochs; a branch
    only those after its branch point). Optuna: an upper bound (n_trials x the longest trial); with
    ASHA, trials it stops early count as done when they stop."""
    if sweep.spec.optuna:
        return sweep.n_trials * sweep.max_epochs()
    plan = planned_ray_trials(sweep)
    return sum(sum(m.epochs for m in t.members) if isinstance(t, PlannedPack) else t.epochs for t in plan)
