"""On `resume`, the searcher agrees with the trials Ray restored, not with its own saved state.

Ray saves the trials (`experiment_state-*.json`) and the search state (which grid slots the searcher
handed out, which trials the concurrency limit counts as running, how many it suggested) side by side
in a staging directory, and uploads that directory with one background copy. A driver killed mid-copy,
or a save that rewrites the files while the previous copy runs, leaves the two from different moments:
  * search state older: the limit still counts a trial that has finished since (Ray never reports it
    again) and, at `max_concurrent`, hands out nothing more: the resumed sweep waits forever;
  * search state newer: it handed out a trial Ray's trial state never recorded: that grid point, or
    that share of Optuna's `n_trials`, is skipped.
`ReconcilingSearchGenerator.restore_from_dir` runs after Ray restored both, in the staging directory
where Ray just put the experiment state it restored from. It re-derives what is derivable from those
trials: the number suggested; the trials the concurrency limit counts as running (every restored trial
not TERMINATED: Ray runs each of them again, and each reports its end); and, where the searcher has a
`reconcile(trials)`, the grid slots taken (grid_searcher.py). A searcher may also say which trials it
`knows`: the limiter forwards results only for those (Optuna's searcher raises on a trial it never saw).

Internals used: `ConcurrencyLimiter.live_trials`, `.num_unfinished_live_trials`, `.cached_results`;
`SearchGenerator._counter`, `._finished`, and `restore_from_dir` being what `Tuner.restore` calls.
"""

from __future__ import annotations

import logging
from typing import Optional

from ray.tune.search import ConcurrencyLimiter, SearchGenerator

from .experiment_state import RestoredTrial, restored_trials

logger = logging.getLogger(__name__)


class ReconcilingConcurrencyLimiter(ConcurrencyLimiter):
    """Ray's ConcurrencyLimiter whose count of running trials is rebuilt from the restored trials."""

    def __init__(self, searcher, max_concurrent: int):
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.unknown_to_searcher: set[str] = set()

    def reconcile(self, trials: list[RestoredTrial]) -> None:
        if hasattr(self.searcher, "reconcile"):  # first: then it knows what it will be told about
            self.searcher.reconcile(trials)
        knows = getattr(self.searcher, "knows", lambda trial_id: True)
        self.live_trials = {t.trial_id for t in trials if t.status != "TERMINATED"}
        self.unknown_to_searcher = {tid for tid in self.live_trials if not knows(tid)}
        self.num_unfinished_live_trials = len(self.live_trials)
        self.cached_results = {}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self.unknown_to_searcher:
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self.unknown_to_searcher:
            self.unknown_to_searcher.discard(trial_id)
            self.live_trials.discard(trial_id)
            self.num_unfinished_live_trials -= 1
            return
        super().on_trial_complete(trial_id, result=result, error=error)


class ReconcilingSearchGenerator(SearchGenerator):
    """Ray's SearchGenerator that, after restoring its saved state, reconciles it with the restored trials."""

    def restore_from_dir(self, dirpath: str) -> None:
        super().restore_from_dir(dirpath)
        trials = restored_trials(dirpath)
        if trials is None:
            logger.warning("no experiment state in %s: the search state is used as saved", dirpath)
            return
        counted, self._counter = self._counter, len(trials)
        self._finished = False  # a lost trial may be left to suggest; the searcher says FINISHED again if not
        if hasattr(self.searcher, "reconcile"):
            self.searcher.reconcile(trials)
        if counted != len(trials):
            logger.warning("the search state counted %d trials, the restored experiment %d: "
                           "continuing from the experiment's (saved at a different moment)", counted, len(trials))
