"""`mixup-sweep best`: choose the Mixup early-stop epoch (and configuration) of a sweep from MLflow alone.

Reading only MLflow means it works for sweeps run anywhere (laptop, cluster, another machine).

Rules (see ../shared/paper-notes.md, Practice):
- Trials are grouped by their configuration minus the seed: the params that vary across the sweep's
  trials, `seed` left out, plus `mixup.stop_epoch` always (it is what is chosen). Each group is
  summarised over its seeds: mean, sample std, min, max, n.
- The selection metric is the FINAL-epoch value (the latest step of the metric history) of the sweep's
  `metric` (default `val_acc`, mode max), never the best epoch of a run and never a test metric unless
  asked: selecting on test overstates the gain. Test accuracy (final `test_acc`, and every
  `test_acc_<group>` such as rare/common) is reported for each group, never used to choose.
- FAILED, unfinished (RUNNING, SCHEDULED, KILLED) trials and finished ones lacking the metric are left
  out and listed with their reason. A trial retried as several runs (same `mixup_sweep.trial_id`)
  counts once: its FINISHED run, else its most recent one.
- Best = highest mean (lowest for mode min). An exact tie on the mean is broken by a rule on the
  configuration, never by the order runs come from MLflow: more seeds first (better supported), then
  the earliest stop epoch (fewest Mixup epochs; null = never counts as the latest), then the other
  keys' values in natural order (numbers ascending, strings alphabetically, null last).
- Every other group is compared with the best seed by seed (paired.py): the mean of the per-seed
  differences and its 95% paired t interval, on the seeds both groups have. A group whose interval
  includes 0 is one the data cannot separate from the best; with fewer than 2 shared seeds there is no
  interval and no verdict. Done overall and within each combination of the other varying keys
  (alpha, label policy, ...), where the groups differ only in the stop epoch.

The selection as a document and a report: report.py. Read from and written to MLflow
(`mixup-sweep best`): command.py.
"""


from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

DEFAULT_METRIC = "val_acc"
DEFAULT_MODE = "max"

from ..keys import SEED_KEY, STOP_EPOCH_KEY, TEST_ACC
from ..labels import group_label, ordered_keys
from .paired import PairedDifference, paired_difference


_FINISHED = "FINISHED"
_TIE_TOLERANCE = 1e-12


