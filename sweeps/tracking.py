"""MLflow tracking of a sweep, laid out as design.md fixes it.

  experiment = the sweep's name
  parent run (one per sweep, created on the driver): tag mixup_sweep.role=sweep, the resolved spec as
      artifact spec.yaml and as params; tag mixup_sweep.storage = the Ray experiment path, which is how
      `resume` finds this run again
  child run (one per trial, created by the trial itself): tags mlflow.parentRunId, mixup_sweep.role=trial,
      mixup_sweep.trial_id (Ray's trial id, stable across restarts and `resume`; a packed trial's:
      "<Ray trial id>-<member>"), mixup_sweep.ray_trial_id (the Ray trial that trains it, its pack's
      when packed, see plan/packs.py); params = the flattened
      trial configuration; per-epoch metrics with step=epoch; summary metrics (no step); artifacts
      config.yaml, metrics.jsonl, summary.json and checkpoint/ (the final checkpoint); status FINISHED, or
      FAILED with tag mixup_sweep.error.

Never a duplicate step: a restarted trial reuses its child run (found by the trial id tag) and logs only
epochs after the last step already logged. The epoch is logged *before* Ray persists its checkpoint, so
a crash between the two re-runs an epoch that is already logged (skipped), never leaves a hole.

A tracking server that goes away for a while: every request is retried by MLflow's HTTP client with
exponential backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR, about 4 minutes by default,
connection refused included), so trials wait and log once it is back; past that the trial fails before
its epoch's checkpoint reaches Ray and resumes from the previous one. No retry loop of our own on top
(docs/failure_recovery.md).

Everything uses `MlflowClient` with explicit run ids: trials run in other processes (and on other nodes),
where a fluent "active run" would be wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mixup_core import ConfigError, flatten

from .keys import (
    ATTEMPTS_TAG, ERROR_TAG, EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_TAG, RAY_TRIAL_TAG, ROLE_TAG, SPEC_ARTIFACT,
    STORAGE_TAG, TRIAL_ID_TAG,
)

# Numeric entries of summary.json logged as run-level metrics (no step).
SUMMARY_METRICS = ("best_epoch", "best_val_acc", "test_acc_at_best", "final_test_acc", "epochs", "wall_s")

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
_MAX_PARAM = 6000  # MLflow's limit on a param value


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs go. `uri` is absolute, so trials in other processes or nodes reach the same store."""

    uri: str
    artifact_location: Optional[str] = None  # for a newly created experiment; None = the store's default
    sqlite_path: Optional[Path] = None  # the database file of a local SQLite store


def resolve_tracking(uri: Optional[str] = None, cwd: Optional[Path] = None) -> TrackingTarget:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory
    with artifacts beside it in ./mlartifacts. Relative SQLite/file paths become absolute."""
    cwd = Path(cwd or os.getcwd())
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{DEFAULT_DB}"
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        db = db if db.is_absolute() else (cwd / db)
        db = Path(os.path.abspath(db))
        return TrackingTarget(f"sqlite:///{db}", (db.parent / DEFAULT_ARTIFACTS).as_uri(), db)
    if uri.startswith("sqlite:"):
        raise ConfigError(f"--tracking-uri {uri}: use sqlite:///relative.db or sqlite:////absolute/path.db")
    if "://" not in uri or uri.startswith("file:"):
        raise ConfigError(
            f"--tracking-uri {uri}: MLflow's file store is deprecated; use sqlite:///PATH.db or an http(s):// server"
        )
    return TrackingTarget(uri)


class TrackingStoreGone(RuntimeError):
    """The sweep's SQLite store is no longer there (deleted mid-sweep): never recreated empty."""


