"""Evaluation metrics: accuracy, cross-entropy and expected calibration error (Mixup is known for
calibration, so every evaluation reports ECE). Everything stays on the device; callers sync once."""

from __future__ import annotations

import torch
import torch.nn.functional as F

ECE_BINS = 15


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> torch.Tensor:
    """ECE with equal-width confidence bins: sum_b |B_b|/n * |acc(B_b) - conf(B_b)|."""
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    idx = (conf * bins).long().clamp_(0, bins - 1)
    conf_sum = torch.zeros(bins, device=probs.device).index_add_(0, idx, conf)
    acc_sum = torch.zeros(bins, device=probs.device).index_add_(0, idx, correct)
    return (conf_sum - acc_sum).abs().sum() / max(labels.numel(), 1)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """acc, loss, ece as 0-dim tensors (no host sync here)."""
    logits = logits.float()
    probs = logits.softmax(dim=1)
    return {
        "acc": (logits.argmax(dim=1) == labels).float().mean(),
        "loss": F.cross_entropy(logits, labels),
        "ece": expected_calibration_error(probs, labels),
    }