class SelectionError(Exception):
    """A user-facing problem; the message is one line. exit_code 2: bad input, 1: nothing to select."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------------
# Records -> groups -> selection. No MLflow here, so tests can feed it directly.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """What selection needs of one trial run. `metrics` holds the latest (final-step) value of each."""

    run_id: str
    trial_id: str
    status: str
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    error: str | None = None
    start_time: int = 0


@dataclass(frozen=True)
class Exclusion:
    trial_id: str
    run_id: str
    status: str
    reason: str
    config: Mapping[str, Any]  # the trial's varying params (seed included), typed


@dataclass(frozen=True)
class TrialGroup:
    """Finished trials sharing one configuration (the varying params minus seed)."""

    config: Mapping[str, Any]  # typed values, e.g. {"mixup.alpha": 1.0, "mixup.stop_epoch": None}
    key: tuple  # raw MLflow strings of the varying keys, in `Grouping.varying_keys` order
    trials: tuple[TrialRecord, ...]


@dataclass(frozen=True)
class Grouping:
    varying_keys: tuple[str, ...]  # the group keys: varying params minus seed, mixup.stop_epoch last
    fixed_params: Mapping[str, Any]
    groups: tuple[TrialGroup, ...]  # in table order
    excluded: tuple[Exclusion, ...]
    superseded_run_ids: tuple[str, ...] = ()  # earlier runs of retried trials, ignored
    n_trials: int = 0  # distinct trials, after collapsing retries


@dataclass(frozen=True)
class Spread:
    """A statistic over seeds. std is the sample std (n-1), None for a single seed."""

    mean: float
    std: float | None
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        vals = [float(v) for v in values]
        std = statistics.stdev(vals) if len(vals) > 1 else None
        return cls(statistics.fmean(vals), std, min(vals), max(vals), len(vals))


@dataclass(frozen=True)
class GroupResult:
    config: Mapping[str, Any]
    label: str
    metric: Spread
    metric_values: tuple[float, ...]  # in seed order
    seeds: tuple[Any, ...]
    run_ids: tuple[str, ...]
    # Shown, never used to choose: "test_acc", "test_acc_rare", "feat_rare", ... (those the trials logged)
    reported: Mapping[str, Spread]

    @property
    def stop_epoch(self) -> int | None:
        return self.config.get(STOP_EPOCH_KEY)

    @property
    def values_by_seed(self) -> dict[Any, float]:
        """seed -> metric value; empty when seeds do not name the trials (no seed param, repeats)."""
        if None in self.seeds or len(set(self.seeds)) != len(self.seeds):
            return {}
        return dict(zip(self.seeds, self.metric_values))


@dataclass(frozen=True)
class Comparison:
    """Another group against the best of its set, seed by seed (paired.py says why)."""

    group: GroupResult
    paired: PairedDifference  # group - best on their shared seeds

    @property
    def separated(self) -> bool | None:
        return self.paired.separated


@dataclass(frozen=True)
class Verdict:
    """The best of a set of groups, and every other group of the set compared with it."""

    best: GroupResult
    comparisons: tuple[Comparison, ...]  # the other groups, best first (rank order)
    tied: tuple[GroupResult, ...]  # other groups with exactly the best mean (and as many seeds)

    @property
    def runner_up(self) -> GroupResult | None:
        return self.comparisons[0].group if self.comparisons else None

    @property
    def not_separated(self) -> tuple[GroupResult, ...]:
        """The groups the data cannot tell from the best: their paired interval includes 0."""
        return tuple(c.group for c in self.comparisons if c.separated is False)

    @property
    def not_paired(self) -> tuple[GroupResult, ...]:
        """The groups sharing fewer than 2 seeds with the best: no interval, no verdict."""
        return tuple(c.group for c in self.comparisons if c.separated is None)

    @property
    def within_noise(self) -> bool | None:
        """Whether the runner-up is within noise of the best: True when tied or when the paired
        interval includes 0, False when it excludes 0, None when it cannot be told (< 2 shared
        seeds) or there is no runner-up."""
        if not self.comparisons:
            return None
        if self.tied:
            return True
        separated = self.comparisons[0].separated
        return None if separated is None else not separated


@dataclass(frozen=True)
class Selection:
    metric: str
    mode: str
    varying_keys: tuple[str, ...]
    fixed_params: Mapping[str, Any]
    rows: tuple[GroupResult, ...]  # table order
    overall: Verdict
    per_combination: tuple[tuple[Mapping[str, Any], Verdict], ...]  # combination = varying keys minus stop_epoch
    excluded: tuple[Exclusion, ...]
    superseded_run_ids: tuple[str, ...]
    n_trials: int
    label_keys: tuple[str, ...] = ()  # the keys the trial labels show (labels.py), seed included

    @property
    def best(self) -> GroupResult:
        return self.overall.best

    @property
    def best_stop_epoch(self) -> int | None:
        return self.best.stop_epoch

    @property
    def best_config(self) -> dict[str, Any]:
        return dict(self.best.config)


def parse_param(value: str | None) -> Any:
    """MLflow stores params as strings; give back the YAML-level value. sweeps/tracking.py writes
    non-strings as JSON ('null', 'true', '5'); str() spellings ('None', 'True') are read too."""
    if value is None or value in ("None", "null"):
        return None
    if value in ("True", "False", "true", "false"):
        return value.lower() == "true"
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.startswith(("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass
    return value


def natural_order(value: Any) -> tuple:
    # Numbers in numeric order, then strings, then null last (null stop_epoch = "never" sits at the end).
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _status_reason(record: TrialRecord) -> str:
    if record.status == "FAILED":
        return f"FAILED: {record.error}" if record.error else "FAILED (no error recorded)"
    if record.status in ("RUNNING", "SCHEDULED"):
        return f"unfinished ({record.status})"
    return record.status if not record.error else f"{record.status}: {record.error}"


def _collapse_retries(records: Iterable[TrialRecord]) -> tuple[list[TrialRecord], list[str]]:
    by_trial: dict[str, list[TrialRecord]] = {}
    for rec in records:
        by_trial.setdefault(rec.trial_id, []).append(rec)
    kept, superseded = [], []
    for runs in by_trial.values():
        runs.sort(key=lambda r: (r.status == _FINISHED, r.start_time, r.run_id), reverse=True)
        kept.append(runs[0])
        superseded.extend(r.run_id for r in runs[1:])
    return kept, sorted(superseded)


def group_trials(records: Iterable[TrialRecord], ignore_keys: Iterable[str] = (SEED_KEY,)) -> Grouping:
    """Group finished trials by configuration minus seed; list every other trial as excluded.

    Group keys = the params that vary across the trials (seed and `ignore_keys` left out), plus
    mixup.stop_epoch always (it is what is being chosen, so it is reported even when fixed), last."""
    trials, superseded = _collapse_retries(records)
    ignore = set(ignore_keys)
    # A trial whose params are not logged yet (just started) must not make every key look varying.
    described = [t for t in trials if t.params]
    all_keys = sorted({k for t in described for k in t.params})
    varying = [k for k in all_keys if len({t.params.get(k) for t in described}) > 1]
    fixed = {k: parse_param(described[0].params.get(k)) for k in all_keys if k not in varying} if described else {}
    group_keys = [k for k in varying if k not in ignore and k != STOP_EPOCH_KEY]
    if STOP_EPOCH_KEY in all_keys:  # rows of one alpha/policy combination then read top-down by stop epoch
        group_keys.append(STOP_EPOCH_KEY)
        fixed.pop(STOP_EPOCH_KEY, None)

    excluded: list[Exclusion] = []
    buckets: dict[tuple, list[TrialRecord]] = {}
    for t in trials:
        if t.status != _FINISHED:
            excluded.append(
                Exclusion(t.trial_id, t.run_id, t.status, _status_reason(t),
                          {k: parse_param(t.params.get(k)) for k in varying})
            )
            continue
        buckets.setdefault(tuple(t.params.get(k) for k in group_keys), []).append(t)

    groups = []
    for key, members in buckets.items():
        config = {k: parse_param(v) for k, v in zip(group_keys, key)}
        members.sort(key=lambda t: (natural_order(parse_param(t.params.get(SEED_KEY))), t.trial_id))
        groups.append(TrialGroup(config, key, tuple(members)))
    groups.sort(key=lambda g: tuple(natural_order(v) for v in g.config.values()))
    excluded.sort(key=lambda e: e.trial_id)
    return Grouping(tuple(group_keys), fixed, tuple(groups), tuple(excluded), tuple(superseded), len(trials))


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _summarise(group: TrialGroup, metric: str, reported: Sequence[str], label_keys: Sequence[str],
               excluded: list[Exclusion]) -> GroupResult | None:
    used = []
    for t in group.trials:
        value = t.metrics.get(metric)
        if _usable(value):
            used.append(t)
        else:
            reason = f"no '{metric}' metric logged" if value is None else f"final '{metric}' is NaN"
            config = dict(group.config) | {SEED_KEY: parse_param(t.params.get(SEED_KEY))}
            excluded.append(Exclusion(t.trial_id, t.run_id, t.status, reason, config))
    if not used:
        return None
    shown = {}
    for name in reported:
        vals = [t.metrics[name] for t in used if _usable(t.metrics.get(name))]
        if vals:
            shown[name] = Spread.of(vals)
    return GroupResult(
        config=dict(group.config),
        label=group_label(group.config, label_keys),
        metric=Spread.of([t.metrics[metric] for t in used]),
        metric_values=tuple(float(t.metrics[metric]) for t in used),
        seeds=tuple(parse_param(t.params.get(SEED_KEY)) for t in used),
        run_ids=tuple(t.run_id for t in used),
        reported=shown,
    )


def _tie_break(r: GroupResult) -> tuple:
    """Among equal means: the earliest stop epoch (null last), then the other keys in natural order."""
    others = tuple(natural_order(r.config[k]) for k in sorted(r.config) if k != STOP_EPOCH_KEY)
    return (natural_order(r.config.get(STOP_EPOCH_KEY)), others)


def rank(results: Sequence[GroupResult], mode: str) -> list[GroupResult]:
    """Best first: by mean; exact ties by more seeds, then `_tie_break` (module doc)."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(results, key=lambda r: (sign * r.metric.mean, -r.metric.n, _tie_break(r)))


