"""Lines of Ray's own output that mislead a mixup-sweep user, left out:

  * "Resume experiment with: Tuner.restore(path=..., trainable=...)" after Ctrl-C / SIGTERM, next to
    our own line (`mixup-sweep resume NAME`); logged by `ray.tune.tune`;
  * "Checkpoint successfully created at: ..." once per checkpoint per trial (every epoch), INFO from
    Ray Train's storage module in every trial worker; nothing a user acts on;
  * "Result logdir: ..." in the progress table: Ray's local staging directory, not where results are
    (the storage path, and MLflow).

Internals used: the logger names `ray.tune.tune`, `ray.train._internal.storage`,
`ray.train.v2._internal.execution.storage`, and `CLIReporter._progress_str` (the table's text).
"""

from __future__ import annotations

import logging

from ray import tune

RESUME_HINT_LOGGER = "ray.tune.tune"
RESUME_HINT = "Resume experiment with:"
CHECKPOINT_LOGGERS = ("ray.train._internal.storage", "ray.train.v2._internal.execution.storage")
RESULT_LOGDIR = "Result logdir:"


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def quiet_driver_output() -> None:
    logger = logging.getLogger(RESUME_HINT_LOGGER)
    if not any(isinstance(f, _DropMessages) for f in logger.filters):
        logger.addFilter(_DropMessages(RESUME_HINT))


def quiet_trial_output() -> None:
    for name in CHECKPOINT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class ProgressTable(tune.CLIReporter):
    """Ray Tune's table reporter without the "Result logdir" line."""

    def _progress_str(self, *args, **kwargs) -> str:
        text = super()._progress_str(*args, **kwargs)
        return "\n".join(line for line in text.split("\n") if not line.startswith(RESULT_LOGDIR))
