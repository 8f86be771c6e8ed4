"""`mixup-sweep best`: read a sweep's trials from MLflow, select (selection.py), print the report
(report.py) and write the selection onto the sweep's parent run.

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
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import keys
from ..metrics import metric_mode
from ..keys import ERROR_TAG, PARENT_TAG, ROLE_TAG, STOP_EPOCH_KEY, TEST_ACC, TRIAL_ID_TAG
from . import plots
from .selection import (
    DEFAULT_METRIC, DEFAULT_MODE,
    GroupResult, Selection, SelectionError, TrialRecord, config_label, group_trials, rank, select,
)
from .report import format_report, selection_to_dict
from .claim_mlflow import claim_section

NEVER_STOP_METRIC_VALUE = -1.0  # best_stop_epoch metric for "Mixup throughout" (stop_epoch null)
ARTIFACT_DIR = "selection"
JSON_ARTIFACT = "selection.json"
TEXT_ARTIFACT = "selection.md"
STOP_EPOCH_PLOT = "metric_vs_stop_epoch.png"
CURVES_PLOT = "learning_curves.png"


def resolve_store(tracking_uri: str | None) -> str:
    """The tracking URI exactly as `mixup-sweep run` resolves it (--tracking-uri, else $MLFLOW_TRACKING_URI,
    else sqlite:///mlflow.db in the working directory), refusing a SQLite file that does not exist:
    MLflow would silently create an empty store there, and there is nothing to select from."""
    from mixup_core import ConfigError
    from ..tracking import resolve_tracking

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
    from ..tracking import client_for

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
    children = _search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'")
    trials = [r for r in children if r.data.tags.get(ROLE_TAG) == "trial"]
    # A child without the role tag is only counted when no child has it (older or foreign layouts).
    return [_record(r) for r in (trials or children)]


def sweep_metric_and_mode(parent, metric_override: str | None) -> tuple[str, str, bool]:
    """(metric, mode, is_the_sweeps_own_metric). Only the sweep's own metric is written to the parent."""
    params, tags = parent.data.params, parent.data.tags
    metric = params.get("metric") or tags.get(keys.METRIC_TAG) or DEFAULT_METRIC
    mode = params.get("mode") or tags.get(keys.MODE_TAG) or DEFAULT_MODE
    if metric_override and metric_override != metric:
        # Another metric than the sweep's: the sweep's mode may not apply (val_acc max vs val_loss min).
        return metric_override, metric_mode(metric_override), False
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
        keys.BEST_STOP_EPOCH_TAG: "null" if stop is None else str(stop),
        keys.BEST_CONFIG_TAG: json.dumps(sel.best_config, sort_keys=True),
        keys.SELECTION_METRIC_TAG: sel.metric,
        keys.SELECTION_MODE_TAG: sel.mode,
        keys.SELECTION_WITHIN_NOISE_TAG: json.dumps(sel.overall.within_noise),
        keys.SELECTION_EXCLUDED_TAG: str(len(sel.excluded)),
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
    # science-claims: the verdict of the spec's `claim:` (claims.py), appended and written to the parent
    claim_text, document["claim"] = claim_section(client, parent, records, write=own)
    report += claim_text
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
