"""Branch points of prefix sharing (plan/sharing.py) on the sweep's storage: a local path or a URI
(s3://...), through pyarrow.fs, so trunks and branches on different nodes need no shared disk.

`{experiment}/branch_points/{group}/epoch_EEEE/` holds the trunk's checkpoint at epoch E; `_COMPLETE`
is written after the copy, and a complete point is never rewritten, so a branch never reads a
half-written one.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

COMPLETE_MARKER = "_COMPLETE"


def branch_point_uri(root: str, group: str, epoch: int) -> str:
    return f"{root.rstrip('/')}/{group}/epoch_{epoch:04d}"


def _fs(uri: str):
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(uri)


def branch_point_exists(root: str, group: str, epoch: int) -> bool:
    import pyarrow.fs

    fs, path = _fs(branch_point_uri(root, group, epoch))
    return fs.get_file_info(f"{path}/{COMPLETE_MARKER}").type == pyarrow.fs.FileType.File


def write_branch_point(checkpoint_dir: Path, root: str, group: str, epoch: int) -> None:
    """Copy the trunk's checkpoint, then mark it complete. Never rewrites a complete point."""
    import pyarrow.fs

    if branch_point_exists(root, group, epoch):
        return
    fs, path = _fs(branch_point_uri(root, group, epoch))
    fs.create_dir(path, recursive=True)
    pyarrow.fs.copy_files(str(checkpoint_dir), path, source_filesystem=pyarrow.fs.LocalFileSystem(),
                          destination_filesystem=fs)
    with fs.open_output_stream(f"{path}/{COMPLETE_MARKER}") as out:
        out.write(b"")


def local_branch_point(root: str, group: str, epoch: int, stack: contextlib.ExitStack) -> Path:
    """The branch point as a local directory (downloaded to a temp dir, kept until `stack` closes)."""
    import pyarrow.fs

    fs, path = _fs(branch_point_uri(root, group, epoch))
    if isinstance(fs, pyarrow.fs.LocalFileSystem):
        return Path(path)
    local = stack.enter_context(tempfile.TemporaryDirectory(prefix="branch_point_"))
    pyarrow.fs.copy_files(path, local, source_filesystem=fs, destination_filesystem=pyarrow.fs.LocalFileSystem())
    return Path(local)
