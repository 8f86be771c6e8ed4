"""One trial's outputs, written the same way whether it trains alone (trial.py) or packed with others
(packing.py): `config.yaml`, `metrics.jsonl` (one line per finished epoch), `summary.json` and
`checkpoints/`, and one `Reporter.report` per epoch.

`TrialOutputs` restores the trial's state from the checkpoint its reporter names (dropping the epochs
logged after that checkpoint), turns each trained epoch into its metrics row (evaluation, feature
measures, throughput), checkpoints when asked, and writes the summary when the trial ends.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Optional

from .checkpoint import discard_checkpoints_after, load_checkpoint, prune_checkpoints, save_checkpoint, write_history
from .config import TrialConfig, dump_yaml
from .data import TrialData
from .metrics import evaluate, feature_learning
from .private_files import make_private_dirs, open_private, write_private_text
from .reporting import LocalReporter, Reporter
from .step import TrainingState


def summarize(history: list[dict[str, Any]], epochs: int, wall_s: float, status: str = "finished",
              error: Optional[str] = None) -> dict[str, Any]:
    """summary.json: the best epoch by validation accuracy (the last epoch without a validation split)."""
    has_val = bool(history) and "val_acc" in history[0]
    best = max(history, key=lambda r: (r["val_acc"], -r["epoch"])) if has_val else (history[-1] if history else None)
    return {
        "best_epoch": best["epoch"] if best else None,
        "best_val_acc": best["val_acc"] if (best and has_val) else None,
        "test_acc_at_best": best["test_acc"] if best else None,
        "final_test_acc": history[-1]["test_acc"] if history else None,
        "epochs": len(history),
        "planned_epochs": epochs,
        "wall_s": round(wall_s, 3),
        "status": status,
        "error": error,
    }


def checkpoint_due(cfg: TrialConfig, reporter: Reporter, epoch: int, since_last_s: float) -> bool:
    """Checkpoint after `epoch` (1-based)? Which epochs get one never changes the metrics."""
    t = cfg.train
    if epoch >= t.epochs or epoch in t.keep_epochs or since_last_s >= t.checkpoint_interval_s:
        return True
    needs = getattr(reporter, "needs_checkpoint", None)
    return bool(needs and needs(epoch))


def resolved_config(cfg: TrialConfig, data: TrialData) -> TrialConfig:
    """The configuration as trained: `data.augment` replaced by what the data source applies (auto
    and true depend on the data), so config.yaml tells a user exactly which augmentation ran."""
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"augment": data.augment})})


class TrialOutputs:
    """The files and the reporter of one trial (see the module docstring). `state` is restored here."""

    def __init__(self, cfg: TrialConfig, out_dir: Path, reporter: Optional[Reporter], state: TrainingState,
                 data: TrialData):
        self.cfg, self.state = cfg, state
        self.out_dir = Path(out_dir)
        make_private_dirs(self.out_dir)
        self.reporter = reporter or LocalReporter(self.out_dir)
        self.config_yaml = dump_yaml(resolved_config(cfg, data))
        write_private_text(self.out_dir / "config.yaml", self.config_yaml)
        self.ckpt_root = self.out_dir / "checkpoints"
        self.history: list[dict[str, Any]] = []
        restore = self.reporter.checkpoint_to_restore()
        if restore is not None:
            saved, history = load_checkpoint(restore)
            state.load_dict(saved)
            self.history = history[: state.epoch]
        # What was logged or checkpointed after the restart point is replaced by this run.
        write_history(self.out_dir / "metrics.jsonl", self.history)
        discard_checkpoints_after(self.ckpt_root, state.epoch)
        (self.out_dir / "summary.json").unlink(missing_ok=True)
        self._log = open_private(self.out_dir / "metrics.jsonl", "a")
        self.status, self.error = "finished", None
        self.started = time.perf_counter() - state.elapsed_s
        self.summary: Optional[dict[str, Any]] = None

    @property
    def running(self) -> bool:
        return self.summary is None and self.state.epoch < self.cfg.train.epochs

    def checkpoint_due(self, epoch: int, since_last_s: float) -> bool:
        return checkpoint_due(self.cfg, self.reporter, epoch, since_last_s)

    def end_epoch(self, data: TrialData, train_loss: float, lr: float, seen: int, train_s: float,
                  mixing: bool, save: bool) -> Optional[dict[str, Any]]:
        """Record the epoch just trained; returns its metrics row, or None when it diverged (the
        trial then ends here)."""
        state = self.state
        if not math.isfinite(train_loss):
            self.status = "diverged"
            self.error = f"diverged at epoch {state.epoch + 1} (train loss {train_loss})"
            self.close()
            return None
        row: dict[str, Any] = {"epoch": state.epoch + 1, "mixup_active": int(mixing), "lr": lr,
                               "train_loss": train_loss}
        row.update(evaluate(self.cfg, data, state.model))
        row.update(feature_learning(data, state.model))
        state.epoch += 1
        state.elapsed_s = time.perf_counter() - self.started
        row["images_per_s"] = seen / max(train_s, 1e-9)
        row["elapsed_s"] = state.elapsed_s
        self.history.append(row)
        ckpt = save_checkpoint(self.ckpt_root, state.epoch, state.to_dict(), self.history, self.config_yaml) if save else None
        self._log.write(json.dumps(row) + "\n")
        self._log.flush()
        self.reporter.report(row, ckpt)
        if save:
            prune_checkpoints(self.ckpt_root, self.cfg.train.keep_checkpoints, self.cfg.train.keep_epochs)
        return row

    def close(self) -> dict[str, Any]:
        """Write summary.json (once) and return the summary."""
        if self.summary is None:
            self._log.close()
            self.summary = summarize(self.history, self.cfg.train.epochs, time.perf_counter() - self.started,
                                     self.status, self.error)
            write_private_text(self.out_dir / "summary.json", json.dumps(self.summary, indent=2) + "\n")
        return self.summary

    def abandon(self) -> None:
        """Close the metrics file of a trial stopped by an exception (no summary: it did not end)."""
        if self.summary is None and not self._log.closed:
            self._log.close()
