"""The per-epoch metrics trials report, and which direction is better for each: one rule, used by the
spec's check of `mode`, by `best --metric`, and by a trial that must report the worst value."""

from __future__ import annotations

from typing import Literal, Optional

Mode = Literal["max", "min"]

# Per-epoch metrics a trial reports (metrics.jsonl), and what a trial needs to report them.
EPOCH_METRICS: dict[str, Optional[str]] = {
    "train_loss": None,
    "val_acc": "validation",
    "val_loss": "validation",
    "val_ece": "validation",
    "test_acc": None,
    "test_loss": None,
    "test_ece": None,
    "test_acc_common": "feature_noise",
    "test_acc_rare": "feature_noise",
    "feat_common": "feature_noise",
    "feat_rare": "feature_noise",
}


def metric_mode(metric: str) -> Mode:
    """Accuracies and feature measures go up; losses and calibration errors go down."""
    higher_is_better = metric.endswith("_acc") or "_acc_" in metric or metric.startswith("feat_")
    return "max" if higher_is_better else "min"


def worst_value(mode: Mode) -> float:
    """What a diverged trial reports: never NaN, which Optuna refuses (its trial would stay RUNNING)."""
    return float("-inf") if mode == "max" else float("inf")

