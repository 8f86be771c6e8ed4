"""Paired comparison of two groups of trials, seed by seed. Pure: plain numbers in, numbers out.

Why paired: in a sweep, trials that share a seed share their data (the generated feature-noise set,
the validation split) and their initialisation; two stop epochs of one seed are even the same run up to
the earlier stop epoch (prefix sharing). The seed-to-seed spread of each group is then mostly variation
both groups share, and comparing the groups' means against their stds hides real differences. The
difference per seed cancels what they share; its mean and a 95% paired t interval say whether the
data separate the two groups.

Why a t interval rather than a bootstrap: sweeps have 2 to 5 seeds. A bootstrap of 3 differences has
only 10 distinct resamples, and of 2 differences its percentile interval is [min, max]: it would call
two seeds that happen to agree in sign "separated". The t interval is exact for normal differences and
honestly wide for few seeds (t = 12.7 for 2 seeds, 4.30 for 3).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Mapping

CONFIDENCE = 0.95

# Two-sided 95% quantiles of Student's t, t(0.975, df), df = 1..30 (scipy.stats.t.ppf, 6 decimals).
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
         2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
         2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.045230, 2.042272)
_Z975 = 1.959964


def t975(df: int) -> float:
    """t(0.975, df). Beyond the table: the Cornish-Fisher expansion around the normal quantile (error
    below 1e-4 for df > 30), so no scipy is needed for one number."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class PairedDifference:
    """`other - best` of one metric on every seed both groups have, in metric units (for val_acc, a
    negative mean means the other group is worse)."""

    seeds: tuple[Any, ...]  # the seeds both groups have, in the best group's seed order
    differences: tuple[float, ...]
    mean: float | None  # None: no seed in common
    sd: float | None  # sample std of the differences; None below 2 seeds
    low: float | None  # the 95% paired t interval of the mean difference; None below 2 seeds
    high: float | None

    @property
    def n(self) -> int:
        return len(self.differences)

    @property
    def separated(self) -> bool | None:
        """Whether the interval excludes 0 (the data tell the groups apart); None below 2 shared seeds."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0

    @property
    def identical(self) -> bool:
        """The same value on every shared seed (at least one)."""
        return self.n > 0 and all(d == 0 for d in self.differences)


def paired_difference(best: Mapping[Any, float], other: Mapping[Any, float]) -> PairedDifference:
    """Seed -> metric value of the best group and of another group; pairs the seeds both have."""
    seeds = tuple(s for s in best if s in other)
    diffs = tuple(float(other[s]) - float(best[s]) for s in seeds)
    if not diffs:
        return PairedDifference((), (), None, None, None, None)
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return PairedDifference(seeds, diffs, mean, None, None, None)
    sd = statistics.stdev(diffs)
    half = t975(len(diffs) - 1) * sd / math.sqrt(len(diffs))
    return PairedDifference(seeds, diffs, mean, sd, mean - half, mean + half)
