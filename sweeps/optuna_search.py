"""Ray's OptunaSearch, able to say which trials it handed out (see search_recovery.py: after a resume,
results of a trial it never saw must not reach it)."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class KnowingOptunaSearch(OptunaSearch):
    def knows(self, trial_id: str) -> bool:
        return trial_id in self._ot_trials
