"""Checkpoints of the full training state, written atomically so a kill at any moment leaves the
previous one intact.

Layout: `checkpoints/epoch_NNNN/` holding `state.pt` (model, optimiser, epoch, elapsed time and every
RNG state), `metrics.jsonl` (the metric history up to that epoch, so a trial restored on another node
has its history) and `config.yaml`. Loaded with `weights_only=True`: a checkpoint is data, never code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from .config import ConfigError

STATE_FILE = "state.pt"
HISTORY_FILE = "metrics.jsonl"
_NAME = re.compile(r"^epoch_(\d{4,})$")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used (missing, truncated, not ours)."""


def checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}"


def checkpoint_epoch(path: Path) -> Optional[int]:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in history))


def read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_checkpoint(root: Path, epoch: int, state: dict[str, Any], history: list[dict[str, Any]],
                    config_yaml: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(epoch)
    tmp = root / f".tmp_{checkpoint_name(epoch)}_{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / STATE_FILE)
    write_history(tmp / HISTORY_FILE, history)
    (tmp / "config.yaml").write_text(config_yaml)
    if final.exists():  # a re-run of this epoch after a restart: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def load_checkpoint(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    path = Path(path)
    state_file = path / STATE_FILE if path.is_dir() else path
    if not state_file.exists():
        raise CheckpointError(f"{path}: not a checkpoint (no {STATE_FILE}); pass a checkpoints/epoch_NNNN directory")
    try:
        state = torch.load(state_file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupted or not a torch file at all
        raise CheckpointError(
            f"{state_file}: cannot be loaded as a checkpoint ({type(e).__name__}); it is truncated or not a "
            f"mixup_core checkpoint: delete it to resume from the previous one"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{state_file}: not a mixup_core checkpoint (no model/epoch entries)")
    history_dir = state_file.parent
    return state, read_history(history_dir / HISTORY_FILE)


def list_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and checkpoint_epoch(p) is not None and (p / STATE_FILE).exists()]
    return sorted(found, key=lambda p: checkpoint_epoch(p))


def latest_checkpoint(root: Path) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep_last: int, keep_epochs: list[int] | tuple[int, ...] = ()) -> None:
    found = list_checkpoints(root)
    protected = set(keep_epochs)
    for p in found[:-keep_last] if keep_last > 0 else found:
        if checkpoint_epoch(p) not in protected:
            shutil.rmtree(p, ignore_errors=True)
