"""The Ray trainable of a pack (`resources.pack`, plan/packs.py): one Ray trial trains its member trials
together with `mixup_core.packing.run_packed_trials`.

  * Each member has its own MLflow child run, as if it had run alone: trial id "<Ray trial id>-<k>", tag
    mixup_sweep.ray_trial_id = the pack's Ray trial id, its params, every epoch once (flushed before each
    pack checkpoint reaches Ray), summary metrics, artifacts, FINISHED (or FAILED when it diverged).
  * Ray sees the pack: a result at most every `report_interval_s`, at every pack checkpoint and at the
    last epoch; the result is the best member's epoch metrics plus `pack_trials` (how many trained it).
  * A pack checkpoint is a directory of `member_<k>/`, each member's newest checkpoint. Members
    checkpoint together (packing.py), so it is one restart point: a restarted pack restores every member
    from it, and MLflow skips the epochs a member already logged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Optional

from ray import tune

from mixup_core import flatten

from ..keys import PACK_KEY, PACK_MEMBER_DIR, PACK_MEMBER_TAG, PLANNED_EPOCHS
from ..tracking import TrialRun, error_line
from .context import TrialContext
from .placement import placement_tags
from .reporters import ReportPolicy



def _link_tree(src: Path, dst: Path) -> None:
    """Hard links (a checkpoint can be large; Ray copies the directory anyway), copies across devices."""
    try:
        shutil.copytree(src, dst, copy_function=os.link)
    except OSError:
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)


class MemberReporter:
    """mixup_core's Reporter for one member: restores from its part of the pack checkpoint and keeps
    its epochs for MLflow and its newest checkpoint for the next pack checkpoint."""

    def __init__(self, run: TrialRun, restore_dir: Optional[Path]):
        self.run = run
        self._restore = restore_dir
        self.latest_checkpoint: Optional[Path] = restore_dir  # a member that already finished keeps it
        self.checkpoint_epoch = 0
        self.last_row: Optional[dict[str, Any]] = None

    def checkpoint_to_restore(self) -> Optional[Path]:
        return self._restore

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        self.run.add_epoch(metrics)  # logged at the next pack checkpoint (or the end)
        self.last_row = metrics
        if checkpoint_dir is not None:
            self.latest_checkpoint = checkpoint_dir
            self.checkpoint_epoch = int(metrics["epoch"])


class PackRayReporter:
    """Reports the pack to Ray once per lockstep epoch that is due (packing's `on_epoch`)."""

    def __init__(self, members: list[MemberReporter], work_dir: Path, context: TrialContext,
                 planned_epochs: int, policy: ReportPolicy):
        self.members = members
        self.work_dir = work_dir
        self.metric, self.mode = context.metric, context.mode
        self.planned_epochs = planned_epochs
        self.policy = policy
        self.reports = 0
        self._last_report = float("-inf")

    def result(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        sign = 1 if self.mode == "max" else -1
        best = max(rows, key=lambda r: sign * float(r.get(self.metric, float("-inf") * sign)))
        return {**best, PLANNED_EPOCHS: self.planned_epochs, "pack_trials": len(rows)}

    def on_epoch(self, epoch: int, indices: list[int]) -> None:
        rows = [self.members[i].last_row for i in indices]
        if not rows:
            return  # every member that trained this epoch diverged
        has_checkpoint = any(self.members[i].checkpoint_epoch == epoch for i in indices)
        now = time.monotonic()
        if not self.policy.due(epoch, has_checkpoint, now - self._last_report):
            return
        result = self.result([r for r in rows if r is not None])
        if not has_checkpoint:
            tune.report(result)
        else:
            for m in self.members:  # MLflow before Ray's checkpoint (see RayReporter.report)
                m.run.flush()
            stage = self.work_dir / f".pack_checkpoint_{epoch:04d}"
            shutil.rmtree(stage, ignore_errors=True)
            stage.mkdir(parents=True)
            for k, m in enumerate(self.members):
                if m.latest_checkpoint is not None:
                    _link_tree(m.latest_checkpoint, stage / PACK_MEMBER_DIR.format(k))
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(stage)))  # persisted on return
            shutil.rmtree(stage, ignore_errors=True)
        self._last_report = now
        self.reports += 1


def _restore_dirs(stack: contextlib.ExitStack, work_dir: Path, n: int) -> list[Optional[Path]]:
    """Each member's part of the pack checkpoint Ray restores, copied out: Ray may delete that checkpoint
    (num_to_keep) while a member that already finished still needs its own for the next pack checkpoint."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return [None] * n
    source = Path(stack.enter_context(checkpoint.as_directory()))
    dirs: list[Optional[Path]] = []
    for k in range(n):
        part = source / PACK_MEMBER_DIR.format(k)
        if not part.is_dir():
            dirs.append(None)
            continue
        local = work_dir / "restored" / PACK_MEMBER_DIR.format(k)
        shutil.rmtree(local, ignore_errors=True)
        shutil.copytree(part, local)
        dirs.append(local)
    return dirs


def train_pack(config: dict[str, Any], context: TrialContext, trial_id: str) -> None:
    from mixup_core import run_packed_trials  # torch: imported in the trial process only

    points = [dict(p) for p in config[PACK_KEY]]
    cfgs = [context.trial_config(p) for p in points]
    work_dir = Path(os.getcwd()) / f"trial_{trial_id}"  # scratch on this node, as in train_trial
    # A restarted pack may find its killed attempt's files here (reused actors share the working
    # directory): checkpoints newer than the one Ray restores would make pruning drop the new ones.
    shutil.rmtree(work_dir, ignore_errors=True)
    runs = []
    for k, (point, cfg) in enumerate(zip(points, cfgs)):
        run = TrialRun.open(context.tracking_uri, context.experiment_id, context.parent_run_id, f"{trial_id}-{k}",
                            context.run_name(point), flatten(cfg.to_dict()), ray_trial_id=trial_id)
        run.set_tags({**placement_tags(cfg.train.device), PACK_MEMBER_TAG: f"{k + 1}/{len(points)}"})
        runs.append(run)
    out_dirs = [work_dir / PACK_MEMBER_DIR.format(k) for k in range(len(points))]
    planned = max(c.train.epochs for c in cfgs)
    try:
        with contextlib.ExitStack() as stack:
            members = [MemberReporter(run, d) for run, d in zip(runs, _restore_dirs(stack, work_dir, len(points)))]
            pack = PackRayReporter(members, work_dir, context, planned,
                                   ReportPolicy(context.report_interval_s, frozenset({planned})))
            summaries = run_packed_trials(cfgs, out_dirs, members, on_epoch=pack.on_epoch)
            for run, member, out_dir, summary in zip(runs, members, out_dirs, summaries):
                run.flush()  # a diverged member stops between checkpoints
                run.end(summary, out_dir, member.latest_checkpoint)
    except Exception as e:  # recorded, then re-raised for Ray's retry logic (the whole pack restarts)
        for run in runs:
            run.finish("FAILED", f"pack failed: {error_line(e)}")
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    if pack.reports == 0:
        # Ray requires the sweep's metric in a trial's results: a pack restored at its last epoch
        # (nothing left to train) repeats its members' final results.
        rows = [m.last_row or _last_row(d) for m, d in zip(members, out_dirs)]
        rows = [r for r in rows if r is not None]
        if rows:
            tune.report(pack.result(rows))


def _last_row(out_dir: Path) -> Optional[dict[str, Any]]:
    from mixup_core import read_history  # torch: imported in the trial process only

    rows = read_history(out_dir / "metrics.jsonl")
    return rows[-1] if rows else None
