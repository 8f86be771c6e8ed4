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

Everything runs as Ray Tune trials (resources, concurrency, restarts and `resume` as usual):
  * `GridSearcher` (grid_searcher.py) suggests trunks first, then stop_epoch-0 trials and branches; a
    branch only once its branch point exists (the trunk reported epoch >= E, or the point is found on
    storage after a resume). On `resume` it agrees with the trials Ray restored (search_recovery.py),
    so nothing is suggested twice and nothing lost is skipped.
  * The trunk copies its checkpoint at each branch epoch to
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

import contextlib
import hashlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from .spec import Sweep
from .tracking import ROLE_TAG, find_trial_run
from .trainable import GRID_POINT, RayReporter, ReportPolicy

SHARE_KEY = "share"  # Ray config key of trunks and branches: {"role", "group", ...}
STOP_KEY = "mixup.stop_epoch"
COMPLETE_MARKER = "_COMPLETE"
BRANCHED_FROM_TAG = "mixup_sweep.branched_from"
BRANCH_EPOCH_TAG = "mixup_sweep.branch_epoch"
GROUP_TAG = "mixup_sweep.share_group"
SLOT_KEY = "plan_slot"  # Ray config: the trial's index in the plan (stable for a spec)


# ---------------------------------------------------------------------------------------------
# The plan: which Ray trials a sweep runs, and what they cost


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
    return bool(sweep.spec.share_prefix and sweep.spec.optuna is None and STOP_KEY in sweep.grid_keys)


def ignored_note(sweep: Sweep) -> Optional[str]:
    """Why share_prefix does nothing for an Optuna sweep that varies stop_epoch (None otherwise)."""
    if sweep.spec.share_prefix and sweep.spec.optuna is not None and (
            STOP_KEY in sweep.grid_keys or STOP_KEY in sweep.spec.optuna.space):
        return ("share_prefix is ignored with optuna (Optuna picks stop_epochs one trial at a time); "
                "use a grid over mixup.stop_epoch to share Mixup prefixes")
    return None


def _group_id(point: dict[str, Any]) -> str:
    rest = {k: v for k, v in point.items() if k != STOP_KEY}
    return "g" + hashlib.sha1(yaml.safe_dump(rest, sort_keys=True).encode()).hexdigest()[:10]


def independent_plan(sweep: Sweep) -> list[PlannedTrial]:
    return [PlannedTrial("single", p, sweep.trial_config(p).train.epochs) for p in sweep.grid_points()]


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
        stops = [m.point[STOP_KEY] for m in members]
        branches = [m for m in members if m.point[STOP_KEY] is not None and m.point[STOP_KEY] > 0]
        null = next((m for m in members if m.point[STOP_KEY] is None), None)
        with_sharing = T + sum(T - m.point[STOP_KEY] for m in branches)
        without = T * (len(branches) + (null is not None))
        if not branches or with_sharing >= without or len(set(stops)) != len(stops):
            continue
        trunk_point = {**(null.point if null else members[0].point), STOP_KEY: None}
        epochs = sorted({m.point[STOP_KEY] for m in branches})
        trunk = PlannedTrial("trunk", trunk_point, T, gid, None, epochs, is_user_trial=null is not None)
        trunks.append(trunk)
        if null is not None:
            shared[id(null)] = trunk
        for m in branches:
            shared[id(m)] = PlannedTrial("branch", m.point, T - m.point[STOP_KEY], gid, m.point[STOP_KEY])
    rest = [shared.get(id(t), t) for t in singles]
    return trunks + [t for t in rest if t.kind != "trunk"]


def plan_cost(plan: list[PlannedTrial]) -> int:
    return sum(t.epochs for t in plan)


# ---------------------------------------------------------------------------------------------
# Branch points on storage (local path or URI)


