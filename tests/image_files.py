"""Writes a small image dataset in the `npz` format (mixup_core/data/npz.py), for tests.

uint8 HWC images whose mean colour depends on the class, so a model has something to learn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_images(path: Path, n_train: int, n_test: int, size: int = 8, classes: int = 4, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, classes, n)
        x = rng.integers(0, 160, size=(n, size, size, 3)) + (y * (90 // classes))[:, None, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    x_train, y_train = split(n_train)
    x_test, y_test = split(n_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path
