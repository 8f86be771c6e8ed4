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
  report), `learning_curves.png`, `metric_vs_stop_epoch.png` and, when two keys are swept,
  `heatmap.png` (figures.py; fixed names, so they are overwritten);
- at the end of a sweep, artifact `curves/histories.npz`: the curves' metric histories of every ended
  trial (curve_cache.py), which drawing the curves again reads instead of hundreds of histories.
Also, so that MLflow's UI reads right for sweeps made before these existed: every trial run is named by
its label (labels.py), and the experiment gets the tag that opens it on its runs.
A selection on another metric than the sweep's (`--metric`) is printed, never written: an exploratory
look must not replace the sweep's recorded choice.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import keys
from ..background_imports import PLOTTING, import_in_background, join_background_imports
from ..keys import ERROR_TAG, ROLE_TAG, RUN_NAME_TAG, TEST_ACC, TRIAL_ID_TAG
from ..labels import ordered_keys, trial_label, varying_keys
from ..metrics import metric_mode
from . import curve_cache, figures
from .claim_mlflow import claim_section
from .report import format_report, format_side_by_side, selection_to_dict, wrap
from .run_search import child_runs, search_all
from .selection import (
    DEFAULT_METRIC, DEFAULT_MODE, Selection, SelectionError, TrialRecord, group_trials, parse_param, select,
)

NEVER_STOP_METRIC_VALUE = -1.0  # best_stop_epoch metric for "Mixup throughout" (stop_epoch null)
ARTIFACT_DIR = "selection"
JSON_ARTIFACT = "selection.json"
TEXT_ARTIFACT = "selection.md"


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

    # MLflow draws a progress bar on stderr for every artifact download (the stored selection): noise
    # in a command's output. A user who wants it sets the variable.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return client_for(uri)


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
    parents = search_all(client, [eid], f"tags.`{ROLE_TAG}` = 'sweep'", order_by=["attributes.start_time DESC"])
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


def read_children(client, experiment_id: str, parent_run_id: str, parent=None) -> list:
    """The sweep's child runs (run_search.py: in parallel parts from a server, given the parent run)."""
    return child_runs(client, experiment_id, parent_run_id, parent)


def trial_records(children: list) -> list[TrialRecord]:
    trials = [r for r in children if r.data.tags.get(ROLE_TAG) == keys.ROLE_TRIAL]
    # A child without the role tag is only counted when no child has it (older or foreign layouts).
    return [_record(r) for r in (trials or [r for r in children if r.data.tags.get(ROLE_TAG) != keys.ROLE_TRUNK])]


def sweep_label_keys(parent) -> list[str] | None:
    """The keys the sweep's trial labels show, from its parent run's params (tracking.start_sweep_run
    logs the grid as grid.<key> or grid.<i>.<key> = JSON list, the Optuna space as optuna.space.<key>):
    the same keys labels.sweep_label_keys takes from the spec. None for a parent without them."""
    values: dict[str, list] = {}
    space: list[str] = []
    for name, text in parent.data.params.items():
        if name.startswith("optuna.space."):
            space.append(name[len("optuna.space."):])
        elif name.startswith("grid."):
            rest = name[len("grid."):]
            head, _, tail = rest.partition(".")
            key = tail if head.isdigit() and tail else rest  # grid.<i>.<key>: one of several grids
            parsed = parse_param(text)
            values.setdefault(key, []).extend(parsed if isinstance(parsed, list) else [parsed])
    if not values and not space:
        return None
    return ordered_keys(varying_keys(values) + space)


def label_child_runs(client, children: list, label_keys: list[str]) -> int:
    """Name every trial run (and prefix-sharing trunk) of the sweep by its label, as the trials of a
    current sweep name themselves: older sweeps' runs read the same in MLflow's UI. Idempotent; returns
    how many runs were renamed."""
    renames = []
    for run in children:
        role = run.data.tags.get(ROLE_TAG)
        if role not in (keys.ROLE_TRIAL, keys.ROLE_TRUNK) or not run.data.params:
            continue
        point = {k: parse_param(v) for k, v in run.data.params.items()}
        name = trial_label(point, label_keys)
        if role == keys.ROLE_TRUNK:
            name = f"trunk: {name}"  # as the trainable names a trunk the grid does not contain
        if run.info.run_name != name:
            renames.append((run.info.run_id, name))
    if renames:
        with ThreadPoolExecutor(FETCH_THREADS) as pool:
            list(pool.map(lambda r: client.set_tag(r[0], RUN_NAME_TAG, r[1]), renames))
    return len(renames)


