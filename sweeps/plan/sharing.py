"""Prefix sharing (`share_prefix: true`): grid trials that differ only in `mixup.stop_epoch` branch from
one Mixup trunk instead of each retraining the same Mixup prefix.

A group = the grid points equal in everything but `mixup.stop_epoch`. Its **trunk** trains with Mixup
throughout (stop_epoch null: it *is* the group's null trial when the grid has one; otherwise an extra
run tagged `mixup_sweep.role=trunk`, which `best` ignores). Each **branch** (stop_epoch E > 0) restores
the trunk's checkpoint at epoch E and trains without Mixup to T. That is exact: the checkpoint holds
the model, optimiser and every generator, the schedule is a pure function of progress, and for the
first E epochs a stop_epoch=E trial and the trunk do the same thing. stop_epoch 0 shares nothing and
runs on its own. Cost per group: T + sum(T - E) epochs instead of T per trial; a group is shared only
when that is cheaper.

This module is the plan (which Ray trials, what they cost). Everything runs as Ray Tune trials
(resources, concurrency, restarts and `resume` as usual):
  * `GridSearcher` (grid_searcher.py) suggests trunks first, then stop_epoch-0 trials and branches; a
    branch only once its branch point exists (the trunk reported epoch >= E, or the point is found on
    storage after a resume). On `resume` it agrees with the trials Ray restored (ray_compat/search_state.py),
    so nothing is suggested twice and nothing lost is skipped.
  * The trunk (trial/reporters.py) copies its checkpoint at each branch epoch (trial/branch_points.py) to
    `{experiment}/branch_points/{group}/epoch_EEEE/` (pyarrow.fs: a local path or s3://...) and then
    writes `_COMPLETE`, all *before* reporting that epoch to Ray. A point that is complete is never
    rewritten (a restarted trunk would write identical bytes anyway), so a branch never reads a
    half-written one.
  * A branch restores its own Ray checkpoint when it has one (a restarted branch), else its branch
    point. Its MLflow run first logs the inherited epochs 1..E from the checkpoint's history, so every
    curve is complete, and is tagged `mixup_sweep.branched_from` (the trunk's run id) and
    `mixup_sweep.branch_epoch`.
  * A trunk that fails for good (restarts exhausted) turns its waiting branches into ordinary trials.
Optuna sweeps do not share (Optuna picks stop_epochs one trial at a time): `share_prefix` is ignored there.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from ..keys import GRID_POINT, SHARE_KEY, STOP_EPOCH_KEY
from ..spec import Sweep


@dataclass
class PlannedTrial:
    kind: str  # single | trunk | branch
    point: dict[str, Any]  # grid point (the trunk's has stop_epoch null)
    epochs: int  # epochs this trial trains
    group: Optional[str] = None
    epoch: Optional[int] = None  # branch: the epoch it starts from
    branch_epochs: list[int] = field(default_factory=list)  # trunk: where branches start
    is_user_trial: bool = True  # False for a trunk the grid does not contain

    def share(self) -> Optional[dict[str, Any]]:
        if self.kind == "single":
            return None
        if self.kind == "trunk":
            return {"role": "trunk", "group": self.group, "branch_epochs": list(self.branch_epochs),
                    "is_user_trial": self.is_user_trial}
        return {"role": "branch", "group": self.group, "epoch": self.epoch}

    def ray_config(self) -> dict[str, Any]:
        share = self.share()
        return {GRID_POINT: dict(self.point), **({SHARE_KEY: share} if share else {})}


def sharing_applies(sweep: Sweep) -> bool:
    return bool(sweep.spec.share_prefix and sweep.spec.optuna is None and STOP_EPOCH_KEY in sweep.grid_keys)


def ignored_note(sweep: Sweep) -> Optional[str]:
    """Why share_prefix does nothing for an Optuna sweep that varies stop_epoch (None otherwise)."""
    if sweep.spec.share_prefix and sweep.spec.optuna is not None and (
            STOP_EPOCH_KEY in sweep.grid_keys or STOP_EPOCH_KEY in sweep.spec.optuna.space):
        return ("share_prefix is ignored with optuna (Optuna picks stop_epochs one trial at a time); "
                "use a grid over mixup.stop_epoch to share Mixup prefixes")
    return None


def _group_id(point: dict[str, Any]) -> str:
    rest = {k: v for k, v in point.items() if k != STOP_EPOCH_KEY}
    return "g" + hashlib.sha1(yaml.safe_dump(rest, sort_keys=True).encode()).hexdigest()[:10]


def independent_plan(sweep: Sweep) -> list[PlannedTrial]:
    return [PlannedTrial("single", p, sweep.epochs_of(p)) for p in sweep.grid_points()]


def plan_trials(sweep: Sweep) -> list[PlannedTrial]:
    """The Ray trials of a grid sweep: trunks first (in grid order), then everything else in grid order."""
    singles = independent_plan(sweep)
    if not sharing_applies(sweep):
        return singles
    groups: dict[str, list[PlannedTrial]] = {}
    for t in singles:
        groups.setdefault(_group_id(t.point), []).append(t)
    trunks: list[PlannedTrial] = []
    shared: dict[int, PlannedTrial] = {}  # id(single) -> its replacement
    for gid, members in groups.items():
        T = members[0].epochs
        stops = [m.point[STOP_EPOCH_KEY] for m in members]
        branches = [m for m in members if m.point[STOP_EPOCH_KEY] is not None and m.point[STOP_EPOCH_KEY] > 0]
        null = next((m for m in members if m.point[STOP_EPOCH_KEY] is None), None)
        with_sharing = T + sum(T - m.point[STOP_EPOCH_KEY] for m in branches)
        without = T * (len(branches) + (null is not None))
        if not branches or with_sharing >= without or len(set(stops)) != len(stops):
            continue
        trunk_point = {**(null.point if null else members[0].point), STOP_EPOCH_KEY: None}
        epochs = sorted({m.point[STOP_EPOCH_KEY] for m in branches})
        trunk = PlannedTrial("trunk", trunk_point, T, gid, None, epochs, is_user_trial=null is not None)
        trunks.append(trunk)
        if null is not None:
            shared[id(null)] = trunk
        for m in branches:
            shared[id(m)] = PlannedTrial("branch", m.point, T - m.point[STOP_EPOCH_KEY], gid, m.point[STOP_EPOCH_KEY])
    rest = [shared.get(id(t), t) for t in singles]
    return trunks + [t for t in rest if t.kind != "trunk"]


def plan_cost(plan: list[PlannedTrial]) -> int:
    return sum(t.epochs for t in plan)
