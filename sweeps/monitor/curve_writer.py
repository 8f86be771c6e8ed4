"""While a sweep runs: its curve-history cache (best/curve_cache.py) kept up to date on the parent run
as trials end, so that `best` on a running sweep draws its learning curves from one file as well.

A Ray Tune callback on the driver. At most every `interval_s` (MIXUP_SWEEP_CURVE_CACHE_S, default
300 s), and only when a trial ended since, a thread of its own searches the sweep's runs, fetches the
histories of the trials that ended since and stores the cache again. Off the driver's loop: one
refresh at 2,000 trials costs the store a search of every run plus the new histories, and writes a
file of about 8 bytes a value. The end of the sweep refreshes it once more (the selection,
best/command.py), after this callback's last refresh has ended (`on_experiment_end` waits for it,
at most JOIN_TIMEOUT_S).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from ray import tune

logger = logging.getLogger(__name__)

INTERVAL_ENV = "MIXUP_SWEEP_CURVE_CACHE_S"
DEFAULT_INTERVAL_S = 300.0
JOIN_TIMEOUT_S = 30.0


def interval_s() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)))
    except ValueError:
        return DEFAULT_INTERVAL_S


class CurveCacheWriter(tune.Callback):
    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str, metric: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.metric = metric
        self._client = None
        self._cache = None  # the cache as last written (a restored driver reads the stored one first)
        self._ended_since = 0
        self._last = time.monotonic()
        self._thread: threading.Thread | None = None
        self._warned = False

    def __getstate__(self):  # pickled into Ray's experiment state: no thread, client or cache
        return {"args": (self.tracking_uri, self.experiment_id, self.parent_run_id, self.metric)}

    def __setstate__(self, state):
        self.__init__(*state["args"])

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._ended_since += 1

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._ended_since += 1

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if not self._ended_since or now - self._last < interval_s() or self.refreshing():
            return
        self._ended_since, self._last = 0, now
        self._thread = threading.Thread(target=self.refresh, name="mixup-curve-cache", daemon=True)
        self._thread.start()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        # The selection refreshes the cache once more after this one: let it end first, but never
        # hold up the end of a sweep for it (a store that hangs: MLflow retries for minutes).
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)

    def refreshing(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def refresh(self) -> None:
        """Best effort: a cache only (`best` fetches what it lacks); said once, retried next time."""
        from ..background_imports import join_background_imports

        join_background_imports()  # the driver's imports of the same modules (numpy) have ended
        from ..best import curve_cache
        from ..best.command import read_children
        from ..best.figures import curve_metrics_of
        from ..tracking import check_store_exists, client_for

        try:
            check_store_exists(self.tracking_uri)  # never recreate a vanished SQLite store
            if self._client is None:
                self._client = client_for(self.tracking_uri, create=False)
            parent = self._client.get_run(self.parent_run_id)
            children = read_children(self._client, self.experiment_id, self.parent_run_id, parent)
            cache = self._cache if self._cache is not None else curve_cache.load(self._client, self.parent_run_id)
            self._cache = curve_cache.refresh(self._client, self.parent_run_id, children,
                                              curve_metrics_of(self.metric), cache)
        except Exception as e:  # noqa: BLE001
            if not self._warned:
                logger.warning("curve-history cache not written to MLflow (%s: %s); the sweep goes on, and `mixup-sweep best` "
                               "fetches the curves' histories from the store instead; retried at the next interval",
                               type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
                self._warned = True