def sweep_metric_and_mode(parent, metric_override: str | None) -> tuple[str, str, bool]:
    """(metric, mode, is_the_sweeps_own_metric). Only the sweep's own metric is written to the parent."""
    params, tags = parent.data.params, parent.data.tags
    metric = params.get("metric") or tags.get(keys.METRIC_TAG) or DEFAULT_METRIC
    mode = params.get("mode") or tags.get(keys.MODE_TAG) or DEFAULT_MODE
    if metric_override and metric_override != metric:
        # Another metric than the sweep's: the sweep's mode may not apply (val_acc max vs val_loss min).
        return metric_override, metric_mode(metric_override), False
    return metric, mode, True


FETCH_THREADS = 8  # child-run renames in flight at once: each is one round trip to the store


def refresh_curve_cache(client, parent_run_id: str, metric: str, children: list) -> None:
    """The end of a sweep: the parent run's curve-history cache (curve_cache.py) brought up to date
    for every ended trial and stored. A cache only: whatever goes wrong is said in one line."""
    try:
        curve_cache.refresh(client, parent_run_id, children, figures.curve_metrics_of(metric),
                            curve_cache.load(client, parent_run_id))
    except Exception as err:  # noqa: BLE001 - the sweep and its selection are done and printed
        first_line = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        print(f"mixup-sweep: curve-history cache not written ({type(err).__name__}: {first_line}); `mixup-sweep best` "
              "still works, fetching the curves' histories from the store (slower at thousands of trials)",
              file=sys.stderr)


def _curve_histories(client, parent_run_id: str, sel: Selection, children: list) -> dict[tuple[str, str], dict[int, float]]:
    """The metric histories the learning curves draw: from the parent run's curve cache where it
    matches the store, the rest fetched in bulk (histories.py)."""
    return curve_cache.histories(client, curve_cache.load(client, parent_run_id), children,
                                 figures.histories_needed(sel))


def stored_selection(client, parent_run_id: str) -> tuple[list[str], Any] | None:
    """(artifact names under selection/, the stored selection.json parsed) of the parent run, or None
    when it holds none (or it cannot be read: then the selection is simply drawn again)."""
    from mlflow.exceptions import MlflowException

    try:
        stored = {a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(parent_run_id, ARTIFACT_DIR)}
        if JSON_ARTIFACT not in stored:
            return None
        with tempfile.TemporaryDirectory(prefix="mixup-selection-") as tmp:
            path = client.download_artifacts(parent_run_id, f"{ARTIFACT_DIR}/{JSON_ARTIFACT}", tmp)
            return sorted(stored), json.loads(Path(path).read_text())
    except (MlflowException, OSError, ValueError):
        return None


