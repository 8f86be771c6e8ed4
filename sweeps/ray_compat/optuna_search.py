"""Ray's OptunaSearch, able to say which trials it handed out (see search_state.py: after a resume,
results of a trial it never saw must not reach it).

Internal used: `OptunaSearch._ot_trials` (Ray trial id -> Optuna trial)."""

from __future__ import annotations

from ray.tune.search.optuna import OptunaSearch


class KnowingOptunaSearch(OptunaSearch):
    def knows(self, trial_id: str) -> bool:
        return trial_id in self._ot_trials
