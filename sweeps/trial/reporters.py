"""How a trial reports to Ray and MLflow: mixup_core's `Reporter` protocol (mixup_core/reporting.py)
for a Ray trial, and for the trunks and branches of prefix sharing."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import ray
from ray import tune

from ..keys import PLANNED_EPOCHS, SHARE_KEY
from ..tracking import TrialRun
from .branch_points import local_branch_point, write_branch_point


@dataclass(frozen=True)
class ReportPolicy:
    """Which epochs reach Ray. Every result costs the trial a blocking round trip and the driver CPU
    time (milliseconds each: more than a small model's epoch), so Ray gets at most one per
    `interval_s`, plus every epoch it needs: checkpoints (restarts, branch points), ASHA's rungs
    and the last epoch. MLflow gets every epoch either way."""

    interval_s: float = 0.0
    required_epochs: frozenset[int] = frozenset()

    def due(self, epoch: int, has_checkpoint: bool, seconds_since_last: float) -> bool:
        return has_checkpoint or epoch in self.required_epochs or seconds_since_last >= self.interval_s


class RayReporter:
    """mixup_core's Reporter for a Ray trial: restores from Ray's checkpoint; reports to Ray as its
    `ReportPolicy` says and, at each checkpoint (and each ASHA rung, where the trial may be stopped),
    first logs the epochs kept since the previous flush to MLflow in one batch (TrialRun.flush)."""

    def __init__(self, run: TrialRun, stack: contextlib.ExitStack, planned_epochs: int,
                 policy: ReportPolicy = ReportPolicy()):
        self.run = run
        self._stack = stack
        self.planned_epochs = planned_epochs
        self.policy = policy
        self.reports = 0
        self._last_report = float("-inf")

    def checkpoint_to_restore(self) -> Optional[Path]:
        path = self._ray_checkpoint()
        self._record_attempt(_history_of(path), "checkpoint" if path is not None else "start")
        return path

    def _ray_checkpoint(self) -> Optional[Path]:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        # Local storage: the directory itself; remote storage: downloaded, kept until the trial ends.
        return Path(self._stack.enter_context(checkpoint.as_directory()))

    def _record_attempt(self, rows: list[dict[str, Any]], source: str) -> None:
        """Where this attempt runs and the epoch it continues from (the last of the restored history)."""
        self.run.record_attempt(ray.get_runtime_context().get_node_id(), int(rows[-1]["epoch"]) if rows else 0,
                                source)

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        # MLflow before Ray's checkpoint: a crash before Ray persists it re-runs epochs that are already
        # logged (and skipped), whereas the other order would leave a hole in the history. Epochs after
        # the last checkpoint are re-trained after a crash, and logged then.
        self.run.add_epoch(metrics)
        epoch = int(metrics["epoch"])
        now = time.monotonic()
        if not self.policy.due(epoch, checkpoint_dir is not None, now - self._last_report):
            return
        if checkpoint_dir is not None or epoch in self.policy.required_epochs:
            self.run.flush()  # a rung is where a scheduler may stop the trial: its history is complete there
        result = {**metrics, PLANNED_EPOCHS: self.planned_epochs}
        if checkpoint_dir is None:
            tune.report(result)
        else:
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        self._last_report = now
        self.reports += 1


class BranchingReporter(RayReporter):
    """A trunk writes branch points before reporting those epochs; a branch starts from its point and
    logs the inherited history to MLflow first."""

    def __init__(self, run, stack: contextlib.ExitStack, planned_epochs: int, policy: ReportPolicy,
                 share: dict[str, Any]):
        super().__init__(run, stack, planned_epochs, policy)
        self.share = share

    def checkpoint_to_restore(self) -> Optional[Path]:
        path, source = self._ray_checkpoint(), "checkpoint"
        if path is None and self.share["role"] == "branch":
            path = local_branch_point(self.share["root"], self.share["group"], self.share["epoch"], self._stack)
            source = "branch_point"
        rows = _history_of(path)
        self._record_attempt(rows, source if path is not None else "start")
        if path is not None and self.share["role"] == "branch":
            self.run.log_epochs(rows)  # the inherited epochs 1..E
        return path

    def needs_checkpoint(self, epoch: int) -> bool:
        return self.share["role"] == "trunk" and epoch in self.share["branch_epochs"]

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        if checkpoint_dir is not None and self.needs_checkpoint(int(metrics["epoch"])):
            write_branch_point(checkpoint_dir, self.share["root"], self.share["group"], int(metrics["epoch"]))
        super().report(metrics, checkpoint_dir)


def _history_of(checkpoint: Optional[Path]) -> list[dict[str, Any]]:
    """The epochs a checkpoint holds (its metrics.jsonl); none without a checkpoint."""
    from mixup_core import read_history  # torch: imported in the trial process only

    return read_history(checkpoint / "metrics.jsonl") if checkpoint is not None else []


def make_reporter(config: dict[str, Any], run, stack: contextlib.ExitStack, planned_epochs: int,
                  policy: ReportPolicy) -> RayReporter:
    share = config.get(SHARE_KEY)
    if share:
        return BranchingReporter(run, stack, planned_epochs, policy, share)
    return RayReporter(run, stack, planned_epochs, policy)
