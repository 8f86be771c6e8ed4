"""CIFAR-10 / CIFAR-100 as uint8 tensors resident on the training device.

Files are torchvision's python format under `data.root` (`cifar-10-batches-py/`, `cifar-100-python/`).
torchvision is used only to download (when `data.download` is true and the files are missing); the
batches are then read here, not through torchvision's dataset classes, because those insist on the
official MD5s (so small generated test sets could not be read) and hand out one PIL image at a time.
What is read is validated (shapes, dtypes, label ranges) so that a damaged file fails with one line.

Unpickling is restricted to numpy arrays and plain containers: a CIFAR batch needs nothing else, and
refusing everything else means a file dropped into the data folder cannot run code.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .augment import ImagePipeline, Normalize
from ..config import ConfigError, DataConfig, resolve_augment
from .base import TrialData, split_validation

IMAGE_SHAPE = (3, 32, 32)
PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class CifarLayout:
    title: str
    folder: str
    train_files: tuple[str, ...]
    test_file: str
    label_key: str
    num_classes: int
    # Per-channel statistics of the training set (pixel / 255), as used by the common CIFAR recipes.
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS = {
    "cifar10": CifarLayout(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        label_key="labels",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_file="test",
        label_key="fine_labels",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Reconstructs numpy arrays and builtins containers; refuses any other global."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # bytes pickled by Python 3 with protocol 2
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy.core"):  # files pickled by numpy < 2 name the module numpy.core
            module = "numpy._core" + module[len("numpy.core") :] if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _read_batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """One python-format batch -> (uint8 [n, 3, 32, 32], int64 [n]), validated."""
    hint = "re-download it (data.download: true after removing the folder) or fix data.root"
    try:
        with path.open("rb") as f:
            entry = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing from the {layout.title} folder; {hint}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise ConfigError(f"{path}: not a {layout.title} python-format batch ({e}); {hint}") from None
    if not isinstance(entry, dict) or "data" not in entry or layout.label_key not in entry:
        raise ConfigError(
            f"{path}: not a {layout.title} batch (expected a dict with 'data' and '{layout.label_key}'); {hint}"
        )
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[layout.label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS:
        raise ConfigError(
            f"{path}: 'data' is {data.dtype} of shape {data.shape}, expected uint8 [n, {PIXELS}]; {hint}"
        )
    if labels.ndim != 1 or labels.shape[0] != data.shape[0] or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(
            f"{path}: '{layout.label_key}' must be {data.shape[0]} integer labels, "
            f"got {labels.dtype} of shape {labels.shape}; {hint}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= layout.num_classes):
        raise ConfigError(
            f"{path}: labels range over {labels.min()}..{labels.max()}, expected 0..{layout.num_classes - 1}; {hint}"
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels.astype(np.int64)


def _files_present(folder: Path, layout: CifarLayout) -> bool:
    return all((folder / name).is_file() for name in (*layout.train_files, layout.test_file))


def _download(root: Path, name: str, layout: CifarLayout) -> None:
    """Download through torchvision, under a file lock: parallel trials of a sweep that share a data
    root then download once (the others wait, and find the files present)."""
    import fcntl

    import torchvision  # only needed here; reading does not go through torchvision

    dataset_cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{layout.folder}.download.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _files_present(root / layout.folder, layout):
            return
        try:
            dataset_cls(str(root), train=True, download=True)
        except (OSError, RuntimeError) as e:
            raise ConfigError(
                f"could not download {layout.title} into {root} ({e}); check the network, "
                f"or put the python-format files in {root / layout.folder}"
            ) from None


def load_cifar_arrays(root: str | Path, name: str, download: bool = False) -> dict[str, Any]:
    """Read (downloading first if allowed and needed) one CIFAR dataset as numpy arrays on the host.

    Returns {"train_x", "train_y", "test_x", "test_y"} (uint8 NCHW images, int64 labels) and the layout.
    """
    layout = LAYOUTS[name]
    root = Path(root).expanduser()
    folder = root / layout.folder
    if not _files_present(folder, layout):
        if download:
            _download(root, name, layout)
        elif not folder.is_dir():
            raise ConfigError(
                f"{layout.title} not found: {folder} does not exist; set data.download: true to download it "
                f"there, or set data.root to the folder that contains {layout.folder}/"
            )
    parts = [_read_batch(folder / f, layout) for f in layout.train_files]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _read_batch(folder / layout.test_file, layout)
    if train_y.size == 0 or test_y.size == 0:
        raise ConfigError(f"{folder}: the {layout.title} train or test set is empty")
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y, "layout": layout}


def load_cifar(cfg: DataConfig, seed: int, device: torch.device) -> TrialData:
    """CIFAR-10/100 (cfg.name) from cfg.root, split into train/validation by `seed`, resident on `device`.

    Images stay uint8 NCHW on the device (4x less memory and bandwidth than float); `prepare_train`
    augments (cfg.augment: auto and true are the standard random crop with pad 4 + flip) and
    normalises a batch, `prepare_eval` normalises only.
    """
    arrays = load_cifar_arrays(cfg.root, cfg.name, cfg.download)
    layout: CifarLayout = arrays["layout"]
    device = torch.device(device)

    def to_device(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    train_x, train_y = to_device(arrays["train_x"]), to_device(arrays["train_y"])
    train_x, train_y, val_x, val_y = split_validation(train_x, train_y, cfg.val_size, seed)
    augment = resolve_augment(cfg.augment, cfg.name, IMAGE_SHAPE[1:])
    pipeline = ImagePipeline(Normalize(layout.mean, layout.std, device, uint8_input=True), augment)
    return TrialData(
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=to_device(arrays["test_x"]),
        test_y=to_device(arrays["test_y"]),
        num_classes=layout.num_classes,
        input_shape=IMAGE_SHAPE,
        prepare_train=pipeline.prepare_train,
        prepare_eval=pipeline.prepare_eval,
        augment=augment,
    )
