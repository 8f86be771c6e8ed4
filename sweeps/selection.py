"""`mixup-sweep best`: choose the Mixup early-stop epoch (and configuration) of a sweep from MLflow alone.

Reading only MLflow means it works for sweeps run anywhere (laptop, cluster, another machine).

Rules (see paper-notes.md, Practice):
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
- Best = highest mean (lowest for mode min); ties broken by more seeds, then smaller std, then the
  earlier configuration in table order (e.g. the earlier stop epoch). The result is flagged as within
  seed noise when the gap to the runner-up is at most the larger of their two stds.

Written onto the sweep's parent run (idempotent: running `best` again replaces, never duplicates):
- metric `best_stop_epoch` at step 0; Mixup throughout (stop_epoch null) is encoded as -1, and the tag
  `mixup_sweep.best_stop_epoch` holds `null` (or the integer) so nobody has to know the encoding.
  Metrics `selected_<metric>_mean/_std` and `selected_test_acc_mean/_std` likewise. A metric is only
  logged when its value changed, so its history grows only when the selection really changes.
- tags `mixup_sweep.best_config` (JSON of the chosen varying params), `mixup_sweep.selection_metric`,
  `mixup_sweep.selection_mode`, `mixup_sweep.selection_within_noise`. Tags rather than params because
  MLflow params are immutable and the selection changes as trials are added.
- artifacts under `selection/`: `selection.json` (the `--json` document), `selection.md` (the text
  report), `metric_vs_stop_epoch.png`, `learning_curves.png` (fixed names, so they are overwritten).
A selection on another metric than the sweep's (`--metric`) is printed, never written: an exploratory
look must not replace the sweep's recorded choice.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from sweeps import plots

DEFAULT_METRIC = "val_acc"
DEFAULT_MODE = "max"

ROLE_TAG = "mixup_sweep.role"
TRIAL_ID_TAG = "mixup_sweep.trial_id"
ERROR_TAG = "mixup_sweep.error"
PARENT_RUN_TAG = "mlflow.parentRunId"
SEED_KEY = "seed"
STOP_EPOCH_KEY = "mixup.stop_epoch"
TEST_ACC = "test_acc"

NEVER_STOP_METRIC_VALUE = -1.0  # best_stop_epoch metric for "Mixup throughout" (stop_epoch null)
ARTIFACT_DIR = "selection"
JSON_ARTIFACT = "selection.json"
TEXT_ARTIFACT = "selection.md"
STOP_EPOCH_PLOT = "metric_vs_stop_epoch.png"
CURVES_PLOT = "learning_curves.png"

_FINISHED = "FINISHED"
_TIE_TOLERANCE = 1e-12


class SelectionError(Exception):
    """A user-facing problem; the message is one line. exit_code 2: bad input, 1: nothing to select."""

    def __init__(self, message: str, exit_code: int = 2):
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------------
# Pure part: records -> groups -> selection -> report. No MLflow here, so tests can feed it directly.
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
    tests: Mapping[str, Spread]  # "test_acc", "test_acc_rare", ... (those the trials logged)

    @property
    def stop_epoch(self) -> int | None:
        return self.config.get(STOP_EPOCH_KEY)


@dataclass(frozen=True)
class Verdict:
    """How the best of a set of groups compares with the runner-up."""

    best: GroupResult
    runner_up: GroupResult | None
    tied: tuple[GroupResult, ...]  # other groups with exactly the best mean
    within_noise: bool | None  # None: cannot tell (single seeds, or no runner-up)
    within_one_std: tuple[GroupResult, ...]  # every other group whose gap <= max of the two stds


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


def format_value(value: Any, key: str = "") -> str:
    if value is None:
        return "never" if key == STOP_EPOCH_KEY else "null"
    return str(value)


def config_label(config: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={format_value(v, k)}" for k, v in config.items()) or "(single configuration)"


def _natural(value: Any) -> tuple:
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
        members.sort(key=lambda t: (_natural(parse_param(t.params.get(SEED_KEY))), t.trial_id))
        groups.append(TrialGroup(config, key, tuple(members)))
    groups.sort(key=lambda g: tuple(_natural(v) for v in g.config.values()))
    excluded.sort(key=lambda e: e.trial_id)
    return Grouping(tuple(group_keys), fixed, tuple(groups), tuple(excluded), tuple(superseded), len(trials))


def _usable(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def _summarise(group: TrialGroup, metric: str, test_metrics: Sequence[str], excluded: list[Exclusion]) -> GroupResult | None:
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
    tests = {}
    for name in test_metrics:
        vals = [t.metrics[name] for t in used if _usable(t.metrics.get(name))]
        if vals:
            tests[name] = Spread.of(vals)
    return GroupResult(
        config=dict(group.config),
        label=config_label(group.config),
        metric=Spread.of([t.metrics[metric] for t in used]),
        metric_values=tuple(float(t.metrics[metric]) for t in used),
        seeds=tuple(parse_param(t.params.get(SEED_KEY)) for t in used),
        run_ids=tuple(t.run_id for t in used),
        tests=tests,
    )


def rank(results: Sequence[GroupResult], mode: str) -> list[GroupResult]:
    """Best first. Ties on the mean: more seeds, then smaller std, then table order."""
    sign = -1.0 if mode == "max" else 1.0
    order = {id(r): i for i, r in enumerate(results)}
    return sorted(
        results,
        key=lambda r: (sign * r.metric.mean, -r.metric.n,
                       r.metric.std if r.metric.std is not None else math.inf, order[id(r)]),
    )


def _noise(a: GroupResult, b: GroupResult) -> float | None:
    stds = [s for s in (a.metric.std, b.metric.std) if s is not None]
    return max(stds) if stds else None


def verdict(results: Sequence[GroupResult], mode: str) -> Verdict:
    ranked = rank(results, mode)
    best = ranked[0]
    runner_up = ranked[1] if len(ranked) > 1 else None
    tied = tuple(r for r in ranked[1:] if abs(r.metric.mean - best.metric.mean) <= _TIE_TOLERANCE)
    close = []
    for r in ranked[1:]:
        noise = _noise(best, r)
        if noise is not None and abs(best.metric.mean - r.metric.mean) <= noise:
            close.append(r)
    within: bool | None = None
    if runner_up is not None:
        noise = _noise(best, runner_up)
        if tied:
            within = True
        elif noise is not None:
            within = abs(best.metric.mean - runner_up.metric.mean) <= noise
    return Verdict(best, runner_up, tied, within, tuple(close))


def default_test_metrics(records: Iterable[TrialRecord]) -> list[str]:
    """test_acc first, then every test_acc_<group> (e.g. common, rare) any trial logged."""
    names = {k for r in records for k in r.metrics if k.startswith(TEST_ACC + "_")}
    return [TEST_ACC] + sorted(names)


def select(grouping: Grouping, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE,
           test_metrics: Sequence[str] | None = None) -> Selection:
    """Summarise each group over seeds and pick the best overall and per alpha/label-policy combination."""
    if mode not in ("max", "min"):
        raise SelectionError(f"mode must be 'max' or 'min', got {mode!r}")
    finished = [t for g in grouping.groups for t in g.trials]
    if test_metrics is None:
        test_metrics = default_test_metrics(finished)
    excluded = list(grouping.excluded)
    rows = [r for g in grouping.groups if (r := _summarise(g, metric, test_metrics, excluded)) is not None]
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
    )


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def row_to_dict(r: GroupResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "params": dict(r.config),
        "label": r.label,
        "n": r.metric.n,
        "metric_mean": _clean(r.metric.mean),
        "metric_std": _clean(r.metric.std),
        "metric_min": _clean(r.metric.min),
        "metric_max": _clean(r.metric.max),
        "metric_values": [_clean(v) for v in r.metric_values],
        "seeds": list(r.seeds),
    }
    for name, s in r.tests.items():
        row[f"{name}_mean"] = _clean(s.mean)
        row[f"{name}_std"] = _clean(s.std)
    row.setdefault(f"{TEST_ACC}_mean", None)
    row.setdefault(f"{TEST_ACC}_std", None)
    row["run_ids"] = list(r.run_ids)
    return row


def _verdict_to_dict(v: Verdict) -> dict[str, Any]:
    return {
        "best_stop_epoch": v.best.stop_epoch,
        "best_config": dict(v.best.config),
        "metric_mean": _clean(v.best.metric.mean),
        "metric_std": _clean(v.best.metric.std),
        "n": v.best.metric.n,
        "runner_up": dict(v.runner_up.config) if v.runner_up else None,
        "within_noise": v.within_noise,
    }


def selection_to_dict(sel: Selection, **context: Any) -> dict[str, Any]:
    """The `--json` document (also stored as selection/selection.json on the parent run)."""
    best = row_to_dict(sel.best)
    ov = sel.overall
    return {
        **context,
        "metric": sel.metric,
        "mode": sel.mode,
        "metric_definition": "value at the final epoch (latest step of the metric history), per trial",
        "best_stop_epoch": sel.best_stop_epoch,
        "best_config": sel.best_config,
        "best": best,
        "runner_up": row_to_dict(ov.runner_up) if ov.runner_up else None,
        "within_noise": ov.within_noise,
        "ties": [dict(r.config) for r in ov.tied],
        "within_one_std_of_best": [dict(r.config) for r in ov.within_one_std],
        "best_per_combination": [{"combination": dict(c), **_verdict_to_dict(v)} for c, v in sel.per_combination],
        "table": [row_to_dict(r) for r in sel.rows],
        "excluded": [
            {"trial_id": e.trial_id, "run_id": e.run_id, "status": e.status, "reason": e.reason, "params": dict(e.config)}
            for e in sel.excluded
        ],
        "n_trials": sel.n_trials,
        "n_used": sum(r.metric.n for r in sel.rows),
        "superseded_run_ids": list(sel.superseded_run_ids),
        "varying_keys": list(sel.varying_keys),
        "fixed_params": dict(sel.fixed_params),
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _mean_std(s: Spread | None) -> str:
    if s is None:
        return "-"
    return f"{_fmt(s.mean)} ± {_fmt(s.std)}" if s.std is not None else f"{_fmt(s.mean)} (1 seed)"


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_table(sel: Selection) -> list[str]:
    """Aligned table, one row per group, the overall best marked with '*'."""
    test_names = []
    for r in sel.rows:
        test_names += [n for n in r.tests if n not in test_names]
    keys = list(sel.varying_keys)
    header = [" "] + (keys or ["config"]) + ["n", f"{sel.metric} mean ± std", "min .. max"]
    header += [f"{n} mean ± std" for n in test_names]
    lines = [header]
    for r in sel.rows:
        cells = ["*" if r is sel.best else " "]
        cells += [format_value(r.config.get(k), k) for k in keys] or ["(all)"]
        cells += [str(r.metric.n), _mean_std(r.metric), f"{_fmt(r.metric.min)} .. {_fmt(r.metric.max)}"]
        cells += [_mean_std(r.tests.get(n)) for n in test_names]
        lines.append(cells)
    return _align(lines)


def format_report(sel: Selection, sweep: str = "", parent_run_id: str = "", tracking_uri: str = "") -> str:
    """The human-readable report printed by `mixup-sweep best` and stored as selection.md."""
    out: list[str] = []
    where = f" (parent run {parent_run_id}, {tracking_uri})" if parent_run_id else ""
    out.append(f"Sweep '{sweep}'{where}")
    out.append(f"Selection metric: final-epoch {sel.metric} ({sel.mode}), mean over seeds; "
               f"grouped by configuration minus seed")
    used = sum(r.metric.n for r in sel.rows)
    out.append(f"Trials: {used} of {sel.n_trials} used, {len(sel.excluded)} excluded")
    if sel.excluded:
        reasons: dict[str, int] = {}
        for e in sel.excluded:
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        out.append("Excluded (not in the table): " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items())))
        for e in sel.excluded[:20]:
            out.append(f"  - trial {e.trial_id} ({config_label(e.config)}): {e.reason}")
        if len(sel.excluded) > 20:
            out.append(f"  ... and {len(sel.excluded) - 20} more (see --json)")
    if sel.superseded_run_ids:
        out.append(f"Ignored {len(sel.superseded_run_ids)} earlier run(s) of retried trials.")
    out.append("")
    out.extend(format_table(sel))
    out.append("")

    if len(sel.per_combination) > 1 and STOP_EPOCH_KEY in sel.varying_keys:
        out.append("Best stop_epoch per combination:")
        for combo, v in sel.per_combination:
            note = ""
            if v.within_noise and v.runner_up is not None:
                note = f"  [within seed noise of stop_epoch={format_value(v.runner_up.stop_epoch, STOP_EPOCH_KEY)}]"
            out.append(f"  {config_label(combo)}: stop_epoch={format_value(v.best.stop_epoch, STOP_EPOCH_KEY)}  "
                       f"{sel.metric} {_mean_std(v.best.metric)} (n={v.best.metric.n}){note}")
        out.append("")

    best, ov = sel.best, sel.overall
    out.append(f"Best stop_epoch: {format_value(best.stop_epoch, STOP_EPOCH_KEY)}"
               + ("  (null: Mixup for the whole run)" if best.stop_epoch is None else ""))
    out.append(f"Best configuration: {best.label}")
    out.append(f"  {sel.metric}: {_mean_std(best.metric)} over {best.metric.n} seed(s) "
               f"(min {_fmt(best.metric.min)}, max {_fmt(best.metric.max)})")
    if best.tests:
        main = best.tests.get(TEST_ACC)
        extra = ", ".join(f"{n} {_mean_std(s)}" for n, s in best.tests.items() if n != TEST_ACC)
        out.append(f"  test accuracy of this group (final epoch): {_mean_std(main)}" + (f"; {extra}" if extra else ""))
    if ov.runner_up is not None:
        ru = ov.runner_up
        gap = abs(best.metric.mean - ru.metric.mean)
        if ov.tied:
            out.append(f"  TIE: {len(ov.tied)} other group(s) have exactly the same mean "
                       f"({', '.join(r.label for r in ov.tied)}); chosen by more seeds, smaller std, then table order.")
        if ov.within_noise:
            out.append(f"  WITHIN SEED NOISE: runner-up {ru.label} has {sel.metric} {_mean_std(ru.metric)}; "
                       f"gap {_fmt(gap)} <= one std. {len(ov.within_one_std)} group(s) are within one std of the best: "
                       "the data do not separate them; add seeds before trusting this choice.")
        elif ov.within_noise is None:
            out.append(f"  Runner-up {ru.label}: {sel.metric} {_mean_std(ru.metric)} (gap {_fmt(gap)}); "
                       "single seeds: spread unknown, cannot tell signal from seed noise.")
        else:
            out.append(f"  Runner-up {ru.label}: {sel.metric} {_mean_std(ru.metric)} (gap {_fmt(gap)} > one std).")
    if sel.metric.startswith("test"):
        out.append(f"WARNING: selected on a TEST metric ({sel.metric}); the chosen group's test accuracy is "
                   "optimistically biased. Select on a validation metric (val_acc).")
    else:
        out.append(f"Selected on validation ({sel.metric}); test accuracy is reported for the chosen group only, "
                   "never used to choose.")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------------
# MLflow part: find the sweep, read its trials, write the selection back onto the parent run.
# --------------------------------------------------------------------------------------------------


def resolve_store(tracking_uri: str | None) -> str:
    """The tracking URI exactly as `mixup-sweep run` resolves it (--tracking-uri, else $MLFLOW_TRACKING_URI,
    else sqlite:///mlflow.db in the working directory), refusing a SQLite file that does not exist:
    MLflow would silently create an empty store there, and there is nothing to select from."""
    from mixup_core.config import ConfigError
    from sweeps.tracking import resolve_tracking

    try:
        target = resolve_tracking(tracking_uri)
    except ConfigError as err:
        raise SelectionError(str(err)) from None
    if target.sqlite_path is not None and not target.sqlite_path.is_file():
        raise SelectionError(
            f"no MLflow database at {target.sqlite_path} (tracking URI {target.uri}); run a sweep first "
            "(mixup-sweep run SPEC), or pass --tracking-uri"
        )
    return target.uri


def _client(uri: str):
    from sweeps.tracking import client_for

    return client_for(uri)


def _search_all(client, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent_run(client, name: str, run_id: str | None, uri: str) -> tuple[str, Any, int]:
    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise SelectionError(
            f"no sweep named '{name}' in {uri}; experiments there: {', '.join(names) if names else '(none)'}"
        )
    eid = experiment.experiment_id
    if run_id:
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise SelectionError(f"no run with id '{run_id}' in {uri}") from None
        if run.info.experiment_id != eid:
            raise SelectionError(f"run '{run_id}' does not belong to sweep '{name}'")
        role = run.data.tags.get(ROLE_TAG)
        if role != "sweep":
            raise SelectionError(f"run '{run_id}' is not a sweep parent run ({ROLE_TAG}={role})")
        return eid, run, 1
    parents = _search_all(client, [eid], f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"])
    if not parents:
        raise SelectionError(f"experiment '{name}' has no sweep parent run (tag {ROLE_TAG}=sweep)")
    return eid, parents[0], len(parents)


def _record(run) -> TrialRecord:
    tags = run.data.tags
    return TrialRecord(
        run_id=run.info.run_id,
        trial_id=tags.get(TRIAL_ID_TAG) or run.info.run_id,
        status=run.info.status,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),  # MLflow's latest value per key = the highest step = final epoch
        error=tags.get(ERROR_TAG),
        start_time=run.info.start_time or 0,
    )


def read_trials(client, experiment_id: str, parent_run_id: str) -> list[TrialRecord]:
    children = _search_all(client, [experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'")
    trials = [r for r in children if r.data.tags.get(ROLE_TAG) == "trial"]
    # A child without the role tag is only counted when no child has it (older or foreign layouts).
    return [_record(r) for r in (trials or children)]


def _infer_mode(metric: str) -> str:
    # The rule sweeps/spec.py enforces for a spec's metric: accuracies and feature measures go up.
    higher_is_better = metric.endswith("_acc") or "_acc_" in metric or metric.startswith("feat_")
    return "max" if higher_is_better else "min"


def sweep_metric_and_mode(parent, metric_override: str | None) -> tuple[str, str, bool]:
    """(metric, mode, is_the_sweeps_own_metric). Only the sweep's own metric is written to the parent."""
    params, tags = parent.data.params, parent.data.tags
    metric = params.get("metric") or tags.get("mixup_sweep.metric") or DEFAULT_METRIC
    mode = params.get("mode") or tags.get("mixup_sweep.mode") or DEFAULT_MODE
    if metric_override and metric_override != metric:
        # Another metric than the sweep's: the sweep's mode may not apply (val_acc max vs val_loss min).
        return metric_override, _infer_mode(metric_override), False
    return metric, mode, True


def _history(client, run_id: str, metric: str) -> dict[int, float]:
    latest: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if m.step not in latest or m.timestamp >= latest[m.step][0]:  # a resumed trial may re-log a step
            latest[m.step] = (m.timestamp, m.value)
    return {step: v for step, (_, v) in sorted(latest.items())}


def _matching(sel: Selection, like: GroupResult, stop_epoch: int | None) -> GroupResult | None:
    """The group with `stop_epoch` and otherwise the same config as `like`; else the best such group."""
    target = dict(like.config) | {STOP_EPOCH_KEY: stop_epoch}
    for r in sel.rows:
        if dict(r.config) == target:
            return r
    candidates = [r for r in sel.rows if STOP_EPOCH_KEY in r.config and r.stop_epoch == stop_epoch]
    return rank(candidates, sel.mode)[0] if candidates else None


def learning_curve_groups(sel: Selection) -> list[tuple[str, GroupResult]]:
    """Best group, full-Mixup group (stop_epoch null) and standard group (stop_epoch 0), without repeats."""
    chosen: list[tuple[str, GroupResult]] = [("best", sel.best)]
    for role, stop in (("Mixup throughout", None), ("standard (no Mixup)", 0)):
        g = _matching(sel, sel.best, stop)
        if g is None:
            continue
        for i, (existing_role, existing) in enumerate(chosen):
            if existing is g:
                chosen[i] = (f"{existing_role} = {role}", existing)
                break
        else:
            chosen.append((role, g))
    return chosen


def write_plots(client, sel: Selection, directory: Path) -> list[Path]:
    combo_keys = [k for k in sel.varying_keys if k != STOP_EPOCH_KEY]
    series: dict[str, list[plots.StopEpochPoint]] = {}
    for r in sel.rows:
        label = config_label({k: r.config.get(k) for k in combo_keys}) if combo_keys else ""
        series.setdefault(label, []).append(plots.StopEpochPoint(r.stop_epoch, r.metric.mean, r.metric.std, r.metric.n))
    stop_plot = directory / STOP_EPOCH_PLOT
    plots.plot_metric_vs_stop_epoch(series, sel.metric, stop_plot)

    curves = []
    for role, g in learning_curve_groups(sel):
        histories = [h for rid in g.run_ids if (h := _history(client, rid, sel.metric))]
        curves.append(plots.LearningCurve(f"{role}: {g.label}", histories, g.stop_epoch))
    curves_plot = directory / CURVES_PLOT
    plots.plot_learning_curves(curves, sel.metric, curves_plot, title=f"{sel.metric} per epoch")
    return [stop_plot, curves_plot]


def write_to_parent(client, parent_run_id: str, sel: Selection, document: dict[str, Any], report: str) -> list[str]:
    """Store the selection on the parent run; returns the artifact paths. Idempotent (see module doc)."""
    from mlflow.entities import Metric, RunTag

    with tempfile.TemporaryDirectory(prefix="mixup-selection-") as tmp:
        d = Path(tmp)
        (d / JSON_ARTIFACT).write_text(json.dumps(document, indent=2) + "\n")
        (d / TEXT_ARTIFACT).write_text("```\n" + report + "\n```\n")
        write_plots(client, sel, d)
        client.log_artifacts(parent_run_id, str(d), artifact_path=ARTIFACT_DIR)
        names = sorted(p.name for p in d.iterdir())

    best = sel.best
    stop = best.stop_epoch
    wanted = {"best_stop_epoch": NEVER_STOP_METRIC_VALUE if stop is None else float(stop),
              f"selected_{sel.metric}_mean": best.metric.mean}
    if best.metric.std is not None:
        wanted[f"selected_{sel.metric}_std"] = best.metric.std
    test = best.tests.get(TEST_ACC)
    if test is not None:
        wanted["selected_test_acc_mean"] = test.mean
        if test.std is not None:
            wanted["selected_test_acc_std"] = test.std
    current = client.get_run(parent_run_id).data.metrics
    now_ms = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now_ms, 0) for k, v in wanted.items() if current.get(k) != float(v)]
    tags = {
        "mixup_sweep.best_stop_epoch": "null" if stop is None else str(stop),
        "mixup_sweep.best_config": json.dumps(sel.best_config, sort_keys=True),
        "mixup_sweep.selection_metric": sel.metric,
        "mixup_sweep.selection_mode": sel.mode,
        "mixup_sweep.selection_within_noise": json.dumps(sel.overall.within_noise),
        "mixup_sweep.selection_excluded": str(len(sel.excluded)),
    }
    client.log_batch(parent_run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    return [f"{ARTIFACT_DIR}/{n}" for n in names]


@dataclass
class _Outcome:
    client: Any
    parent_run_id: str
    sel: Selection
    document: dict[str, Any]
    report: str
    sweep_metric: bool  # False when --metric overrides the sweep's metric: shown, not stored


def _select_from_mlflow(name: str, tracking_uri: str | None, run_id: str | None, metric: str | None) -> _Outcome:
    uri = resolve_store(tracking_uri)
    client = _client(uri)
    eid, parent, n_parents = find_parent_run(client, name, run_id, uri)
    parent_id = parent.info.run_id
    records = read_trials(client, eid, parent_id)
    if not records:
        raise SelectionError(f"sweep '{name}' (parent run {parent_id}) has no trial runs yet", exit_code=1)
    chosen_metric, mode, own = sweep_metric_and_mode(parent, metric)
    sel = select(group_trials(records), chosen_metric, mode)
    report = format_report(sel, name, parent_id, uri)
    if n_parents > 1:
        report = (f"Note: experiment '{name}' holds {n_parents} sweep runs; using the most recent "
                  f"({parent_id}); pick another with --run-id.\n") + report
    document = selection_to_dict(sel, sweep=name, parent_run_id=parent_id, tracking_uri=uri)
    return _Outcome(client, parent_id, sel, document, report, own)


def _write(o: _Outcome) -> tuple[list[str], str | None]:
    """Store the selection on the parent run, unless it was made on another metric than the sweep's
    (an exploratory `--metric` must not replace the sweep's recorded choice)."""
    from mlflow.exceptions import MlflowException

    if not o.sweep_metric:
        return [], None
    try:
        return write_to_parent(o.client, o.parent_run_id, o.sel, o.document, o.report), None
    except (MlflowException, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return [], f"could not write the selection onto parent run {o.parent_run_id}: {first_line}"


def run_best(name: str, tracking_uri: str | None, as_json: bool, run_id: str | None = None,
             metric: str | None = None) -> int:
    """`mixup-sweep best`. Exit codes: 0 ok; 2 no store / unknown sweep or run / metric not logged;
    1 nothing to select yet (no finished trial) or the result could not be written to MLflow."""
    try:
        o = _select_from_mlflow(name, tracking_uri, run_id, metric)
    except SelectionError as err:
        print(f"mixup-sweep best: {err}", file=sys.stderr)
        return err.exit_code
    artifacts, write_error = _write(o)
    o.document["written_to_parent"] = bool(artifacts)
    o.document["artifacts"] = artifacts
    if as_json:
        print(json.dumps(o.document, indent=2))
    else:
        print(o.report)
        if artifacts:
            print(f"Written to parent run {o.parent_run_id}: metric best_stop_epoch, tag mixup_sweep.best_config, "
                  f"artifacts {', '.join(artifacts)}")
        elif not o.sweep_metric:
            print(f"Not written to the parent run: --metric {o.sel.metric} is not the sweep's selection metric.")
    if write_error:
        print(f"mixup-sweep best: {write_error}", file=sys.stderr)
        return 1
    return 0


def print_selection_after_sweep(name: str, tracking_uri: str | None, parent_run_id: str) -> None:
    """End of `mixup-sweep run`: print the selection and store it on the parent run. Never raises for
    selection problems (the sweep itself succeeded); says what went wrong in one line instead."""
    try:
        o = _select_from_mlflow(name, tracking_uri, parent_run_id, None)
    except SelectionError as err:
        print(f"mixup-sweep: no selection: {err}", file=sys.stderr)
        return
    artifacts, write_error = _write(o)
    print(o.report)
    if artifacts:
        print(f"Written to parent run {o.parent_run_id}: {', '.join(artifacts)} "
              f"(rerun any time: mixup-sweep best {name})")
    if write_error:
        print(f"mixup-sweep: {write_error}", file=sys.stderr)
