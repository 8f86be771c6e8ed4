"""Evaluation: accuracy, cross-entropy and expected calibration error (Mixup is known for calibration,
so every evaluation reports ECE) on the validation and test splits and the test groups, plus the
feature-learning measures of a synthetic data model. Everything stays on the device until one sync."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import TrialConfig
from .data import TrialData
from .device import autocast_context

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


@torch.no_grad()
def predict(cfg: TrialConfig, data: TrialData, model: nn.Module, x_all: torch.Tensor) -> torch.Tensor:
    model.eval()
    device = x_all.device
    outs = []
    for start in range(0, x_all.shape[0], cfg.train.eval_batch_size):
        x = data.prepare_eval(x_all[start:start + cfg.train.eval_batch_size], None)
        if device.type == "cuda" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(cfg.train.precision, device):
            outs.append(model(x).float())
    return torch.cat(outs)


def evaluate(cfg: TrialConfig, data: TrialData, model: nn.Module) -> dict[str, float]:
    results: dict[str, torch.Tensor] = {}
    if data.val_x is not None:
        for k, v in classification_metrics(predict(cfg, data, model, data.val_x), data.val_y).items():
            results[f"val_{k}"] = v
    logits = predict(cfg, data, model, data.test_x)
    for k, v in classification_metrics(logits, data.test_y).items():
        results[f"test_{k}"] = v
    correct = (logits.argmax(dim=1) == data.test_y).float()
    for name, mask in data.test_groups.items():
        results[f"test_acc_{name}"] = correct[mask].mean() if bool(mask.any()) else torch.tensor(float("nan"))
    keys = list(results)
    values = torch.stack([results[k].float().to(logits.device) for k in keys]).tolist()  # one sync
    return dict(zip(keys, values))


def feature_learning(data: TrialData, model: nn.Module) -> dict[str, float]:
    if not data.features:
        return {}
    from .data.feature_noise import feature_measures

    return feature_measures(model, data.features)
