"""Live progress of a running sweep on its MLflow parent run, so the MLflow UI shows how far a sweep
is and `mixup-sweep status` reads it with one request from anywhere.

A Ray Tune callback on the driver. Every few seconds (and at the end) it derives the counts from Ray's
own trial list, nothing kept on the side (so a resumed sweep's numbers are right from the first
update): trials finished / running / failed (counted per trial: a pack of N counts N, a trunk that is
not a grid point counts none), epochs trained of the total (a branch counts the epochs after its
branch point), `progress` = their ratio, and `driver_heartbeat` (unix time), which tells `status` that
the driver is alive. Metrics are logged only when they changed, or every `HEARTBEAT_S` for the beat.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ray import tune

from .. import keys

logger = logging.getLogger(__name__)

UPDATE_S = 2.0
HEARTBEAT_S = 30.0


def _members(trial) -> int:
    config = trial.config or {}
    if keys.PACK_KEY in config:
        return len(config[keys.PACK_KEY])
    share = config.get(keys.SHARE_KEY) or {}
    return 0 if share.get("role") == "trunk" and not share.get("is_user_trial", True) else 1


def _epochs(trial) -> tuple[int, int]:
    """(epochs this Ray trial trained, epochs it will train when it runs to the end), per member."""
    config = trial.config or {}
    share = config.get(keys.SHARE_KEY) or {}
    start = int(share.get("epoch") or 0) if share.get("role") == "branch" else 0
    result = trial.last_result or {}
    planned = int(result.get(keys.PLANNED_EPOCHS, 0)) - start
    done = max(0, min(int(result.get("epoch", start)) - start, planned)) if planned > 0 else 0
    if trial.status == "TERMINATED":  # ran to its end, or stopped by the scheduler: nothing left
        done = planned = max(done, planned)
    n = max(1, len(config[keys.PACK_KEY])) if keys.PACK_KEY in config else 1
    return done * n, planned * n


def progress_metrics(trials, trials_total: int, epochs_total: int) -> dict[str, float]:
    counts = {"TERMINATED": 0, "RUNNING": 0, "ERROR": 0}
    epochs_done = 0
    for trial in trials:
        if trial.status in counts:
            counts[trial.status] += _members(trial)
        epochs_done += _epochs(trial)[0]
    epochs_done = min(epochs_done, epochs_total) if epochs_total else epochs_done
    return {
        keys.TRIALS_TOTAL: float(trials_total),
        keys.TRIALS_FINISHED: float(counts["TERMINATED"]),
        keys.TRIALS_RUNNING: float(counts["RUNNING"]),
        keys.TRIALS_FAILED: float(counts["ERROR"]),
        keys.EPOCHS_DONE: float(epochs_done),
        keys.EPOCHS_TOTAL: float(epochs_total),
        keys.PROGRESS: round(epochs_done / epochs_total, 4) if epochs_total else 0.0,
    }


class SweepProgress(tune.Callback):
    def __init__(self, tracking_uri: str, parent_run_id: str, trials_total: int, epochs_total: int):
        self.tracking_uri = tracking_uri
        self.parent_run_id = parent_run_id
        self.trials_total = trials_total
        self.epochs_total = epochs_total
        self._client = None
        self._last: dict[str, float] = {}
        self._last_update = 0.0
        self._last_beat = 0.0
        self._warned = False

    def __getstate__(self):  # pickled into Ray's experiment state: no live client, no stale counts
        return {**self.__dict__, "_client": None, "_last": {}, "_last_update": 0.0, "_last_beat": 0.0}

    def update(self, trials, force: bool = False) -> None:
        now = time.time()
        if not force and now - self._last_update < UPDATE_S:
            return
        self._last_update = now
        metrics = progress_metrics(trials, self.trials_total, self.epochs_total)
        changed = {k: v for k, v in metrics.items() if self._last.get(k) != v}
        if changed or force or now - self._last_beat >= HEARTBEAT_S:
            changed[keys.HEARTBEAT] = now
            self._log(changed, now)
            self._last.update(metrics)
            self._last_beat = now

    def _log(self, metrics: dict[str, float], now: float) -> None:
        """Best effort: progress is for watching; a store that fails here fails the trials too, and the
        driver says so once (runner._finish). The next update retries."""
        from mlflow.entities import Metric

        from ..tracking import check_store_exists, client_for

        try:
            check_store_exists(self.tracking_uri)  # never recreate a vanished SQLite store
            if self._client is None:
                self._client = client_for(self.tracking_uri, create=False)
            ts = int(now * 1000)  # step: seconds, increasing across a resume too
            self._client.log_batch(self.parent_run_id,
                                   metrics=[Metric(k, float(v), ts, int(now)) for k, v in metrics.items()])
        except Exception as e:  # noqa: BLE001
            if not self._warned:
                logger.warning("live progress not written to MLflow (%s: %s); the sweep goes on",
                               type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                self._warned = True

    # Ray Tune's hooks: every loop of the driver, and once at the end.
    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.update(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.update(trials, force=True)


def record_driver(client, parent_run_id: str, trials_total: int, epochs_total: int) -> None:
    """At `run` and `resume`: who drives the sweep now (host; the Ray job and the address it was
    submitted to when `mixup-sweep submit` started it, from the job's environment) and the totals,
    so `status` has them before the first update."""
    import os
    import socket

    from mlflow.entities import Metric, RunTag

    tags = {keys.DRIVER_HOST_TAG: socket.gethostname()}
    for tag, env in ((keys.JOB_ID_TAG, keys.JOB_ID_ENV), (keys.JOB_ADDRESS_TAG, keys.JOB_ADDRESS_ENV)):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    now = time.time()
    metrics = {keys.TRIALS_TOTAL: trials_total, keys.EPOCHS_TOTAL: epochs_total, keys.HEARTBEAT: now}
    client.log_batch(parent_run_id, tags=[RunTag(k, v) for k, v in tags.items()],
                     metrics=[Metric(k, float(v), int(now * 1000), int(now)) for k, v in metrics.items()])