def verdict(results: Sequence[GroupResult], mode: str) -> Verdict:
    ranked = rank(results, mode)
    best = ranked[0]
    comparisons = tuple(Comparison(r, paired_difference(best.values_by_seed, r.values_by_seed)) for r in ranked[1:])
    tied = tuple(r for r in ranked[1:]
                 if abs(r.metric.mean - best.metric.mean) <= _TIE_TOLERANCE and r.metric.n == best.metric.n)
    return Verdict(best, comparisons, tied)


def default_reported_metrics(records: Iterable[TrialRecord]) -> list[str]:
    """test_acc first, then every test_acc_<group> (e.g. common, rare), then the feature-noise data
    model's feature measures feat_common and feat_rare, those any trial logged."""
    names = {k for r in records for k in r.metrics}
    tests = sorted(k for k in names if k.startswith(TEST_ACC + "_"))
    features = [k for k in ("feat_common", "feat_rare") if k in names]
    return [TEST_ACC] + tests + features


def _label_keys(grouping: Grouping, sweep_keys: Sequence[str] | None) -> list[str]:
    """The sweep's label keys (what its run names show), plus any group key whose value differs between
    the groups although the sweep does not list it, so that no two groups get the same label. Without
    the sweep's keys: the keys that vary in the data, seed included when it varies."""
    keys = list(sweep_keys) if sweep_keys is not None else []
    for k in grouping.varying_keys:
        if k not in keys and len({repr(g.config.get(k)) for g in grouping.groups}) > 1:
            keys.append(k)
    seeds = {t.params.get(SEED_KEY) for g in grouping.groups for t in g.trials}
    if sweep_keys is None and len(seeds) > 1:
        keys.append(SEED_KEY)
    return ordered_keys(keys)


