"""Verdicts on the paper's claims (Zou et al. 2023; docs/science.md) from a sweep's per-trial final metrics.

Pure functions over finished trials: no MLflow, no plotting (claim_mlflow.py reads the trials and
writes the verdict onto the parent run, claim_plots.py draws it). A spec declares which claim it
tests with the optional key `claim`:

- `rare_feature` (claim 2): Mixup throughout (stop_epoch null) minus standard training
  (stop_epoch 0) on rare-feature test accuracy.
- `early_stop` (claim 3): every early-stopped arm (stop_epoch E) minus standard training (does it
  keep the gain?) and minus Mixup throughout (is it as good, or better?).
- `decoupling` (claim 1): every decoupled label policy minus standard training (does it keep the
  gain?) and minus standard Mixup, `same` (is it as good?).
- `map`: the rare_feature and early_stop comparisons at every point of a grid over data-model
  parameters (the cells), for a heatmap.

Every comparison is PAIRED by seed (and cell): the same seed draws the same data, features and
initialisation in both arms, so the per-seed difference removes most of the seed-to-seed variance.
Its status is decided by a two-sided 95% t interval over the paired differences:
  holds              the whole interval is above 0
  reversed           the whole interval is below 0
  within seed noise  the interval contains 0
  one seed           n = 1: a difference, but no interval and no verdict
so a sentence never claims more than the data printed next to it carry.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..keys import SEED_KEY, STOP_EPOCH_KEY

CLAIMS = ("decoupling", "rare_feature", "early_stop", "map")
RARE = "test_acc_rare"
COMMON = "test_acc_common"
FEAT_RARE = "feat_rare"
TRAIN_LOSS = "train_loss"
# The per-arm table: the effect, its control, its mechanism in weight space (feat_rare), and in the
# loss (a hard-label arm fits its training batches, train loss -> 0; a soft-label arm cannot).
SUMMARY_METRICS = (RARE, COMMON, FEAT_RARE, TRAIN_LOSS)

STANDARD = "standard"
MIXUP = "Mixup"
POLICY_KEY = "mixup.label_policy"

HOLDS, REVERSED, NOISE, ONE_SEED = "holds", "reversed", "within seed noise", "one seed"

# Two-sided 95% quantiles of Student's t, df = 1..30 (beyond: the normal 1.96). A table rather than
# scipy: the sweep service does not depend on scipy for one number.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


class ClaimError(Exception):
    """The trials cannot answer the claim (missing arms, ambiguous trials); one line for the user."""


def t_quantile_975(df: int) -> float:
    return _T975[df - 1] if df <= len(_T975) else 1.96


# --------------------------------------------------------------------------------------------------
# Trials -> arms
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One finished trial as a claim sees it: typed params (dotted keys) and final-epoch metrics."""

    params: Mapping[str, Any]
    metrics: Mapping[str, float]
    run_id: str = ""


def _fmt(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def policy_label(params: Mapping[str, Any]) -> str:
    """The label-mixing rule of a Mixup trial, with the parameter that rule uses (mixup.py)."""
    policy = params.get(POLICY_KEY, "same") or "same"
    if policy == "same":
        return MIXUP
    if policy == "independent":
        return f"independent a={_fmt(params.get('mixup.label_alpha', 1.0))}"
    if policy == "power":
        return f"power p={_fmt(params.get('mixup.label_power', 2.0))}"
    if policy == "constant":
        return f"constant mu={_fmt(params.get('mixup.label_value', 0.5))}"
    return str(policy)  # threshold: no parameter


def arm_of(params: Mapping[str, Any]) -> str:
    """standard (stop_epoch 0, whatever the policy: labels are never mixed), a Mixup policy throughout
    (stop_epoch null), or a policy early-stopped at E."""
    stop = params.get(STOP_EPOCH_KEY)
    if stop == 0:
        return STANDARD
    label = policy_label(params)
    return label if stop is None else f"{label}, E={stop}"


def early_stop_of(arm: str) -> int | None:
    head, sep, tail = arm.rpartition(", E=")
    return int(tail) if sep and tail.isdigit() else None


def map_axes(trials: Sequence[Trial]) -> tuple[str, ...]:
    """The data-model parameters a sweep varies: every varying key that is not the seed or a Mixup key.
    These are the cells of a map (and () for a sweep at one data-model point)."""
    keys = sorted({k for t in trials for k in t.params})
    varying = [k for k in keys if len({repr(t.params.get(k)) for t in trials}) > 1]
    return tuple(k for k in varying if k != SEED_KEY and not k.startswith("mixup."))


def _sort_key(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))