def _in_background(fn, *args) -> Future:
    """fn(*args) in a thread of its own; the caller reads .result() when it needs it."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args)
    finally:
        pool.shutdown(wait=False)


def _unchanged_artifacts(stored: tuple[list[str], Any] | None, document: dict[str, Any]) -> list[str] | None:
    """The artifact names already on the parent run when they hold this very selection (its
    selection.json equals `document`: same trials, same numbers), else None. `best` run again on a
    finished sweep then only prints: at 2,000 trials redrawing the curves costs most of its time."""
    if stored is None:
        return None
    names, previous = stored
    return names if previous == json.loads(json.dumps(document)) else None


def write_to_parent(client, parent_run_id: str, sel: Selection, document: dict[str, Any], report: str,
                    children: list = (), stored: Future | None = None) -> list[str]:
    """Store the selection on the parent run; returns the artifact paths. Idempotent (see module doc).
    `stored`: stored_selection of the parent, already on its way (read here when not given)."""
    from mlflow.entities import Metric, RunTag

    names = _unchanged_artifacts(stored.result() if stored is not None else stored_selection(client, parent_run_id),
                                 document)
    if names is None:  # a new or changed selection: draw it
        with tempfile.TemporaryDirectory(prefix="mixup-selection-") as tmp, ThreadPoolExecutor(2) as uploads:
            d = Path(tmp)
            # The curves' histories arrive while the figures that need none are drawn, and each file
            # is uploaded as soon as it is written.
            fetched = _in_background(_curve_histories, client, parent_run_id, sel, list(children))
            sent = []

            def upload(path: Path) -> None:
                sent.append(uploads.submit(client.log_artifact, parent_run_id, str(path), ARTIFACT_DIR))

            (d / TEXT_ARTIFACT).write_text("```\n" + report + "\n```\n")
            upload(d / TEXT_ARTIFACT)
            figures.write_plots(sel, lambda run_id, metric: fetched.result()[(run_id, metric)], d, on_written=upload)
            for future in sent:
                future.result()  # an upload that failed fails here, as log_artifacts would
            # selection.json last: the next `best` takes it to mean that every file of this selection
            # is there (_unchanged_artifacts), so it goes only once they all are.
            (d / JSON_ARTIFACT).write_text(json.dumps(document, indent=2) + "\n")
            client.log_artifact(parent_run_id, str(d / JSON_ARTIFACT), ARTIFACT_DIR)
            names = sorted(p.name for p in d.iterdir())

    best = sel.best
    stop = best.stop_epoch
    wanted = {"best_stop_epoch": NEVER_STOP_METRIC_VALUE if stop is None else float(stop),
              f"selected_{sel.metric}_mean": best.metric.mean}
    if best.metric.std is not None:
        wanted[f"selected_{sel.metric}_std"] = best.metric.std
    test = best.reported.get(TEST_ACC)
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


def experiment_ui_url(tracking_uri: str, experiment_id: str) -> str:
    """Where MLflow's UI shows the sweep's runs. `workflowType=machine_learning` because MLflow 3.17's UI
    picks an experiment's landing page from the browser's GenAI / Model training switch (GenAI unless
    changed), not from the experiment's mlflow.experimentKind tag: without it the link opens the GenAI
    overview. A SQLite store has no UI of its own: the address of `mlflow ui`'s default port."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning"


def ui_hint(tracking_uri: str, experiment_id: str) -> str:
    url = experiment_ui_url(tracking_uri, experiment_id)
    if tracking_uri.startswith(("http://", "https://")):
        return f"MLflow UI: {url}"
    # The UI's server reports usage to MLflow's vendor unless told not to (usage_reporting.py).
    return f"MLflow UI: MLFLOW_DISABLE_TELEMETRY=true mlflow ui --backend-store-uri {tracking_uri}, then open {url}"


@dataclass
class _Outcome:
    client: Any
    tracking_uri: str
    experiment: Any
    parent_run_id: str
    children: list
    sel: Selection
    document: dict[str, Any]
    report: str
    sweep_metric: bool  # False when --metric overrides the sweep's metric: shown, not stored
    stored: Future | None = None  # stored_selection of the parent run, fetched while the trials are read


def _select_from_mlflow(name: str, tracking_uri: str | None, run_id: str | None, metric: str | None,
                        wide: bool = False) -> _Outcome:
    uri = resolve_store(tracking_uri)
    client = _client(uri)
    eid, parent, n_parents = find_parent_run(client, name, run_id, uri)
    parent_id = parent.info.run_id
    chosen_metric, mode, own = sweep_metric_and_mode(parent, metric)
    # What the parent run holds already is read beside the trials (one round trip less after them),
    # and what drawing needs is imported while the store answers (joined before anything draws).
    stored = _in_background(stored_selection, client, parent_id) if own else None
    experiment = _in_background(client.get_experiment, eid)
    if own:
        import_in_background(*PLOTTING)
    children = read_children(client, eid, parent_id, parent)
    join_background_imports()
    records = trial_records(children)
    if not records:
        raise SelectionError(f"sweep '{name}' (parent run {parent_id}) has no trial runs yet", exit_code=1)
    sel = select(group_trials(records), chosen_metric, mode, label_keys=sweep_label_keys(parent))
    report = format_report(sel, name, parent_id, uri, wide=wide)
    if n_parents > 1:
        note = (f"Note: experiment '{name}' holds {n_parents} sweep runs; using the most recent "
                f"({parent_id}); pick another with --run-id.")
        report = "\n".join(wrap(note)) + "\n" + report
    document = selection_to_dict(sel, sweep=name, experiment_id=eid, parent_run_id=parent_id, tracking_uri=uri)
    # The verdict of the spec's `claim:` (claims.py), appended and written to the parent run.
    claim_text, document["claim"] = claim_section(client, parent, records, write=own)
    report += claim_text
    return _Outcome(client, uri, experiment.result(), parent_id, children, sel, document, report, own, stored)


