"""A user's own image data from one .npz file, resident on the training device.

The file (`data.root`) holds `x_train, y_train, x_test, y_test`. Images are N,H,W,C or N,C,H,W (the
layout is inferred; N,H,W is read as one channel), uint8 or float; labels are integer class indices
0..K-1 and K = max label + 1 over train and test. uint8 images are normalised with the per-channel
mean/std of the training split; float images are used as given. Augmentation is off unless asked
for: `data.augment: true` is a random crop padded by 1/8 of the image side plus flips, or give
`{crop_pad: N, flip: bool}` (config.resolve_augment).

Everything is checked on load and each problem becomes one `ConfigError` line saying what is wrong
and what to do: the training loop can then trust the tensors.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .augment import ImagePipeline, Normalize
from ..config import ConfigError, DataConfig, resolve_augment
from .base import TrialData, split_validation

REQUIRED = ("x_train", "y_train", "x_test", "y_test")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise ConfigError(f"{path}: no such file; set data.root to the path of your .npz file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; for data.name=npz, data.root must be the path of a .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as e:
        raise ConfigError(
            f"{path}: not a readable .npz file ({type(e).__name__}); save it with numpy.savez(path, "
            f"x_train=..., y_train=..., x_test=..., y_test=...)"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ConfigError(
            f"{path}: is a single .npy array, not an .npz archive; save it with numpy.savez(path, "
            f"x_train=..., y_train=..., x_test=..., y_test=...)"
        )
    with archive:
        missing = [k for k in REQUIRED if k not in archive.files]
        if missing:
            raise ConfigError(
                f"{path}: missing array(s) {', '.join(missing)} (found: {', '.join(archive.files) or 'none'}); "
                f"the file must hold {', '.join(REQUIRED)}"
            )
        return {k: _read_member(archive, k, path) for k in REQUIRED}


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    """One array of the archive; a member that cannot be read is named, with why."""
    try:
        return archive[key]
    except ValueError as e:
        if "pickle" in str(e):  # object arrays need pickle, which is refused: a file is data, not code
            raise ConfigError(f"{path}: {key} is an object array (it needs pickle, which is refused); "
                              f"store numeric arrays") from None
        raise ConfigError(f"{path}: {key} is damaged ({e}); write the file again") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # bad CRC, cut short, bad deflate data
        raise ConfigError(f"{path}: {key} is damaged ({type(e).__name__}: {e}); write the file again") from None


def _channel_axis(shape: tuple[int, ...], key: str, path: Path) -> int:
    """1 for N,C,H,W and 3 for N,H,W,C, inferred from the image shape."""
    _, a, b, c = shape
    if a == b and c != a:  # square H == W first, channels last
        return 3
    if b == c and a != b:  # channels first, square H == W
        return 1
    if c <= 4 < min(a, b):
        return 3
    if a <= 4 < min(b, c):
        return 1
    raise ConfigError(
        f"{path}: cannot tell whether {key} of shape {shape} is N,H,W,C or N,C,H,W; "
        f"store it as N,C,H,W with 1-4 channels and images larger than 4x4"
    )


def _images(a: np.ndarray, key: str, path: Path) -> np.ndarray:
    """Validated images as N,C,H,W (uint8 or float32)."""
    if a.size == 0 or a.ndim == 0 or a.shape[0] == 0:
        raise ConfigError(f"{path}: {key} is empty (shape {a.shape}); it needs at least one image")
    if a.ndim not in (3, 4):
        raise ConfigError(
            f"{path}: {key} has shape {a.shape} ({a.ndim}-D); images must be N,H,W,C or N,C,H,W (or N,H,W)"
        )
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        with np.errstate(over="ignore"):
            a = a.astype(np.float32, copy=False)
        if not np.isfinite(a).all():  # after the cast: 1e300 is finite in float64, not in float32
            bad = "NaN" if np.isnan(a).any() else "infinite values (as float32)"
            raise ConfigError(f"{path}: {key} contains {bad}; remove or replace them before training")
    else:
        raise ConfigError(
            f"{path}: {key} has dtype {a.dtype}; images must be uint8 (0-255) or float (used as given)"
        )
    if a.ndim == 3:
        return a[:, None]  # N,H,W: one channel
    return a if _channel_axis(a.shape, key, path) == 1 else np.moveaxis(a, 3, 1)


def _labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ConfigError(
            f"{path}: {key} has shape {y.shape}; labels must be 1-D class indices (not one-hot), one per image"
        )
    if y.shape[0] != n:
        raise ConfigError(f"{path}: {key} has {y.shape[0]} labels but there are {n} images; they must match")
    if not np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_:
        raise ConfigError(
            f"{path}: {key} has dtype {y.dtype}; labels must be integer class indices 0..K-1 "
            f"(convert with y.astype(numpy.int64))"
        )
    if y.min() < 0:
        raise ConfigError(f"{path}: {key} has negative label {y.min()}; labels must be class indices 0..K-1")
    return y.astype(np.int64)


def load_npz_arrays(path: str | Path) -> dict[str, np.ndarray | int]:
    """Read and validate the file: images N,C,H,W (uint8 or float32), int64 labels, num_classes."""
    path = Path(path).expanduser()
    raw = _read_npz(path)
    x_train = _images(raw["x_train"], "x_train", path)
    x_test = _images(raw["x_test"], "x_test", path)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ConfigError(
            f"{path}: x_train images are {x_train.shape[1:]} (C,H,W) but x_test images are {x_test.shape[1:]}; "
            f"they must have the same size and layout"
        )
    if x_train.dtype != x_test.dtype:
        raise ConfigError(
            f"{path}: x_train is {x_train.dtype} but x_test is {x_test.dtype}; use one dtype for both"
        )
    y_train = _labels(raw["y_train"], "y_train", len(x_train), path)
    y_test = _labels(raw["y_test"], "y_test", len(x_test), path)
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    if num_classes > len(y_train):
        # More classes than training examples: the labels are ids or targets, not class indices.
        raise ConfigError(
            f"{path}: the largest label {num_classes - 1} is out of range for {len(y_train)} training images; "
            f"labels must be class indices 0..K-1 (re-map them, e.g. numpy.unique(y, return_inverse=True))"
        )
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, "num_classes": num_classes}


def npz_image_size(path: str | Path) -> Optional[tuple[int, int]]:
    """(H, W) of x_train from its .npy header alone (nothing else is read), or None when the file
    cannot tell (then `load_npz_arrays` says what is wrong with it)."""
    try:
        with zipfile.ZipFile(Path(path).expanduser()) as archive, archive.open("x_train.npy") as f:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            shape = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    if len(shape) == 3:
        return int(shape[1]), int(shape[2])
    if len(shape) != 4:
        return None
    try:
        axis = _channel_axis(tuple(shape), "x_train", Path(path))
    except ConfigError:
        return None
    return (int(shape[2]), int(shape[3])) if axis == 1 else (int(shape[1]), int(shape[2]))


def load_npz(cfg: DataConfig, seed: int, device: torch.device) -> TrialData:
    arrays = load_npz_arrays(cfg.root)
    device = torch.device(device)

    def to_device(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(device)

    x = to_device(arrays["x_train"])
    y = to_device(arrays["y_train"])
    train_x, train_y, val_x, val_y = split_validation(x, y, cfg.val_size, seed)
    uint8 = train_x.dtype == torch.uint8
    channels = train_x.shape[1]
    if uint8:
        # Statistics of the training split only (not validation or test), in pixel / 255 units.
        # One channel at a time keeps the float copy small (a fraction of the uint8 data's size x4).
        std_mean = [torch.std_mean(train_x[:, c].to(torch.float32) / 255.0) for c in range(channels)]
        mean = torch.stack([m for _, m in std_mean]).cpu()
        std = torch.stack([s for s, _ in std_mean]).clamp_min(1e-3).cpu()  # constant channel: no / 0
    else:
        mean, std = torch.zeros(channels), torch.ones(channels)
    height, width = train_x.shape[2], train_x.shape[3]
    augment = resolve_augment(cfg.augment, cfg.name, (height, width))
    pipeline = ImagePipeline(Normalize(mean, std, device, uint8_input=uint8), augment)
    return TrialData(
        train_x=train_x,
        train_y=train_y,
        val_x=val_x,
        val_y=val_y,
        test_x=to_device(arrays["x_test"]),
        test_y=to_device(arrays["y_test"]),
        num_classes=int(arrays["num_classes"]),
        input_shape=tuple(int(s) for s in train_x.shape[1:]),
        prepare_train=pipeline.prepare_train,
        prepare_eval=pipeline.prepare_eval,
        augment=augment,
    )