# --------------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    n: int
    seeds: tuple[Any, ...]
    values: Mapping[str, tuple[float, ...]]  # metric -> per-seed values, in seed order

    def mean(self, metric: str) -> float | None:
        v = self.values.get(metric) or ()
        return statistics.fmean(v) if v else None

    def std(self, metric: str) -> float | None:
        v = self.values.get(metric) or ()
        return statistics.stdev(v) if len(v) > 1 else None


@dataclass(frozen=True)
class Paired:
    """a - b on `metric`, paired by seed over the seeds both arms have."""

    a: str
    b: str
    metric: str
    seeds: tuple[Any, ...]
    diffs: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.diffs) if self.diffs else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.diffs) if self.n > 1 else None

    @property
    def half_width(self) -> float | None:
        """Half the 95% t interval; None below two seeds (no interval can be claimed)."""
        if self.n < 2:
            return None
        return t_quantile_975(self.n - 1) * self.std / math.sqrt(self.n)

    @property
    def ci(self) -> tuple[float, float] | None:
        h = self.half_width
        return None if h is None else (self.mean - h, self.mean + h)

    @property
    def status(self) -> str:
        if self.n == 0:
            return "no paired seeds"
        if self.n == 1:
            return ONE_SEED
        lo, hi = self.ci
        if lo > 0:
            return HOLDS
        if hi < 0:
            return REVERSED
        return NOISE

    @property
    def separated(self) -> bool:
        """The interval excludes 0 (holds or reversed): the difference is beyond seed noise."""
        return self.status in (HOLDS, REVERSED)

    def describe(self) -> str:
        """'+0.55 (paired over 5 seeds, 95% CI [+0.45, +0.65])', or the one-seed form without an interval."""
        if self.n == 0:
            return "no seed has both arms"
        if self.n == 1:
            return f"{self.mean:+.2f} (one seed, {_fmt(self.seeds[0])}: no confidence interval)"
        lo, hi = self.ci
        return f"{self.mean:+.2f} (paired over {self.n} seeds, 95% CI [{_bound(lo)}, {_bound(hi)}])"

    def to_dict(self) -> dict[str, Any]:
        ci = self.ci
        return {"a": self.a, "b": self.b, "metric": self.metric, "n": self.n, "mean": self.mean,
                "std": self.std, "ci95": list(ci) if ci else None, "status": self.status,
                "seeds": list(self.seeds), "diffs": list(self.diffs)}


def _bound(x: float) -> str:
    """Two decimals, three where two would print a nonzero bound as 0.00 (its sign decides the status)."""
    return f"{x:+.3f}" if 0 < abs(x) < 0.005 else f"{x:+.2f}"


def paired(arms: Mapping[str, ArmSummary], a: str, b: str, metric: str) -> Paired:
    va = dict(zip(arms[a].seeds, arms[a].values.get(metric, ())))
    vb = dict(zip(arms[b].seeds, arms[b].values.get(metric, ())))
    seeds = tuple(s for s in arms[a].seeds if s in va and s in vb)
    return Paired(a, b, metric, seeds, tuple(va[s] - vb[s] for s in seeds))


# --------------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One paired comparison and what it means for the claim, in one true sentence."""

    role: str  # "gain" (an arm minus standard) or "vs Mixup" (an arm minus the reference Mixup arm)
    diff: Paired
    sentence: str


@dataclass(frozen=True)
class CellResult:
    cell: tuple[Any, ...]  # values of ClaimResult.axes; () for a single data-model point
    arms: Mapping[str, ArmSummary]  # in display order: standard, Mixup, the others
    comparisons: tuple[Comparison, ...]

    def find(self, a: str, b: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.diff.a == a and c.diff.b == b), None)


