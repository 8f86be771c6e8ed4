"""What every data source returns (`TrialData`: tensors resident on the training device) and the
deterministic train/validation split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch

from ..config import AugmentConfig, validation_count

Prepare = Callable[[torch.Tensor, Optional[torch.Generator]], torch.Tensor]


def _identity(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    return x


@dataclass
class TrialData:
    train_x: torch.Tensor
    train_y: torch.Tensor  # int64 class indices
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]  # per example, e.g. (3, 32, 32) or (patches, dim)
    val_x: Optional[torch.Tensor] = None
    val_y: Optional[torch.Tensor] = None
    # Named boolean masks over the test set; each yields a metric test_acc_<name> (e.g. common/rare).
    test_groups: dict[str, torch.Tensor] = field(default_factory=dict)
    # Ground-truth feature vectors of a synthetic data model, e.g. {"common": [K, d], "rare": [K, d]}.
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    # Raw batch -> float model input. Train: augmentation (from the generator) + normalisation.
    prepare_train: Prepare = _identity
    prepare_eval: Prepare = _identity
    # The augmentation prepare_train applies (config.resolve_augment): what the trial's config.yaml shows.
    augment: Union[bool, AugmentConfig] = False

    @property
    def n_train(self) -> int:
        return int(self.train_y.shape[0])


def split_validation(
    x: torch.Tensor, y: torch.Tensor, val_size: int | float, seed: int
) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """Hold out a validation split, deterministic in `seed` (the same split on every device)."""
    n = int(y.shape[0])
    count = validation_count(val_size, n)
    if count == 0:
        return x, y, None, None
    gen = torch.Generator().manual_seed(seed + 7_919)  # a stream of its own, independent of training
    perm = torch.randperm(n, generator=gen).to(y.device)
    val_idx, train_idx = perm[:count], perm[count:]
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]
