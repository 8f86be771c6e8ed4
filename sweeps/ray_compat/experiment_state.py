"""Reading the trials of a Ray Tune experiment as Ray saved them (`experiment_state-*.json`), the way
`Tuner.restore` reads them: Ray has no public API for it.

Internals used: `ray.train._internal.storage.get_fs_and_path`,
`ray.tune.execution.experiment_state._find_newest_experiment_checkpoint`,
`ray.tune.utils.serialization._loads_with_cloudpickle`, and the saved state's `trial_data` entries
(each a JSON trial state with `trial_id`, `status`, `config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from mixup_core import ConfigError


@dataclass(frozen=True)
class RestoredTrial:
    trial_id: str
    status: str  # Ray's: PENDING, RUNNING, PAUSED, TERMINATED, ERROR
    config: dict[str, Any]


def restored_trials(directory: str) -> Optional[list[RestoredTrial]]:
    """The trials of the newest experiment state in `directory` (a local path or a URI), as Ray reads
    it on restore (None if there is none)."""
    from ray.train._internal.storage import get_fs_and_path
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint
    from ray.tune.utils.serialization import _loads_with_cloudpickle

    fs, fs_path = get_fs_and_path(directory)
    path = _find_newest_experiment_checkpoint(fs_path, fs=fs)
    if path is None:
        return None
    with fs.open_input_stream(path) as f:
        raw = f.readall()
    try:
        state = _loads_with_cloudpickle(raw)
    except ValueError:  # JSONDecodeError: cut short by a driver killed while Ray rewrote it in place
        raise ConfigError(
            f"Ray's saved experiment state {path} is damaged ({len(raw)} bytes): the driver was killed while "
            f"Ray rewrote it (sweeps started before mixup-sweep wrote storage atomically); Ray cannot resume "
            f"from it: start the sweep again under another name (--set name=...)"
        ) from None
    trials = []
    for json_state, _ in state["trial_data"]:
        trial = _loads_with_cloudpickle(json_state)
        trials.append(RestoredTrial(trial["trial_id"], trial["status"], trial.get("config") or {}))
    return trials