@dataclass(frozen=True)
class ClaimResult:
    claim: str
    axes: tuple[str, ...]
    cells: tuple[CellResult, ...]
    headline: str  # the claim's verdict in one or two sentences
    notes: tuple[str, ...] = field(default_factory=tuple)


def _arm_order(arm: str) -> tuple:
    if arm == STANDARD:
        return (0, 0, arm)
    if arm == MIXUP:
        return (1, 0, arm)
    e = early_stop_of(arm)
    return (2, e, arm) if e is not None else (3, 0, arm)


def _summaries(trials: Sequence[Trial]) -> dict[str, ArmSummary]:
    by_arm: dict[str, dict[Any, Trial]] = {}
    for t in trials:
        arm, seed = arm_of(t.params), t.params.get(SEED_KEY)
        seen = by_arm.setdefault(arm, {})
        if seed in seen:  # e.g. two alphas in one sweep: the claim would silently average them
            raise ClaimError(f"two trials are arm '{arm}' with seed {seed} ({seen[seed].run_id} and {t.run_id}); "
                             "a claim compares one trial per arm and seed: vary only what the claim needs")
        seen[seed] = t
    out = {}
    for arm in sorted(by_arm, key=_arm_order):
        seeds = sorted(by_arm[arm], key=_sort_key)
        values = {m: tuple(float(by_arm[arm][s].metrics[m]) for s in seeds if m in by_arm[arm][s].metrics)
                  for m in SUMMARY_METRICS}
        if any(len(v) != len(seeds) for v in values.values() if v):
            raise ClaimError(f"arm '{arm}': some seeds lack {', '.join(SUMMARY_METRICS)}")
        out[arm] = ArmSummary(arm, len(seeds), tuple(seeds), values)
    return out


def _require(arms: Mapping[str, ArmSummary], needed: Iterable[str], claim: str, where: str = "") -> None:
    missing = [a for a in needed if a not in arms]
    if missing:
        raise ClaimError(f"claim {claim} needs the arm(s) {', '.join(missing)}{where}; the sweep has "
                         f"{', '.join(arms) or 'none'} (standard = mixup.stop_epoch 0, Mixup = stop_epoch null, "
                         "label_policy same)")
    if RARE not in next(iter(arms.values())).values or not next(iter(arms.values())).values[RARE]:
        raise ClaimError(f"claim {claim} needs {RARE}: a feature_noise trial logs it")


def _gain_sentence(d: Paired, subject: str) -> str:
    text = f"{subject} - standard on rare test accuracy: {d.describe()}"
    return {HOLDS: f"{text}: the gain holds.",
            REVERSED: f"{text}: reversed (worse than standard).",
            NOISE: f"{text}: within seed noise, no gain shown.",
            ONE_SEED: f"{text}: run more seeds for a verdict."}.get(d.status, text)


def _vs_mixup_sentence(d: Paired, subject: str, reference: str) -> str:
    text = f"{subject} - {reference} on rare test accuracy: {d.describe()}"
    return {HOLDS: f"{text}: better than {reference}.",
            REVERSED: f"{text}: worse than {reference}.",
            NOISE: f"{text}: within seed noise of {reference}.",
            ONE_SEED: f"{text}: run more seeds for a verdict."}.get(d.status, text)


def _compare(arms, a: str, b: str, role: str, reference: str = MIXUP) -> Comparison:
    d = paired(arms, a, b, RARE)
    sentence = _gain_sentence(d, a) if role == "gain" else _vs_mixup_sentence(d, a, reference)
    return Comparison(role, d, sentence)


def _rare_feature_cell(arms) -> list[Comparison]:
    return [_compare(arms, MIXUP, STANDARD, "gain")]


def _early_stop_cell(arms) -> list[Comparison]:
    out = []
    for arm in arms:
        if early_stop_of(arm) is not None and not arm.startswith(MIXUP + ","):
            continue  # an early-stopped decoupled policy: not this claim's arm
        if early_stop_of(arm) is not None:
            out += [_compare(arms, arm, STANDARD, "gain"), _compare(arms, arm, MIXUP, "vs Mixup", "Mixup throughout")]
    return out


def _decoupling_cell(arms) -> list[Comparison]:
    out = [_compare(arms, MIXUP, STANDARD, "gain")]
    for arm in arms:
        if arm not in (STANDARD, MIXUP) and early_stop_of(arm) is None:
            out += [_compare(arms, arm, STANDARD, "gain"), _compare(arms, arm, MIXUP, "vs Mixup", "Mixup (same)")]
    return out


