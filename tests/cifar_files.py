"""Writes small CIFAR-10 / CIFAR-100 folders in torchvision's python (pickle) format, for tests.

The files have the real structure (a pickled dict per batch with a uint8 [n, 3072] 'data' array and a
list of labels) but random pixels, so loaders are exercised on the format without any download.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _write_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    entry = {
        "batch_label": f"generated {path.name}",
        "data": images.reshape(len(images), -1),
        label_key: [int(v) for v in labels],
        "filenames": [f"img_{i}.png" for i in range(len(images))],
    }
    if label_key == "fine_labels":
        entry["coarse_labels"] = [int(v) // 5 for v in labels]
    with path.open("wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_cifar(
    root: Path, name: str = "cifar10", n_per_batch: int = 40, n_test: int = 40, seed: int = 0
) -> dict[str, np.ndarray]:
    """Create root/<torchvision folder> for `name` ('cifar10': 5 train batches; 'cifar100': one file).

    Returns the arrays written (uint8 NCHW images, int64 labels) so tests can compare what is read back.
    """
    rng = np.random.default_rng(seed)
    if name == "cifar10":
        folder, files, test_file, label_key, k = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "labels", 10
    elif name == "cifar100":
        folder, files, test_file, label_key, k = "cifar-100-python", ["train"], "test", "fine_labels", 100
    else:
        raise ValueError(name)
    target = Path(root) / folder
    target.mkdir(parents=True, exist_ok=True)
    n_train = n_per_batch * 5
    train_x = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    train_y = (np.arange(n_train) % k).astype(np.int64)  # every class present when n >= k
    rng.shuffle(train_y)
    test_x = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    test_y = rng.integers(0, k, size=n_test).astype(np.int64)
    chunks = np.array_split(np.arange(n_train), len(files))
    for fname, idx in zip(files, chunks):
        _write_batch(target / fname, train_x[idx], train_y[idx], label_key)
    _write_batch(target / test_file, test_x, test_y, label_key)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}
