"""Learning-rate schedules as pure functions of training progress (no scheduler state to checkpoint).

`t` is progress in epochs (epoch + step / steps_per_epoch). Cosine and warmup are smooth in t;
step decays at whole epochs, as in the reference CIFAR recipes.
"""

from __future__ import annotations

import math

from .config import TrainConfig


def milestone_epochs(cfg: TrainConfig) -> list[float]:
    """Milestones below 1 are fractions of the run (0.5 = half way); others are epochs."""
    return sorted(m * cfg.epochs if m < 1 else m for m in cfg.milestones)


def lr_at(cfg: TrainConfig, t: float) -> float:
    base = cfg.lr
    if cfg.warmup_epochs and t < cfg.warmup_epochs:
        return base * (t + 1e-3) / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return base
    if cfg.schedule == "step":
        passed = sum(1 for m in milestone_epochs(cfg) if math.floor(t) >= m)
        return base * cfg.gamma**passed
    # cosine from the end of warmup to zero at the last step
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
    frac = min(max((t - cfg.warmup_epochs) / span, 0.0), 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * frac))