def check_store_exists(uri: str) -> None:
    """A SQLite store must exist already (the driver created it): opening a missing one would create
    an empty database, and the trial would log into it as if nothing had happened."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            raise TrackingStoreGone(f"the MLflow store {path} is gone (deleted while the sweep ran?); "
                                    f"nothing was recreated")


def client_for(uri: str, create: bool = True):
    """An MlflowClient of `uri`. create=False (trials, and the driver once a sweep runs): a SQLite
    store that does not exist raises TrackingStoreGone instead of being created empty."""
    from mlflow import MlflowClient

    if not create:
        check_store_exists(uri)
    if not uri.startswith("sqlite:///"):
        # A tracking server's client prints two "View run/experiment at" lines whenever a run ends: in
        # a sweep, every trial's, into the driver's output. The sweep prints its UI link itself.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        return MlflowClient(tracking_uri=uri)
    # Opening a SQLite store creates or migrates its schema; two sweeps started at once into a new
    # store would race on that (alembic fails half-way). One process at a time, per file.
    with _store_lock(uri):
        return _open_sqlite_store(uri)


def _open_sqlite_store(uri: str):
    """Open (creating or migrating its schema) the SQLite store at `uri`; a new one is copied from
    the empty template where there is one, else built by MLflow and kept as the template
    (sqlite_template.py). Under the store's lock."""
    from mlflow import MlflowClient

    from . import sqlite_template

    db = Path(uri[len("sqlite:///"):])
    new = not db.exists()
    copied = new and sqlite_template.copy_template(db)
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)  # opens the store: creates/migrates the schema
    except Exception:
        if copied:  # the template passed its checks yet MLflow refuses the copy: never use it again
            sqlite_template.discard_template()
            sqlite_template.remove_store(db)
            print(f"mixup-sweep: MLflow refused the new store {db}, a copy of the cached empty store "
                  f"{sqlite_template.template_path()}; both are removed: run the command again", file=sys.stderr)
        raise
    if new and not copied:
        sqlite_template.keep_as_template(db)
    return client


@contextlib.contextmanager
def _store_lock(uri: str):
    """An exclusive lock of the database's directory itself (flock on a directory descriptor): no lock
    file anywhere, so nothing piles up in the temp directory or appears beside the user's database."""
    import fcntl

    directory = Path(uri[len("sqlite:///"):]).parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _now_ms() -> int:
    return int(time.time() * 1000)


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:_MAX_PARAM]


def _log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, _param_value(v)) for k, v in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run_id, params=items[start:start + 100])


# ---------------------------------------------------------------------------------------------
# Driver side: the experiment and the sweep's parent run


def get_experiment_id(client, name: str, artifact_location: Optional[str], create: bool) -> Optional[str]:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(name)
    if exp is not None and exp.lifecycle_stage == "deleted":
        raise ConfigError(
            f"MLflow experiment {name!r} is deleted (restore it with `mlflow experiments restore`, or use another name)"
        )
    if exp is None and create:
        try:
            return client.create_experiment(name, artifact_location=artifact_location,
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # created meanwhile by another driver
            exp = client.get_experiment_by_name(name)
    if exp is None:
        return None
    mark_as_training_runs(client, exp)  # an experiment made before the tag existed, or by someone else
    return exp.experiment_id


def mark_as_training_runs(client, experiment) -> None:
    """Tag `experiment` (an MLflow Experiment) so that MLflow's UI opens it on its runs; idempotent."""
    if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def start_sweep_run(client, experiment_id: str, spec: dict[str, Any], spec_yaml: str, experiment_path: str) -> str:
    """The parent run: tags, the resolved spec as params (trial keys live on the children) and spec.yaml."""
    run = client.create_run(
        experiment_id,
        tags={ROLE_TAG: "sweep", STORAGE_TAG: experiment_path},
        run_name=spec["name"],  # named after the sweep; MLflow's UI shows when each run started
    )
    run_id = run.info.run_id
    params = {k: v for k, v in spec.items() if k not in ("trial", "grid", "optuna")}
    params = flatten({k: v for k, v in params.items()})
    grid = spec.get("grid") or {}
    if isinstance(grid, list):  # a list of grids: grid.<i>.<key>
        params.update({f"grid.{i}.{k}": v for i, g in enumerate(grid) for k, v in g.items()})
    else:
        params.update({f"grid.{k}": v for k, v in grid.items()})
    if spec.get("optuna"):
        optuna = spec["optuna"]
        params["optuna.n_trials"] = optuna["n_trials"]
        params["optuna.seed"] = optuna.get("seed")
        params.update({f"optuna.space.{k}": v for k, v in optuna["space"].items()})
    _log_params(client, run_id, params)
    client.log_text(run_id, spec_yaml, SPEC_ARTIFACT)
    return run_id


def _first_run(client, experiment_id: str, filter_string: str, order: str):
    runs = client.search_runs([experiment_id], filter_string=filter_string,
                              order_by=[f"attributes.start_time {order}"], max_results=1)
    return runs[0] if runs else None


def find_sweep_run(client, experiment_id: str, experiment_path: str):
    """The newest parent run of the sweep whose Ray experiment lives at `experiment_path`."""
    return _first_run(client, experiment_id,
                      f"tags.`{ROLE_TAG}` = 'sweep' and tags.`{STORAGE_TAG}` = '{experiment_path}'", "DESC")


def read_sweep_spec(client, run_id: str) -> str:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run_id, SPEC_ARTIFACT, tmp)
        return Path(local).read_text()