def branch_point_uri(root: str, group: str, epoch: int) -> str:
    return f"{root.rstrip('/')}/{group}/epoch_{epoch:04d}"


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def branch_point_exists(root: str, group: str, epoch: int) -> bool:
    import pyarrow.fs

    fs, path = _fs(branch_point_uri(root, group, epoch))
    return fs.get_file_info(f"{path}/{COMPLETE_MARKER}").type == pyarrow.fs.FileType.File


def write_branch_point(checkpoint_dir: Path, root: str, group: str, epoch: int) -> None:
    """Copy the trunk's checkpoint, then mark it complete. Never rewrites a complete point."""
    import pyarrow.fs

    if branch_point_exists(root, group, epoch):
        return
    fs, path = _fs(branch_point_uri(root, group, epoch))
    fs.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(checkpoint_dir), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)
    with fs.open_output_stream(f"{path}/{COMPLETE_MARKER}") as out:
        out.write(b"")


def local_branch_point(root: str, group: str, epoch: int, stack: contextlib.ExitStack) -> Path:
    """The branch point as a local directory (downloaded to a temp dir, kept until `stack` closes)."""
    import pyarrow.fs

    fs, path = _fs(branch_point_uri(root, group, epoch))
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return Path(path)
    local = stack.enter_context(tempfile.TemporaryDirectory(prefix="branch_point_"))
    pyarrow.fs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return Path(local)


# ---------------------------------------------------------------------------------------------
# Trial side


class BranchingReporter(RayReporter):
    """A trunk writes branch points before reporting those epochs; a branch starts from its point and
    logs the inherited history to MLflow first."""

    def __init__(self, run, stack: contextlib.ExitStack, planned_epochs: int, policy: ReportPolicy,
                 share: dict[str, Any]):
        super().__init__(run, stack, planned_epochs, policy)
        self.share = share

    def checkpoint_to_restore(self) -> Optional[Path]:
        from mixup_core import read_history

        path = super().checkpoint_to_restore()
        if path is None and self.share["role"] == "branch":
            path = local_branch_point(self.share["root"], self.share["group"], self.share["epoch"], self._stack)
        if path is not None and self.share["role"] == "branch":
            self.run.log_epochs(read_history(path / "metrics.jsonl"))  # the inherited epochs 1..E
        return path

    def needs_checkpoint(self, epoch: int) -> bool:
        return self.share["role"] == "trunk" and epoch in self.share["branch_epochs"]

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        if checkpoint_dir is not None and self.needs_checkpoint(int(metrics["epoch"])):
            write_branch_point(checkpoint_dir, self.share["root"], self.share["group"], int(metrics["epoch"]))
        super().report(metrics, checkpoint_dir)


def shared_run_name(config: dict[str, Any], name: str) -> str:
    share = config.get(SHARE_KEY)
    if share and share["role"] == "trunk" and not share["is_user_trial"]:
        return f"trunk: {name}"
    return name


def tag_shared_run(run, config: dict[str, Any], experiment_id: str, parent_run_id: str) -> None:
    share = config.get(SHARE_KEY)
    if not share:
        return
    tags = {GROUP_TAG: share["group"]}
    if share["role"] == "trunk" and not share["is_user_trial"]:
        tags[ROLE_TAG] = "trunk"  # not a trial of the grid: `best` ignores it
    if share["role"] == "branch":
        trunk = find_trial_run(run.client, experiment_id, parent_run_id, share["trunk_trial_id"])
        tags[BRANCHED_FROM_TAG] = trunk.info.run_id if trunk is not None else "unknown"
        tags[BRANCH_EPOCH_TAG] = str(share["epoch"])
    run.set_tags(tags)


def make_reporter(config: dict[str, Any], run, stack: contextlib.ExitStack, planned_epochs: int,
                  policy: ReportPolicy) -> RayReporter:
    share = config.get(SHARE_KEY)
    if share:
        return BranchingReporter(run, stack, planned_epochs, policy, share)
    return RayReporter(run, stack, planned_epochs, policy)
