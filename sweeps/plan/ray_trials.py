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
