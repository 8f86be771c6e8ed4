"""Owner-only outputs: a trial's directory and checkpoints are created mode 0o700, its files 0o600.

A trial's outputs hold the model, its data-derived statistics and the configuration, on machines
often shared with others. The mode is given at creation (os.open / os.mkdir), never by a chmod
afterwards, so there is no moment at which another user can open the file. What exists already
keeps its mode: a user who made the directory group-readable on purpose is not overruled.

`check_creatable(path)` answers, before anything is written, whether `mkdir -p path` can succeed.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO

from .config import ConfigError

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """`mkdir -p` with every directory it creates owner-only (existing ones are left as they are)."""
    path = Path(path)
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for p in reversed(missing):
        try:
            os.mkdir(p, DIR_MODE)
        except FileExistsError:  # created meanwhile by another trial sharing a parent
            pass


def open_private(path: Path, mode: str = "w") -> IO:
    """open(path, mode) for "w", "wb", "a" or "ab", creating the file owner-only."""
    flags = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND}[mode[0]]
    fd = os.open(path, flags, FILE_MODE)
    return os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")


def write_private_text(path: Path, text: str) -> None:
    with open_private(path, "w") as f:
        f.write(text)


def check_creatable(path: Path, what: str) -> None:
    """Refuse, with one line naming `what` (e.g. '--out out'), a directory that cannot be created or
    written: one under a file, on a read-only or virtual file system (/proc), or without permission.
    Probes with a uniquely named directory in the deepest existing ancestor, removed at once, so
    nothing is left behind and two trials checking the same new path do not race."""
    path = Path(path).absolute()
    if path.exists():
        if not path.is_dir():
            raise ConfigError(f"{what}: exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{what}: the directory is not writable; pick a directory you can write to")
        return
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{what}: cannot be created, {ancestor} is a file, not a directory")
    probe = ancestor / f".mixup-train-probe-{uuid.uuid4().hex}"
    try:
        os.mkdir(probe, DIR_MODE)
    except OSError as e:
        raise ConfigError(
            f"{what}: cannot be created under {ancestor} ({e.strerror or type(e).__name__}); "
            f"pick a directory you can write to"
        ) from None
    os.rmdir(probe)
