"""Checkpoints of the full training state, written atomically so a kill at any moment leaves the
previous one intact, and checksummed so that damage afterwards is found before a trial resumes.

Layout: `checkpoints/epoch_NNNN/` holding `state.pt` (model, optimiser, epoch, elapsed time and every
RNG state), `metrics.jsonl` (the metric history up to that epoch, so a trial restored on another node
has its history), `config.yaml`, and `SHA256SUMS` (`sha256sum -c` format) over those three.
Loaded with `weights_only=True`: a checkpoint is data, never code.

Why checksums: the atomic rename protects against a kill while writing, not against what happens to
the files later (a disk or copy that truncates or flips bytes, a partial upload restored by Ray). A
flipped byte inside a tensor still unpickles: without a checksum the trial would silently continue
from garbage. SHA256SUMS is written after the data it covers, read from disk (so it vouches for the
bytes that reached the file), and verified before anything is loaded. Checkpoints of older versions
have no SHA256SUMS; they load unverified (`verify_checkpoint` returns False for them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .config import ConfigError
from .private_files import DIR_MODE, make_private_dirs, open_private, write_private_text

STATE_FILE = "state.pt"
HISTORY_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
CHECKSUM_FILE = "SHA256SUMS"
CHECKSUMMED = (STATE_FILE, HISTORY_FILE, CONFIG_FILE)
_NAME = re.compile(r"^epoch_(\d{4,})$")
_CHECKSUM_LINE = re.compile(r"^([0-9a-f]{64})  (\S+)$")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used (missing, truncated, not ours)."""


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def checkpoint_epoch(path: Path) -> Optional[int]:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    write_private_text(path, "".join(json.dumps(row) + "\n" for row in history))


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(root: Path, epoch: int, state: dict[str, Any], history: list[dict[str, Any]],
                    config_yaml: str) -> Path:
    make_private_dirs(root)
    final = root / checkpoint_name(epoch)
    tmp = root / f".tmp_{checkpoint_name(epoch)}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    os.mkdir(tmp, DIR_MODE)
    with open_private(tmp / STATE_FILE, "wb") as f:
        torch.save(state, f)
    write_history(tmp / HISTORY_FILE, history)
    write_private_text(tmp / CONFIG_FILE, config_yaml)
    # Last, from the files as written: it vouches for exactly the bytes on disk.
    write_private_text(tmp / CHECKSUM_FILE, "".join(f"{_sha256(tmp / name)}  {name}\n" for name in CHECKSUMMED))
    if final.exists():  # a re-run of this epoch after a restart: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def verify_checkpoint(path: Path) -> bool:
    """Check a checkpoint directory against its SHA256SUMS. True: verified; False: it has no
    SHA256SUMS (written before checksums existed). Raises CheckpointError naming the damaged file."""
    path = Path(path)
    sums = path / CHECKSUM_FILE
    if not sums.exists():
        return False
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{sums}: unreadable ({type(e).__name__}); the checkpoint is damaged") from None
    expected = {}
    for line in lines:
        m = _CHECKSUM_LINE.match(line)
        if m is None:
            raise CheckpointError(f"{sums}: damaged (a line is not 'SHA256  FILE'); the checkpoint cannot be trusted")
        expected[m.group(2)] = m.group(1)
    if STATE_FILE not in expected:
        raise CheckpointError(f"{sums}: lists no {STATE_FILE}; the checkpoint cannot be trusted")
    for name, digest in expected.items():
        file = path / name
        if Path(name).name != name or not file.is_file():
            raise CheckpointError(f"{file}: missing from the checkpoint (listed in {CHECKSUM_FILE})")
        if _sha256(file) != digest:
            raise CheckpointError(f"{file}: checksum mismatch (damaged or truncated after it was written)")
    return True


def load_checkpoint(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(state, metric history) of a checkpoint directory (or its state.pt), verified first."""
    path = Path(path)
    state_file = path / STATE_FILE if path.is_dir() else path
    if not state_file.exists():
        raise CheckpointError(f"{path}: not a checkpoint (no {STATE_FILE}); pass a checkpoints/epoch_NNNN directory")
    verify_checkpoint(state_file.parent)
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupted or not a torch file at all
        raise CheckpointError(
            f"{state_file}: cannot be loaded as a checkpoint ({type(e).__name__}); it is truncated or not a "
            f"mixup_core checkpoint: delete it"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{state_file}: not a mixup_core checkpoint (no model/epoch entries)")
    try:
        history = read_history(state_file.parent / HISTORY_FILE)
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{state_file.parent / HISTORY_FILE}: not JSON lines; the checkpoint is damaged") from None
    return state, history


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_epoch(p) is not None and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: checkpoint_epoch(p))


def latest_checkpoint(root: Path) -> Optional[Path]:
    """The newest checkpoint directory, unverified (see `latest_intact_checkpoint`)."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def checkpoint_dirs(root: Path) -> list[Path]:
    """Every epoch_NNNN directory under root, oldest first, whether or not it holds a state.pt."""
    if not Path(root).is_dir():
        return []
    return sorted((p for p in Path(root).iterdir() if p.is_dir() and checkpoint_epoch(p) is not None),
                  key=checkpoint_epoch)


def latest_intact_checkpoint(root: Path, on_damaged: Optional[Callable[[Path, str], None]] = None) -> Optional[Path]:
    """The newest checkpoint under root that verifies and loads, or None when there is none.
    Each newer one that does not is passed to on_damaged(path, reason) before the search goes on."""
    for path in reversed(checkpoint_dirs(root)):
        try:
            load_checkpoint(path)
            return path
        except CheckpointError as e:
            if on_damaged is not None:
                on_damaged(path, str(e))
    return None


def discard_checkpoints_after(root: Path, epoch: int) -> None:
    """Remove the checkpoints of epochs after `epoch`: a trial resumed from `epoch` replaces that
    future (as it replaces the metrics logged after it), and a damaged newer checkpoint left in place
    would count as one of the most recent in `prune_checkpoints` and push out the good ones."""
    for path in checkpoint_dirs(root):
        if checkpoint_epoch(path) > epoch:
            shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(root: Path, keep_last: int, keep_epochs: list[int] | tuple[int, ...] = ()) -> None:
    found = list_checkpoints(root)
    protected = set(keep_epochs)
    for p in found[:-keep_last] if keep_last > 0 else found:
        if checkpoint_epoch(p) not in protected:
            shutil.rmtree(p, ignore_errors=True)
