"""Trial packing in a sweep (`resources.pack: N`): N grid trials trained in one process, one Ray trial.

Why: a small trial (ResNet-18 at batch 128) cannot fill a big GPU; N processes sharing it are
time-sliced, while N models in one process can run side by side (mixup_core/packing.py, which also
explains why the result of each trial is exactly what it would be alone).

The plan: the grid's trials, longest first (equal lengths in grid order), cut into as few packs of up
to N as possible, of even sizes, among trials that can train in lockstep: same data, batch size and device (so the same steps per
epoch). Each pack is one Ray trial with config `{"pack": [grid point, ...], "plan_slot": i}`, holding
N x `resources.cpu` and N x `resources.gpu`. Every member still gets its own MLflow child run, with its
own params, metrics, summary and artifacts (trial/packed.py), so `best` and the MLflow UI see
trials as usual. What packing cannot combine with is refused by the spec (`spec._pack_refusal`): Optuna,
ASHA, prefix sharing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..keys import PACK_KEY
from ..spec import Sweep
from .sharing import PlannedTrial, independent_plan


@dataclass
class PlannedPack:
    """One Ray trial of a packed sweep. Quacks like a `PlannedTrial` of kind single for GridSearcher."""

    members: list[PlannedTrial]
    kind: str = "single"
    group: None = None
    epoch: None = None

    @property
    def epochs(self) -> int:
        return max(m.epochs for m in self.members)

    def ray_config(self) -> dict[str, Any]:
        return {PACK_KEY: [dict(m.point) for m in self.members]}


def packs_trials(sweep: Sweep) -> bool:
    return sweep.spec.resources.pack > 1


def _lockstep_key(sweep: Sweep, t: PlannedTrial) -> str:
    cfg = sweep.trial_config(t.point)
    return json.dumps([cfg.data.model_dump(mode="json"), cfg.train.batch_size, cfg.train.device], sort_keys=True)


def pack_plan(sweep: Sweep) -> list[PlannedPack]:
    """The packs of a packed grid sweep (see the module docstring)."""
    size = sweep.spec.resources.pack
    trials = sorted(independent_plan(sweep), key=lambda t: -t.epochs)  # stable: grid order within a length
    by_key: dict[str, list[PlannedTrial]] = {}
    for t in trials:
        by_key.setdefault(_lockstep_key(sweep, t), []).append(t)
    packs = [PlannedPack(chunk) for group in by_key.values() for chunk in _even_chunks(group, size)]
    return sorted(packs, key=lambda p: -p.epochs)


def _even_chunks(items: list, size: int) -> list[list]:
    """As few chunks of at most `size` as possible, their sizes differing by at most one (9 trials in
    packs of 4: 3 + 3 + 3, not 4 + 4 + 1, which would leave one trial alone on its GPU share)."""
    n = -(-len(items) // size)
    sizes = [len(items) // n + (i < len(items) % n) for i in range(n)]  # the larger ones first
    starts = [sum(sizes[:i]) for i in range(n)]
    return [items[a:a + k] for a, k in zip(starts, sizes)]
