"""The small interface between a trial and whatever runs it (the CLI, Ray Tune, a test).

`mixup_core` knows nothing about Ray or MLflow. A runner hands `run_trial` a `Reporter`:
  * `checkpoint_to_restore()` is asked once, before training: a checkpoint directory to resume from,
    or None to start fresh;
  * `report(metrics, checkpoint_dir)` is called once per finished epoch with that epoch's metrics and
    the directory of the checkpoint just written, or None when this epoch has none
    (`train.checkpoint_interval_s`; the last epoch always has one). The runner may copy it away; the
    trial may delete its own copy later, keeping only `train.keep_checkpoints` + `train.keep_epochs`;
  * optionally `needs_checkpoint(epoch) -> bool`: epochs (1-based) that must get a checkpoint whatever
    the interval (e.g. the branch points of a Mixup trunk).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Protocol


class Reporter(Protocol):
    def checkpoint_to_restore(self) -> Optional[Path]: ...

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None: ...


class LocalReporter:
    """Used by `mixup-train`: resumes from `checkpoint`, or (resume without one named) from the newest
    intact checkpoint in the trial's own directory."""

    def __init__(self, out_dir: Path, resume: bool = False, on_epoch=None, checkpoint: Optional[Path] = None):
        self.out_dir = Path(out_dir)
        self.resume = resume
        self.on_epoch = on_epoch
        self.checkpoint = checkpoint

    def checkpoint_to_restore(self) -> Optional[Path]:
        if not self.resume:
            return None
        if self.checkpoint is not None:
            return self.checkpoint
        from .checkpoint import latest_intact_checkpoint

        return latest_intact_checkpoint(self.out_dir / "checkpoints")

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        if self.on_epoch is not None:
            self.on_epoch(metrics)