def select(grouping: Grouping, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
           reported_metrics: Sequence[str] | None = None, label_keys: Sequence[str] | None = None) -> Selection:
    """Summarise each group over seeds, pick the best overall and per combination of the other varying
    keys, and compare every group with the best, paired by seed. `label_keys`: the keys the sweep's
    trial labels show (labels.sweep_label_keys); default: the keys that vary in the data."""
    if mode not in ("max", "min"):
        raise SelectionError(f"mode must be 'max' or 'min', got {mode!r}")
    finished = [t for g in grouping.groups for t in g.trials]
    if reported_metrics is None:
        reported_metrics = default_reported_metrics(finished)
    excluded = list(grouping.excluded)
    keys = _label_keys(grouping, label_keys)
    rows = [r for g in grouping.groups if (r := _summarise(g, metric, reported_metrics, keys, excluded)) is not None]
    if not rows:
        if finished:
            available = sorted({k for t in finished for k in t.metrics})
            raise SelectionError(
                f"no finished trial logged the selection metric '{metric}'; "
                f"metrics they logged: {', '.join(available) or '(none)'} (pick one with --metric)"
            )
        reasons = sorted({e.reason for e in excluded})
        raise SelectionError(
            f"no finished trial to select from ({len(excluded)} excluded: {'; '.join(reasons) or 'no trials'})",
            exit_code=1,
        )
    excluded.sort(key=lambda e: e.trial_id)

    combo_keys = [k for k in grouping.varying_keys if k != STOP_EPOCH_KEY]
    combos: dict[tuple, list[GroupResult]] = {}
    for r in rows:
        combos.setdefault(tuple(r.config.get(k) for k in combo_keys), []).append(r)
    per_combination = tuple(
        ({k: v for k, v in zip(combo_keys, key)}, verdict(members, mode)) for key, members in combos.items()
    )
    return Selection(
        metric=metric, mode=mode, varying_keys=grouping.varying_keys, fixed_params=dict(grouping.fixed_params),
        rows=tuple(rows), overall=verdict(rows, mode), per_combination=per_combination,
        excluded=tuple(excluded), superseded_run_ids=grouping.superseded_run_ids, n_trials=grouping.n_trials,
        label_keys=tuple(keys),
    )
