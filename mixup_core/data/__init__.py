"""The trial's data: every source (the feature-noise model, CIFAR, a user's npz) returns a `TrialData`
(base.py): whole tensors already on the device, so the training step never touches a DataLoader or
the host."""

from __future__ import annotations

import torch

from ..config import DataConfig
from .base import TrialData, split_validation, validation_count

__all__ = ["TrialData", "build_dataset", "split_validation", "validation_count"]


def build_dataset(cfg: DataConfig, seed: int, device: torch.device) -> TrialData:
    # Imported by name: CIFAR and npz pull in numpy/pickle machinery a feature-noise trial never needs.
    if cfg.name == "feature_noise":
        from .feature_noise import make_feature_noise_data

        return make_feature_noise_data(cfg, seed, device)
    if cfg.name in ("cifar10", "cifar100"):
        from .cifar import load_cifar

        return load_cifar(cfg, seed, device)
    if cfg.name == "npz":
        from .npz import load_npz

        return load_npz(cfg, seed, device)
    raise ValueError(f"unknown dataset {cfg.name!r}")  # unreachable: the config is validated