def find_trial_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    """The child run of `trial_id` under this sweep (the first one, if a lost driver made two)."""
    return _first_run(client, experiment_id,
                      f"tags.`{TRIAL_ID_TAG}` = '{trial_id}' and tags.`{PARENT_TAG}` = '{parent_run_id}'", "ASC")


def find_runs_of_ray_trial(client, experiment_id: str, parent_run_id: str, ray_trial_id: str) -> list:
    """The child runs one Ray trial trains (one, or a pack's members). Runs made before the
    ray_trial_id tag existed are found by their trial id."""
    where = f"tags.`{PARENT_TAG}` = '{parent_run_id}'"
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{RAY_TRIAL_TAG}` = '{ray_trial_id}' and {where}",
                              max_results=10_000)
    if runs:
        return runs
    legacy = find_trial_run(client, experiment_id, parent_run_id, ray_trial_id)
    return [legacy] if legacy is not None else []


def delete_runs_of_lost_trials(client, experiment_id: str, parent_run_id: str, ray_trial_ids: set[str]) -> int:
    """A driver killed between starting a trial and Ray's next save of its experiment state (every ~10 s)
    loses that trial: Ray never runs it again, and the searcher hands its place out again under a new
    trial id. Its child run would stay RUNNING for ever, one run too many: delete (MLflow: soft-delete)
    the child runs of this sweep whose trial Ray's restored state does not have. Returns how many."""
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                              max_results=50_000)
    lost = [r for r in runs if TRIAL_ID_TAG in r.data.tags
            and r.data.tags.get(RAY_TRIAL_TAG, r.data.tags[TRIAL_ID_TAG]) not in ray_trial_ids]
    for run in lost:
        client.delete_run(run.info.run_id)
    return len(lost)


# ---------------------------------------------------------------------------------------------
# Trial side: one child run


class TrialRun:
    """The child run of one trial, reused across restarts; logs each epoch at most once."""

    def __init__(self, client, run_id: str, last_step: int, ended: Optional[tuple[str, int]] = None):
        self.client = client
        self.run_id = run_id
        self.last_step = last_step
        # (status, end_time) of a run that had already ended: a driver killed after the trial ended in
        # MLflow but before Ray saved that, reruns it on resume; with nothing new to log, the run keeps
        # its original end.
        self._ended = ended
        self._ended_step = last_step
        self._pending: list[dict[str, Any]] = []  # reported epochs not yet logged (see flush)

    @classmethod
    def open(cls, uri: str, experiment_id: str, parent_run_id: str, trial_id: str, run_name: str,
             params: dict[str, Any], ray_trial_id: Optional[str] = None) -> "TrialRun":
        """The run of `trial_id`, created or (a restart) found again; `ray_trial_id`: the Ray trial
        training it when that is not `trial_id` (a pack)."""
        client = client_for(uri, create=False)  # a store deleted mid-sweep fails this attempt, never recreated
        existing = find_trial_run(client, experiment_id, parent_run_id, trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            info = existing.info
            ended = (info.status, info.end_time) if info.status in ("FINISHED", "FAILED") and info.end_time else None
            client.update_run(run_id, status="RUNNING")
            return cls(client, run_id, _last_logged_step(client, existing), ended)
        run = client.create_run(
            experiment_id,
            tags={PARENT_TAG: parent_run_id, ROLE_TAG: "trial", TRIAL_ID_TAG: trial_id,
                  RAY_TRIAL_TAG: ray_trial_id or trial_id},
            run_name=run_name,
        )
        _log_params(client, run.info.run_id, params)
        return cls(client, run.info.run_id, 0)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def record_attempt(self, node_id: str, from_epoch: int, source: str) -> None:
        """Append this attempt to the run's attempts tag: a restarted trial shows where each attempt ran
        and from which epoch it continued (0: from the start)."""
        tags = self.client.get_run(self.run_id).data.tags
        try:
            attempts = json.loads(tags.get(ATTEMPTS_TAG, "[]"))
        except ValueError:
            attempts = []
        attempts.append({"attempt": len(attempts) + 1, "node_id": node_id, "from_epoch": from_epoch, "from": source})
        self.client.set_tag(self.run_id, ATTEMPTS_TAG, json.dumps(attempts[-40:]))  # MLflow caps a tag at 5000

    def log_epochs(self, rows: list[dict[str, Any]]) -> None:
        """Log epochs at step=epoch in as few batches as MLflow allows, skipping those already logged
        (a restarted trial re-trains epochs after its checkpoint; each is logged once)."""
        from mlflow.entities import Metric

        rows = [r for r in rows if int(r["epoch"]) > self.last_step]
        check_store_exists(self.client.tracking_uri)  # deleted mid-trial: fail this attempt, recreate nothing
        ts = _now_ms()
        items = [Metric(k, float(v), ts, int(r["epoch"])) for r in rows for k, v in r.items()
                 if k != "epoch" and isinstance(v, (int, float)) and v is not None]
        for start in range(0, len(items), 1000):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, metrics=items[start:start + 1000])
        if rows:
            self.last_step = int(rows[-1]["epoch"])

    def add_epoch(self, row: dict[str, Any]) -> None:
        """Keep an epoch for the next `flush` (one MLflow batch per checkpoint, not one call per epoch)."""
        self._pending.append(row)

    def flush(self) -> None:
        """Log the kept epochs: before a checkpoint reaches Ray, and when the trial ends."""
        if self._pending:
            self.log_epochs(self._pending)
            self._pending = []

    def end(self, summary: dict[str, Any], out_dir: Path, final_checkpoint: Optional[Path]) -> bool:
        """A trial that ran to its end: summary metrics, artifacts, and FINISHED, or FAILED when it
        diverged (deterministic: a retry would diverge again, so the trial ends normally for Ray).
        Returns whether it diverged."""
        self.log_summary(summary)
        self.log_outputs(out_dir, final_checkpoint)
        diverged = summary.get("status") == "diverged"
        if diverged:
            self.finish("FAILED", summary.get("error") or "diverged")
        else:
            self.finish("FINISHED")
        return diverged

    def log_summary(self, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        present = self.client.get_run(self.run_id).data.metrics
        ts = _now_ms()
        items = [Metric(k, float(summary[k]), ts, 0) for k in SUMMARY_METRICS
                 if isinstance(summary.get(k), (int, float)) and k not in present]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_outputs(self, out_dir: Path, final_checkpoint: Optional[Path]) -> None:
        for name in ("config.yaml", "metrics.jsonl", "summary.json"):
            if (out_dir / name).exists():
                self.client.log_artifact(self.run_id, str(out_dir / name))
        if final_checkpoint is not None:
            self.client.log_artifacts(self.run_id, str(final_checkpoint), artifact_path="checkpoint")

    def finish(self, status: str = "FINISHED", error: Optional[str] = None) -> None:
        if error:
            self.client.set_tag(self.run_id, ERROR_TAG, error[:5000])
        if self._ended and self._ended[0] == status and self.last_step == self._ended_step:
            self.client.set_terminated(self.run_id, status=status, end_time=self._ended[1])
        else:
            self.client.set_terminated(self.run_id, status=status)


def error_line(e: BaseException) -> str:
    """What a trial's run records as its error (tag mixup_sweep.error): the exception's first line."""
    return f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__


def log_summary_of_logged_epochs(client, run, wall_s: float) -> None:
    """The summary metrics of a trial that could not log its own (stopped by ASHA), from the epochs it
    logged: best epoch and accuracies over the epochs it trained, `epochs` = how many that was."""
    from mixup_core import summarize

    rows: dict[int, dict[str, Any]] = {}
    for key in ("val_acc", "test_acc"):
        for m in client.get_metric_history(run.info.run_id, key):
            rows.setdefault(m.step, {"epoch": m.step})[key] = m.value
    history = [rows[e] for e in sorted(rows) if "test_acc" in rows[e]]
    if history:
        TrialRun(client, run.info.run_id, history[-1]["epoch"]).log_summary(summarize(history, len(history), wall_s))


def _last_logged_step(client, run) -> int:
    last = 0
    for key in run.data.metrics:
        if key in SUMMARY_METRICS:
            continue
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        last = max([last, *steps])
    return last

