"""The searcher of every grid sweep: suggests the planned trials (plan/) one at a time.

Without prefix sharing the plan is the grid points in grid order (`--dry-run`'s list); with
`resources.pack` it is the packs (plan/packs.py), each suggested as one trial. Trunks (prefix
sharing) go first, as branches wait for them; then the longest trial that can start, equal lengths in
plan order; a branch only once its branch point exists (the trunk reported epoch >= E, or the point is
on storage after a resume). Each suggestion
carries its plan slot (`plan_slot`), so the trials Ray restores on `resume` say which slots they fill:
`reconcile` rebuilds the searcher's record from them (ray_compat/search_state.py), whatever moment its own
saved state is from.
"""

from __future__ import annotations

import pickle
import time
from typing import Optional

from ray.tune.search import Searcher

from .keys import SHARE_KEY, SLOT_KEY
from .plan.packs import PlannedPack
from .plan.sharing import PlannedTrial
from .trial.branch_points import branch_point_exists


class GridSearcher(Searcher):
    """Suggests the planned trials: trunks first; a branch once its branch point exists."""

    FS_POLL_S = 1.0

    def __init__(self, plan: list[PlannedTrial] | list[PlannedPack], branch_root: str, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.plan = plan
        self.branch_root = branch_root
        self.suggested: dict[int, str] = {}  # plan slot -> Ray trial id
        self.trunk_trials: dict[str, str] = {}  # group -> trunk trial id
        self.trunk_epoch: dict[str, int] = {}  # group -> largest epoch the trunk reported
        self.orphaned: set[str] = set()  # groups whose trunk failed for good
        self._last_poll = 0.0

    def _ready(self, t: PlannedTrial) -> bool:
        if t.group in self.orphaned or self.trunk_epoch.get(t.group, 0) >= t.epoch:
            return True
        if t.group not in self.trunk_trials:
            return False
        # After a resume the trunk may have finished already (no more results): look on storage.
        now = time.monotonic()
        if now - self._last_poll < self.FS_POLL_S:
            return False
        self._last_poll = now
        if branch_point_exists(self.branch_root, t.group, t.epoch):
            self.trunk_epoch[t.group] = max(self.trunk_epoch.get(t.group, 0), t.epoch)
            return True
        return False

    def _pick(self) -> Optional[int]:
        """Trunks first (branches wait for them), then the longest trial that can start: longest first
        keeps the slots busy to the end instead of leaving one long trial running alone; equal lengths
        go in plan order."""
        pending = [i for i in range(len(self.plan)) if i not in self.suggested]
        trunks = [i for i in pending if self.plan[i].kind == "trunk"]
        if trunks:
            return trunks[0]
        ready = [i for i in pending if self.plan[i].kind == "single"]
        ready += [i for i in pending if self.plan[i].kind == "branch" and self._ready(self.plan[i])]
        return max(ready, key=lambda i: (self.plan[i].epochs, -i)) if ready else None

    def suggest(self, trial_id: str):
        if len(self.suggested) == len(self.plan):
            return Searcher.FINISHED
        i = self._pick()
        if i is None:
            return None  # branches wait for their trunk
        t = self.plan[i]
        self.suggested[i] = trial_id
        config = {**t.ray_config(), SLOT_KEY: i}
        if t.kind == "trunk":
            self.trunk_trials[t.group] = trial_id
            config[SHARE_KEY]["root"] = self.branch_root
        elif t.kind == "branch":
            if t.group in self.orphaned and not branch_point_exists(self.branch_root, t.group, t.epoch):
                del config[SHARE_KEY]  # no trunk to branch from: train from scratch (same result)
            else:
                config[SHARE_KEY].update(root=self.branch_root, trunk_trial_id=self.trunk_trials[t.group])
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        for group, tid in self.trunk_trials.items():
            if tid == trial_id and "epoch" in result:
                self.trunk_epoch[group] = max(self.trunk_epoch.get(group, 0), int(result["epoch"]))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if error:
            self.orphaned.update(g for g, tid in self.trunk_trials.items() if tid == trial_id)

    # -- resume ----------------------------------------------------------------------------------

    def knows(self, trial_id: str) -> bool:
        return trial_id in self.suggested.values()

    def reconcile(self, trials) -> None:
        """Make the record agree with the trials Ray restored (`ray_compat.experiment_state.RestoredTrial`s): a slot is
        suggested iff a restored trial fills it. A slot whose trial Ray lost is suggested again (`resume`
        deleted its orphaned MLflow run); a restored trial this record missed
        is not suggested twice. What the record says about a trunk holds only for the same trial."""
        self.suggested = {int(t.config[SLOT_KEY]): t.trial_id for t in trials if SLOT_KEY in t.config}
        trunks = {self.plan[i].group: tid for i, tid in self.suggested.items() if self.plan[i].kind == "trunk"}
        self.trunk_epoch = {g: e for g, e in self.trunk_epoch.items() if self.trunk_trials.get(g) == trunks.get(g)}
        self.orphaned = {g for g in self.orphaned if self.trunk_trials.get(g) == trunks.get(g)}
        self.trunk_trials = trunks

    # -- saved with Ray's experiment state -------------------------------------------------------

    def get_state(self) -> dict:
        return {k: getattr(self, k) for k in ("suggested", "trunk_trials", "trunk_epoch", "orphaned")}

    def set_state(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.set_state(pickle.load(f))