def evaluate(claim: str, trials: Sequence[Trial]) -> ClaimResult:
    """The claim's comparisons in every cell, and its headline verdict."""
    if claim not in CLAIMS:
        raise ClaimError(f"unknown claim {claim!r}; allowed: {', '.join(CLAIMS)}")
    if not trials:
        raise ClaimError("no finished trials")
    axes = map_axes(trials)
    if claim == "map" and len(axes) not in (1, 2):
        raise ClaimError(f"claim map needs a grid over one or two data-model parameters; the sweep varies "
                         f"{', '.join(axes) or 'none'}")
    cells: dict[tuple, list[Trial]] = {}
    for t in trials:
        cells.setdefault(tuple(t.params.get(k) for k in axes), []).append(t)
    needed = {"rare_feature": (STANDARD, MIXUP), "early_stop": (STANDARD, MIXUP), "decoupling": (STANDARD, MIXUP),
              "map": (STANDARD, MIXUP)}[claim]
    per_cell = {"rare_feature": _rare_feature_cell, "early_stop": _early_stop_cell,
                "decoupling": _decoupling_cell, "map": lambda arms: _rare_feature_cell(arms) + _early_stop_cell(arms)}
    results = []
    for cell in sorted(cells, key=lambda c: tuple(_sort_key(v) for v in c)):
        arms = _summaries(cells[cell])
        where = f" at {cell_label(axes, cell)}" if axes else ""
        _require(arms, needed, claim, where)
        comps = per_cell[claim](arms)
        if claim in ("early_stop", "decoupling") and len(comps) <= 1:
            what = "an early-stopped Mixup arm (0 < stop_epoch < epochs)" if claim == "early_stop" \
                else "a decoupled label policy (mixup.label_policy other than same)"
            raise ClaimError(f"claim {claim} needs {what}{where}; the sweep has {', '.join(arms)}")
        results.append(CellResult(cell, arms, tuple(comps)))
    return ClaimResult(claim, axes, tuple(results), headline(claim, results, axes))


def cell_label(axes: Sequence[str], cell: Sequence[Any]) -> str:
    return ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in zip(axes, cell))


def _names(comps: Iterable[Comparison]) -> str:
    return ", ".join(c.diff.a for c in comps) or "none"


