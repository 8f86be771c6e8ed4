"""A trial whose Ray checkpoint is gone, or damaged, restores from the newest checkpoint that survives.

Ray keeps `num_to_keep` checkpoints per trial and deletes an older one as soon as a newer one is
registered, but it saves the experiment state (what `resume` restores) only every few seconds. A
driver killed in between leaves a saved state that names a checkpoint already deleted, and Ray then
refuses to restore that trial ("does not exist on storage anymore") on every retry: it ends FAILED.
The newer checkpoints are still in the trial's directory. This mixin, given to Ray's function
trainable through the function's `__mixins__`, restores from the newest of them that loads (a kill
mid-upload can leave the last one partial), or from nothing when none does. Their epochs reached
MLflow before Ray saw the checkpoint, and `TrialRun` skips epochs it already has.

Internals used: a function trainable's `__mixins__` (classes Ray mixes into the actor class it builds
from the function) and `FunctionTrainable.restore(checkpoint_result)` with its `.checkpoint`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Optional

import pyarrow.fs as pafs
from ray import tune

from ..keys import PACK_MEMBER_DIR

logger = logging.getLogger(__name__)

_RAY_CHECKPOINT_DIR = re.compile(r"^checkpoint_\d+$")


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def _last_epoch(fs: pafs.FileSystem, directory: str) -> int:
    """The last epoch in a checkpoint's metric history (0 when unreadable)."""
    from mixup_core import HISTORY_FILE  # mixup_core.checkpoint imports torch: not at driver start

    try:
        with fs.open_input_stream(f"{directory}/{HISTORY_FILE}") as f:
            lines = [line for line in f.read().decode().splitlines() if line.strip()]
        return int(json.loads(lines[-1])["epoch"]) if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def _loads(checkpoint: tune.Checkpoint) -> bool:
    """Whether the checkpoint loads and its checksums hold: a trial's, or every member's of a pack's."""
    from mixup_core import CheckpointError, load_checkpoint  # torch: only where a checkpoint is read

    try:
        with checkpoint.as_directory() as directory:
            root = Path(directory)
            members = sorted(p for p in root.glob(PACK_MEMBER_DIR.format("*")) if p.is_dir())
            for part in members or [root]:
                load_checkpoint(part)
        return True
    except (CheckpointError, OSError):
        return False


def surviving_checkpoint(missing: tune.Checkpoint) -> Optional[tune.Checkpoint]:
    """The newest loadable checkpoint beside `missing` in its trial directory. Newest by epoch, not by
    Ray's directory index: after a restore Ray may number new checkpoints below old ones."""
    fs = missing.filesystem
    trial_dir = missing.path.rstrip("/").rsplit("/", 1)[0]
    infos = fs.get_file_info(pafs.FileSelector(trial_dir, allow_not_found=True))
    candidates = [i.path for i in infos if i.type == pafs.FileType.Directory and _RAY_CHECKPOINT_DIR.match(i.base_name)]
    for path in sorted(candidates, key=lambda p: _last_epoch(fs, p), reverse=True):
        checkpoint = tune.Checkpoint(path, filesystem=fs)
        if _loads(checkpoint):
            return checkpoint
    return None


class RestoreFromSurvivingCheckpoint:
    """Mixin for Ray's FunctionTrainable: see the module docstring."""

    def restore(self, checkpoint_result):
        checkpoint = getattr(checkpoint_result, "checkpoint", None)
        if checkpoint is not None:
            # Gone (deleted after Ray last saved its state), or damaged (its checksums fail: Ray would
            # retry the same checkpoint until the trial fails): the newest one that loads instead.
            problem = ("is gone" if not _exists(checkpoint.filesystem, checkpoint.path)
                       else None if _loads(checkpoint) else "is damaged (checksum mismatch or truncated)")
            if problem is not None:
                replacement = surviving_checkpoint(checkpoint)
                if replacement is None:
                    logger.warning("checkpoint %s %s and no other loads: the trial starts over", checkpoint.path, problem)
                    return None
                logger.warning("checkpoint %s %s: restoring from %s", checkpoint.path, problem, replacement.path)
                checkpoint_result.checkpoint = replacement
        return super().restore(checkpoint_result)


def restores_from_surviving_checkpoint(trainable):
    """Decorates a function trainable: Ray mixes `RestoreFromSurvivingCheckpoint` into the actor class
    it builds from the function."""
    trainable.__mixins__ = (RestoreFromSurvivingCheckpoint,)
    return trainable
