"""The epochs at which Ray's ASHA compares trials (its rungs), read from the scheduler itself.

A trial must report those epochs to Ray whatever its report interval (trial/reporters.py), so the
driver resolves them once, from the very scheduler the sweep runs with, into the trial context.
ASHA records a trial in a rung at its first result whose epoch is >= the rung's milestone.

Internals used: `AsyncHyperBandScheduler._brackets`, each `_Bracket._rungs` a list of
(milestone, recorded) pairs.
"""

from __future__ import annotations

import math

from ray.tune.schedulers import AsyncHyperBandScheduler


def rung_epochs(scheduler: AsyncHyperBandScheduler) -> frozenset[int]:
    return frozenset(math.ceil(milestone) for bracket in scheduler._brackets for milestone, _ in bracket._rungs)