def headline(claim: str, cells: Sequence[CellResult], axes: Sequence[str]) -> str:
    """The verdict in words, true for the comparisons it summarises (statuses decide every clause)."""
    if claim == "map":
        gains = [c.find(MIXUP, STANDARD) for c in cells]
        held = sum(g.diff.status == HOLDS for g in gains)
        testable = sum(g.diff.n >= 2 for g in gains)
        text = (f"Mixup's rare-feature gain over standard training holds (95% CI above 0) in {held} of "
                f"{len(cells)} cells of {' x '.join(a.split('.')[-1] for a in axes)}")
        if testable < len(cells):
            text += f" ({len(cells) - testable} cell(s) with one seed: no verdict)"
        early = [c for cell in cells for c in cell.comparisons if c.role == "vs Mixup"]
        if early:
            text += (f"; early-stopped minus Mixup throughout is beyond seed noise in "
                     f"{sum(c.diff.separated for c in early)} of {len(early)} (better in "
                     f"{sum(c.diff.status == HOLDS for c in early)}, worse in {sum(c.diff.status == REVERSED for c in early)}).")
        return text
    if len(cells) != 1:
        return f"{len(cells)} data-model points; see each one's lines."
    comps = cells[0].comparisons
    gain = comps[0] if claim != "early_stop" else None
    if claim == "rare_feature":
        feat = paired(cells[0].arms, MIXUP, STANDARD, FEAT_RARE)
        return (f"{comps[0].sentence} Mechanism, Mixup - standard on feat_rare (the rare feature's largest "
                f"filter correlation): {feat.describe()}, {feat.status}.")
    if claim == "early_stop":
        gains = [c for c in comps if c.role == "gain"]
        vs = [c for c in comps if c.role == "vs Mixup"]
        if all(c.diff.n < 2 for c in gains):
            return "One seed per arm: differences are printed, no verdict."

        def at(cs: Sequence[Comparison]) -> str:  # "20 (+0.24), 60 (+0.49)": the size next to the sign
            return ", ".join(f"{early_stop_of(c.diff.a)} ({c.diff.mean:+.2f})" for c in cs) or "none"

        mixup_gain = paired(cells[0].arms, MIXUP, STANDARD, RARE)
        text = (f"Early-stopped Mixup keeps a rare-feature gain over standard training (95% CI above 0) at "
                f"E = {at([c for c in gains if c.diff.status == HOLDS])}")
        lost = [c for c in gains if c.diff.status != HOLDS]
        if lost:
            text += f", not at E = {at(lost)}"
        text += f". Against Mixup throughout (itself {mixup_gain.mean:+.2f} over standard) it is"
        rel = [f" {word} at E = {at([c for c in vs if c.diff.status == status])}"
               for word, status in (("better", HOLDS), ("within seed noise", NOISE), ("worse", REVERSED))
               if any(c.diff.status == status for c in vs)]
        return text + ";".join(rel) + "."
    # decoupling
    policies = [c for c in comps[1:] if c.role == "gain"]
    vs = {c.diff.a: c for c in comps if c.role == "vs Mixup"}
    if all(c.diff.n < 2 for c in policies):
        return "One seed per arm: differences are printed, no verdict."
    keep = [c for c in policies if c.diff.status == HOLDS and vs[c.diff.a].diff.status != REVERSED]
    part = [c for c in policies if c.diff.status == HOLDS and vs[c.diff.a].diff.status == REVERSED]
    lose = [c for c in policies if c.diff.status != HOLDS]
    text = (f"Standard Mixup's gain: {gain.diff.describe()} ({gain.diff.status}). Decoupled policies that keep "
            f"it (gain holds, not below Mixup beyond noise): {_names(keep)}")
    if part:
        text += f"; that keep part of it (gain holds, but below Mixup): {_names(part)}"
    text += f"; that lose it (no gain beyond noise): {_names(lose)}."
    return text


def format_claim(result: ClaimResult) -> str:
    """The verdict table: per arm the mean ± std over seeds of rare/common accuracy and feat_rare,
    then each comparison's sentence, then the headline."""
    lines = [f"Claim '{result.claim}' (final-epoch test metrics, paired by seed; docs/science.md)"]
    for cell in result.cells:
        if result.axes:
            lines.append(f"  at {cell_label(result.axes, cell.cell)}")
        width = max(len(a) for a in cell.arms)
        lines.append(f"    {'arm':<{width}}  n  {'rare acc':>13}  {'common acc':>13}  {'feat_rare':>12}  {'train loss':>15}")
        for arm, s in cell.arms.items():
            cols = []
            for m, prec in ((RARE, 3), (COMMON, 3), (FEAT_RARE, 2), (TRAIN_LOSS, 4)):
                mean, std = s.mean(m), s.std(m)
                cols.append("-" if mean is None else f"{mean:.{prec}f}" + (f" ± {std:.{prec}f}" if std is not None else ""))
            lines.append(f"    {arm:<{width}}  {s.n}  {cols[0]:>13}  {cols[1]:>13}  {cols[2]:>12}  {cols[3]:>15}")
        lines += [f"    {c.sentence}" for c in cell.comparisons]
    lines.append(f"Verdict: {result.headline}")
    lines += [f"Note: {n}" for n in result.notes]
    return "\n".join(lines)


def claim_to_dict(result: ClaimResult) -> dict[str, Any]:
    return {
        "claim": result.claim,
        "axes": list(result.axes),
        "headline": result.headline,
        "cells": [{
            "cell": dict(zip(result.axes, c.cell)),
            "arms": {a: {"n": s.n, "seeds": list(s.seeds),
                         **{m: {"mean": s.mean(m), "std": s.std(m), "values": list(s.values.get(m, ()))}
                            for m in SUMMARY_METRICS}} for a, s in c.arms.items()},
            "comparisons": [{"role": x.role, "sentence": x.sentence, **x.diff.to_dict()} for x in c.comparisons],
        } for c in result.cells],
    }