def _write(o: _Outcome) -> tuple[list[str], str | None]:
    """Store the selection on the parent run, name the trial runs by their labels and tag the experiment
    so that MLflow's UI opens it on its runs; unless the selection was made on another metric than the
    sweep's (an exploratory `--metric` writes nothing)."""
    from mlflow.exceptions import MlflowException

    from ..tracking import mark_as_training_runs

    if not o.sweep_metric:
        return [], None
    try:
        mark_as_training_runs(o.client, o.experiment)
        label_child_runs(o.client, o.children, list(o.sel.label_keys))
        return (write_to_parent(o.client, o.parent_run_id, o.sel, o.document, o.report, o.children, o.stored),
                None)
    except (MlflowException, OSError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return [], f"could not write the selection onto parent run {o.parent_run_id}: {first_line}"


def run_best(names: str | list[str], tracking_uri: str | None, as_json: bool, run_id: str | None = None,
             metric: str | None = None, wide: bool = False) -> int:
    """`mixup-sweep best NAME [NAME ...]`. Exit codes: 0 ok; 2 no store / unknown sweep or run / metric
    not logged; 1 nothing to select yet (no finished trial) or the result could not be written to
    MLflow. Several names: each is selected and written as alone; printed side by side first, and
    `--json` gives a mapping name -> document (one name: the document itself)."""
    names = [names] if isinstance(names, str) else list(names)
    if run_id and len(names) > 1:
        print("mixup-sweep best: --run-id picks the parent run of one sweep; give one NAME with it", file=sys.stderr)
        return 2
    outcomes: list[_Outcome] = []
    for name in names:
        try:
            outcomes.append(_select_from_mlflow(name, tracking_uri, run_id, metric, wide))
        except SelectionError as err:
            print(f"mixup-sweep best: {err}", file=sys.stderr)
            return err.exit_code
    errors = []
    for o in outcomes:
        artifacts, write_error = _write(o)
        o.document["written_to_parent"] = bool(artifacts)
        o.document["artifacts"] = artifacts
        if write_error:
            errors.append(write_error)
    if as_json:
        docs = {name: o.document for name, o in zip(names, outcomes)}
        print(json.dumps(docs[names[0]] if len(names) == 1 else docs, indent=2))
    else:
        if len(outcomes) > 1:
            print(format_side_by_side({name: o.sel for name, o in zip(names, outcomes)}, wide=wide))
            print()
        for i, o in enumerate(outcomes):
            if i:
                print("\n" + "-" * 40 + "\n")
            print(o.report)
            if o.document["artifacts"]:
                print("\n".join(wrap(f"Written to parent run {o.parent_run_id}: metric best_stop_epoch, tag "
                                     f"mixup_sweep.best_config, artifacts {', '.join(o.document['artifacts'])}")))
            elif not o.sweep_metric:
                print(f"Not written to the parent run: --metric {o.sel.metric} is not the sweep's selection metric.")
            print("\n".join(wrap(ui_hint(o.tracking_uri, o.experiment.experiment_id))))
    for error in errors:
        print(f"mixup-sweep best: {error}", file=sys.stderr)
    return 1 if errors else 0


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
        print("\n".join(wrap(f"Written to parent run {o.parent_run_id}: {', '.join(artifacts)}.")))
        print(f"Rerun any time: mixup-sweep best {name}")
    print("\n".join(wrap(ui_hint(o.tracking_uri, o.experiment.experiment_id))))
    if write_error:
        print(f"mixup-sweep: {write_error}", file=sys.stderr)
    # After the report (the user has it), the curves' histories of every ended trial onto the
    # parent run, for the next `best` to draw from.
    refresh_curve_cache(o.client, o.parent_run_id, o.sel.metric, o.children)
