"""Ray Tune orchestration: start (or resume) a sweep on an embedded local Ray or an existing cluster.

The Ray experiment of a sweep lives at STORAGE/NAME (STORAGE = --storage-path, default ./ray_results,
or a URI such as s3://bucket/path on clusters): a fixed name per sweep, so `resume NAME` finds it.
`resume` uses `Tuner.restore(resume_unfinished=True, resume_errored=True)`: unfinished and errored
trials continue from their last checkpoint, finished trials are not rerun; the MLflow parent run is
found again by its storage tag and each child run by its trial id tag, so nothing is duplicated.
Ctrl-C: Ray Tune saves the experiment state and stops the trials; the sweep stays resumable.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Optional

import yaml
from ray import tune

from mixup_core import ConfigError

from . import keys, lease, search, stop_signals, tracking
from .atomic_storage import storage_filesystem
from .background_imports import PLOTTING, import_in_background, join_background_imports
from .labels import sweep_label_keys
from .monitor.curve_writer import CurveCacheWriter
from .monitor.progress import SweepProgress, record_driver
from .plan.packs import packs_trials
from .plan.ray_trials import concurrent_ray_trials, ray_trial_count, total_epochs
from .plan.sharing import ignored_note as ignored_share_note
from .ray_address import cluster_address, uses_cluster
from .ray_compat.experiment_state import restored_trials
from .ray_compat.lean_head import LEAN_HEAD_SYSTEM_CONFIG, lean_head
from .ray_compat.quiet_output import ProgressTable, quiet_driver_output
from .ray_compat.resources import embedded_ray_cpus
from .ray_compat.runtime_env import inherit_environment_before_ray_init, no_runtime_env_for_trial_actors
from .ray_compat.worker_preload import preload_system_config
from .spec import Sweep, metric_available, validate_sweep
from .trial.context import TrialContext
from .trial.trainable import train_trial

DEFAULT_STORAGE = "ray_results"
PROGRESS_COLUMNS = ("epoch", "val_acc", "test_acc", "test_acc_rare")


@dataclass
class SweepOutcome:
    name: str
    tracking_uri: str
    parent_run_id: str
    experiment_path: str
    n_trials: int
    statuses: dict[str, str] = field(default_factory=dict)  # as Ray saved them: trial id -> TERMINATED, ...
    failed_runs: int = 0  # FAILED child runs: errored trials and diverged ones (which end normally for Ray)
    finished_runs: int = 0  # FINISHED trial runs (packed sweeps: a Ray trial trains several)
    unit: str = "trial(s)"  # what a Ray trial is: "pack(s)" when resources.pack > 1

    @property
    def errored(self) -> list[str]:
        return [t for t, s in self.statuses.items() if s == "ERROR"]

    @property
    def unfinished(self) -> list[str]:
        return [t for t, s in self.statuses.items() if s not in ("TERMINATED", "ERROR")]

    @property
    def remaining(self) -> int:
        """Trials still to run: unfinished ones and those not created yet (grid points are created
        as slots free up)."""
        done = len(self.statuses) - len(self.unfinished)
        return max(self.n_trials - done, len(self.unfinished))

    @property
    def interrupted(self) -> bool:
        return self.remaining > 0

    @property
    def terminated(self) -> bool:
        """Stopped by SIGTERM (not Ctrl-C)."""
        return stop_signals.terminated()

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return stop_signals.exit_code_of_interrupt()
        return 1 if (self.errored or self.failed_runs) else 0


def storage_root(storage_path: Optional[str]) -> str:
    """An absolute local path or a URI (s3://, gs://, ...): Ray needs one of those."""
    path = storage_path or os.environ.get("MIXUP_SWEEP_STORAGE") or DEFAULT_STORAGE
    if "://" in path:
        return path.rstrip("/")
    return os.path.abspath(os.path.expanduser(path))


def experiment_path(storage: str, name: str) -> str:
    return f"{storage}/{name}"


def with_absolute_data_root(sweep: Sweep, storage: str) -> Sweep:
    """Trials run in Ray's per-trial working directories, so a relative data.root (./data) is made
    absolute here. With local storage it means the driver's directory (a disk the nodes share); with
    object storage (s3://: nodes share no disk) it means each trial's own node: ~/data under that
    node's home, expanded by the trial there (the driver's directory does not exist on other nodes)."""
    root = sweep.base_trial["data"]["root"]
    if "://" in root or os.path.isabs(root) or root.startswith("~"):
        return sweep
    base = copy.deepcopy(sweep.base_trial)
    if "://" in storage:
        base["data"]["root"] = "~/" + os.path.normpath(root)
    else:
        base["data"]["root"] = os.path.abspath(root)
    return dataclasses.replace(sweep, base_trial=base)


def sweep_exists(path: str) -> bool:
    return tune.Tuner.can_restore(path)


def shutdown_ray() -> None:
    """Once the trials are done Ray is not needed (the selection reads MLflow alone): shut it down now,
    in this thread, before the selection, rather than at the interpreter's exit.

    - An embedded Ray has no autoscaler monitor (ray_compat/lean_head.py), whose death Ray's shutdown
      waited a second for.
    - No other thread runs Python that could free a Ray object meanwhile: the background imports are
      joined first, and garbage collection is done before and off during the shutdown. A Ray object
      freed while the core worker is being torn down ends the process on the spot (Ray's QuickExit:
      exit code 1, no message, stdout lost), which a background shutdown beside the selection did once.
    - Ray's hook for uncaught errors reports them to its GCS, gone afterwards: Python's own from here.
    """
    import ray

    join_background_imports()
    if not ray.is_initialized():
        gc.unfreeze()
        return
    sys.excepthook = sys.__excepthook__
    gc.collect()  # a small collection: what existed before the trials started is frozen (_fit)
    gc.disable()
    try:
        ray.shutdown()
    finally:
        gc.enable()
        gc.unfreeze()  # collectable again, as before the trials (a process may run another sweep)


TRIAL_PRELOAD = "sweeps.trial.preload"


def preload_for(sweep: Sweep) -> list[str]:
    """Modules the embedded Ray's workers import as they start: the trials' (trial/preload.py) when the
    sweep's concurrent trials fill every CPU, so that every worker Ray prestarts (one per CPU) hosts a
    trial; else none (idle workers would hold torch for nothing)."""
    res = sweep.spec.resources
    slots = min(concurrent_ray_trials(sweep), ray_trial_count(sweep)) * res.cpu * res.pack
    return [TRIAL_PRELOAD] if res.cpu > 0 and slots >= embedded_ray_cpus() else []


def start_ray(address: Optional[str], preload: list[str] = ()) -> None:
    import ray

    quiet_driver_output()
    # Tune adds no result logger of its own (_result_loggers gives JSON and CSV): for a run, and for a
    # resume, whose run config (and its loggers) Tune reads back from the experiment.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if ray.is_initialized():
        return
    address = cluster_address(address)
    if address:
        ray.init(address=address)
    else:
        # A new embedded single-node Ray (on loopback: see cli.py). address="local": never attach to a
        # cluster that `ray start` left registered on this machine (a stale one makes ray.init() hang).
        inherit_environment_before_ray_init()
        # RAY_USAGE_STATS_ENABLED=0 (usage_reporting.py, at import): no usage statistics sent, and one
        # process fewer (a dashboard process of their own).
        system_config = {**LEAN_HEAD_SYSTEM_CONFIG, **preload_system_config(list(preload), embedded_ray_cpus())}
        with lean_head():  # no API server, no autoscaler monitor, no idle waits: nothing here uses them
            ray.init(address="local", include_dashboard=False, _system_config=system_config)
        no_runtime_env_for_trial_actors()  # the trials start in the workers Ray prestarted
    stop_signals.install()  # ray.init installed its own SIGTERM handler (sys.exit mid-fit: SIGABRT)


# ---------------------------------------------------------------------------------------------
# Closing child runs that a trial could not close itself


class TrialRunCloser(tune.Callback):
    """A trial closes its own MLflow run; this closes the runs of trials that cannot: stopped by the
    scheduler (ASHA) or whose process died."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self._client = None

    def __getstate__(self):  # pickled into Ray's experiment state: no live client
        return {**self.__dict__, "_client": None}

    def _close(self, trial, status: str, tags: dict[str, str], summarize: bool = False) -> None:
        try:
            self._close_runs(trial, status, tags, summarize)
        except Exception as e:  # noqa: BLE001 - a store gone away: _finish says so once; the sweep goes on
            if not (isinstance(e, tracking.TrackingStoreGone) or _is_tracking_failure(e)):
                raise

    def _close_runs(self, trial, status: str, tags: dict[str, str], summarize: bool) -> None:
        tracking.check_store_exists(self.tracking_uri)  # never recreate a vanished store here
        if self._client is None:
            self._client = tracking.client_for(self.tracking_uri, create=False)
        runs = tracking.find_runs_of_ray_trial(self._client, self.experiment_id, self.parent_run_id, trial.trial_id)
        for run in runs:
            if run.info.status != "RUNNING":
                continue
            for key, value in tags.items():
                self._client.set_tag(run.info.run_id, key, value)
            if summarize:
                tracking.log_summary_of_logged_epochs(self._client, run,
                                                      (trial.last_result or {}).get("time_total_s", 0.0))
            self._client.set_terminated(run.info.run_id, status=status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        epoch = (trial.last_result or {}).get("epoch")
        self._close(trial, "FINISHED", {keys.STOPPED_EARLY_TAG: f"stopped by the scheduler after epoch {epoch}"},
                    summarize=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._close(trial, "FAILED", {keys.ERROR_TAG: "the trial process failed (see error.txt in its Ray trial directory)"})


def _progress_reporter(sweep: Sweep):
    cfg = sweep.trial_config({})
    columns = [c for c in PROGRESS_COLUMNS if c == "epoch" or metric_available(c, cfg) is None]
    if sweep.spec.metric not in columns:
        columns.append(sweep.spec.metric)
    return ProgressTable(
        metric_columns=columns,
        parameter_columns=search.parameter_columns(sweep),
        max_report_frequency=10,
    )


def trial_context(sweep: Sweep, tracking_uri: str, experiment_id: str, parent_run_id: str) -> TrialContext:
    """Everything a trial needs from the spec, resolved here once (trial/context.py)."""
    return TrialContext(
        base_trial=sweep.base_trial,
        metric=sweep.spec.metric,
        mode=sweep.spec.mode,
        report_interval_s=sweep.spec.report_interval_s,
        rung_epochs=search.asha_rung_epochs(sweep),
        tracking_uri=tracking_uri,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        label_keys=tuple(sweep_label_keys(sweep)),
    )


def _trainable(sweep: Sweep, context: TrialContext):
    res = sweep.spec.resources  # per trial; a pack holds what its trials need together
    resources = {"cpu": res.cpu * res.pack, "gpu": res.gpu * res.pack}
    return tune.with_resources(tune.with_parameters(train_trial, context=context), resources)


def saved_statuses(path: str) -> dict[str, str]:
    """Trial statuses as Ray saved them (what `resume` will see). After Ctrl-C the in-memory trials
    read TERMINATED, while the saved state keeps the interrupted ones RUNNING/PENDING."""
    return {t.trial_id: t.status for t in tune.ExperimentAnalysis(path).trials}


class TrackingLost(Exception):
    """The tracking store went away during the sweep (deleted, or a server gone past MLflow's retries):
    the sweep stopped, resumable once the store is back. One line, exit 1."""


def _finish(client, sweep: Sweep, tracking_uri: str, parent_run_id: str, path: str,
            experiment_id: str) -> SweepOutcome:
    try:
        tracking.check_store_exists(tracking_uri)
        return _finish_in_store(client, sweep, tracking_uri, parent_run_id, path, experiment_id)
    except tracking.TrackingStoreGone as e:
        raise TrackingLost(f"sweep {sweep.name!r} stopped: {e}; restore it (from a backup), then: "
                           f"mixup-sweep resume {sweep.name}") from None
    except Exception as e:  # noqa: BLE001 - MLflow's errors after its retries: say what, not a traceback
        if _is_tracking_failure(e):
            raise TrackingLost(f"sweep {sweep.name!r} stopped: the MLflow store {tracking_uri} is unreachable "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); once it is "
                               f"back: mixup-sweep resume {sweep.name}") from None
        raise


def _is_tracking_failure(e: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    return isinstance(e, (MlflowException, ConnectionError, OSError)) or type(e).__module__.startswith(
        ("requests", "urllib3", "sqlalchemy"))


def _finish_in_store(client, sweep: Sweep, tracking_uri: str, parent_run_id: str, path: str,
                     experiment_id: str) -> SweepOutcome:
    outcome = SweepOutcome(sweep.name, tracking_uri, parent_run_id, path, ray_trial_count(sweep),
                           saved_statuses(path), unit="pack(s)" if packs_trials(sweep) else "trial(s)")
    if outcome.interrupted:
        # Trials stopped by Ctrl-C keep RUNNING child runs: mark them KILLED (resume reopens them).
        for trial_id in outcome.unfinished:
            for run in tracking.find_runs_of_ray_trial(client, experiment_id, parent_run_id, trial_id):
                if run.info.status == "RUNNING":
                    client.set_terminated(run.info.run_id, status="KILLED")
        client.set_terminated(parent_run_id, status="KILLED")
    else:
        def count(where: str) -> int:
            return len(client.search_runs([experiment_id], max_results=10_000,
                                          filter_string=f"tags.`{keys.PARENT_TAG}` = '{parent_run_id}' and {where}"))

        outcome.failed_runs = count("attributes.status = 'FAILED'")
        outcome.finished_runs = count(f"tags.`{keys.ROLE_TAG}` = 'trial' and attributes.status = 'FINISHED'")
        client.set_tag(parent_run_id, keys.TRIALS_FAILED_TAG, str(outcome.failed_runs))
        client.set_terminated(parent_run_id, status="FINISHED")
    return outcome


# ---------------------------------------------------------------------------------------------
# run / resume


def run_sweep(sweep: Sweep, address: Optional[str] = None, tracking_uri: Optional[str] = None,
              storage_path: Optional[str] = None) -> SweepOutcome:
    target = tracking.resolve_tracking(tracking_uri)
    storage = storage_root(storage_path)
    sweep = with_absolute_data_root(sweep, storage)
    path = experiment_path(storage, sweep.name)
    _refuse_existing(sweep.name, path)
    # One driver per sweep (lease.py): a second `run` started at the same moment is refused here,
    # before anything is created in MLflow or Ray is started.
    with lease.acquire(path, sweep.name, "run"):
        _refuse_existing(sweep.name, path)  # another driver may have run it to the end meanwhile
        return _run_sweep(sweep, address, target, storage, path)


def _refuse_existing(name: str, path: str) -> None:
    if sweep_exists(path):
        raise ConfigError(
            f"sweep {name!r} already exists at {path}: continue it with `mixup-sweep resume {name}`, "
            f"or delete that directory (or pick another name with --set name=...) to start over"
        )


def _run_sweep(sweep: Sweep, address: Optional[str], target, storage: str, path: str) -> SweepOutcome:
    if uses_cluster(address) and target.sqlite_path is not None:
        print(f"note: trials write to {target.sqlite_path}: on a multi-node cluster every node must see that path; "
              f"otherwise use an MLflow server (--tracking-uri http://HOST:PORT)", file=sys.stderr)
    def open_sweep_run():
        client = tracking.client_for(target.uri)
        experiment_id = tracking.get_experiment_id(client, sweep.name, target.artifact_location, create=True)
        parent_run_id = tracking.start_sweep_run(client, experiment_id, sweep.to_dict(), sweep.to_yaml(), path)
        record_driver(client, parent_run_id, sweep.n_trials, total_epochs(sweep))
        return client, experiment_id, parent_run_id

    client, experiment_id, parent_run_id = _while_ray_starts(address, open_sweep_run, preload_for(sweep))
    print(f"MLflow: experiment {sweep.name!r}, sweep run {parent_run_id} at {target.uri}", file=sys.stderr)
    note = ignored_share_note(sweep)
    if note:
        print(f"note: {note}", file=sys.stderr)
    context = trial_context(sweep, target.uri, experiment_id, parent_run_id)
    _fit(client, parent_run_id, address, lambda: tune.Tuner(
        _trainable(sweep, context),
        tune_config=search.tune_config(sweep, branch_root=f"{path}/branch_points"),
        run_config=_run_config(sweep, storage, target.uri, experiment_id, parent_run_id),
    ), sweep.name)
    return _finish(client, sweep, target.uri, parent_run_id, path, experiment_id)


def resume_sweep(name: str, address: Optional[str] = None, tracking_uri: Optional[str] = None,
                 storage_path: Optional[str] = None) -> SweepOutcome:
    target = tracking.resolve_tracking(tracking_uri)
    storage = storage_root(storage_path)
    path = experiment_path(storage, name)
    if not sweep_exists(path):
        raise ConfigError(
            f"no sweep {name!r} to resume at {path} (pass the --storage-path that `run` used; "
            f"start a new sweep with `mixup-sweep run SPEC`)"
        )
    if target.sqlite_path is not None and not target.sqlite_path.exists():
        raise ConfigError(f"no MLflow store at {target.uri} (pass the --tracking-uri that `run` used)")
    with lease.acquire(path, name, "resume"):  # refused while another driver runs it, before any change
        return _resume_sweep(name, address, target, storage, path)


def _resume_sweep(name: str, address: Optional[str], target, storage: str, path: str) -> SweepOutcome:
    client = tracking.client_for(target.uri)
    experiment_id = tracking.get_experiment_id(client, name, None, create=False)
    parent = tracking.find_sweep_run(client, experiment_id, path) if experiment_id else None
    if parent is None:
        raise ConfigError(
            f"{target.uri} has no sweep run for {name!r} at {path} (pass the --tracking-uri that `run` used)"
        )
    parent_run_id = parent.info.run_id
    sweep = validate_sweep(yaml.safe_load(tracking.read_sweep_spec(client, parent_run_id)), f"{name} (spec.yaml of run {parent_run_id})")
    restored = restored_trials(path)  # a damaged state fails here, before anything changes
    if _nothing_to_resume(parent, restored, sweep):
        print(f"sweep {name!r} is finished: every trial ran to its end, nothing to resume (Ray not started)",
              file=sys.stderr)
        return _finish(client, sweep, target.uri, parent_run_id, path, experiment_id)
    client.update_run(parent_run_id, status="RUNNING")
    record_driver(client, parent_run_id, sweep.n_trials, total_epochs(sweep))
    print(f"MLflow: resuming experiment {name!r}, sweep run {parent_run_id} at {target.uri}", file=sys.stderr)
    if restored is not None:
        lost = tracking.delete_runs_of_lost_trials(client, experiment_id, parent_run_id, {t.trial_id for t in restored})
        if lost:
            print(f"note: deleted {lost} MLflow run(s) of trial(s) lost with the driver before Ray saved them; "
                  f"their places in the sweep run again", file=sys.stderr)
    context = trial_context(sweep, target.uri, experiment_id, parent_run_id)
    # Errored trials continue from their last checkpoint (resume_errored), not from scratch.
    _fit(client, parent_run_id, address, lambda: tune.Tuner.restore(
        path,
        trainable=_trainable(sweep, context),
        resume_unfinished=True,
        resume_errored=True,
        restart_errored=False,
        storage_filesystem=storage_filesystem(storage),
    ), name, preload_for(sweep))
    return _finish(client, sweep, target.uri, parent_run_id, path, experiment_id)


def _while_ray_starts(address: Optional[str], open_sweep_run, preload: list[str] = ()):
    """Start Ray here while `open_sweep_run` (MLflow: its import, the store, the experiment and the parent
    run) runs in a thread: the two do not depend on each other, and each takes seconds (Ray mostly
    waits for the processes it spawns; a new SQLite store runs its schema migrations). Ray stays in the
    main thread: ray.init installs signal handlers. Returns what `open_sweep_run` returns."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-setup") as pool:
        opening = pool.submit(open_sweep_run)
        try:
            start_ray(address, preload)
        except BaseException as e:
            with contextlib.suppress(Exception):  # the run was made for a sweep that never started
                client, _, parent_run_id = opening.result()
                client.set_terminated(parent_run_id, status="KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
            raise
        return opening.result()


def _nothing_to_resume(parent, restored, sweep: Sweep) -> bool:
    """A finished sweep whose every planned Ray trial ended normally (an errored one would be retried)."""
    return (parent.info.status == "FINISHED" and restored is not None and len(restored) >= ray_trial_count(sweep)
            and all(t.status == "TERMINATED" for t in restored))


# What the selection after the sweep imports, imported while the driver waits for the trials.
SELECTION_IMPORTS = (*PLOTTING, "sweeps.best.command")


def _fit(client, parent_run_id: str, address: Optional[str], make_tuner, name: str = "NAME",
         preload: list[str] = ()) -> None:
    try:
        start_ray(address, preload)
        import_in_background(*SELECTION_IMPORTS)
        # Everything the driver holds before its trials start (modules, the MLflow client, the spec: about
        # 330,000 objects) is never garbage: out of the collector's sight from now on, so the collection
        # before Ray's shutdown scans only what the sweep made (0.02-0.05 s instead of 0.2 s on 2 cores).
        gc.freeze()
        make_tuner().fit()
        shutdown_ray()
    except KeyboardInterrupt:  # a second Ctrl-C: Ray saved its state at the first, still resumable
        with contextlib.suppress(Exception):  # the store may be what failed
            client.set_terminated(parent_run_id, status="KILLED")
        raise
    except BaseException as e:
        with contextlib.suppress(Exception):
            tracking.check_store_exists(client.tracking_uri)  # a vanished store is never recreated
            client.set_terminated(parent_run_id, status="FAILED")
        if isinstance(e, Exception) and (isinstance(e, tracking.TrackingStoreGone) or _is_tracking_failure(e)):
            raise TrackingLost(f"sweep {name!r} stopped: the MLflow store {client.tracking_uri} failed "
                               f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); once it is "
                               f"back: mixup-sweep resume {name}") from None
        raise


def _result_loggers() -> list:
    """Ray Tune's JSON and CSV result files (result.json, progress.csv), without its TensorBoard logger,
    which MLflow makes redundant and whose tensorboardX import brings torch into the driver (1.5 s on 2
    cores before the first trial). Tune's own switch TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1 (start_ray)
    keeps it from adding the TensorBoard logger back; a user who sets it to 0 gets it.
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [JsonLoggerCallback(), CSVLoggerCallback()]


def _run_config(sweep: Sweep, storage: str, tracking_uri: str, experiment_id: str, parent_run_id: str):
    return tune.RunConfig(
        name=sweep.name,
        storage_path=storage,
        storage_filesystem=storage_filesystem(storage),  # local: files appear whole (atomic_storage.py)
        failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
        # Two, not one: the newest is committed before the previous one is deleted.
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        progress_reporter=_progress_reporter(sweep),
        callbacks=[TrialRunCloser(tracking_uri, experiment_id, parent_run_id),
                   SweepProgress(tracking_uri, parent_run_id, sweep.n_trials, total_epochs(sweep)),
                   CurveCacheWriter(tracking_uri, experiment_id, parent_run_id, sweep.spec.metric),
                   *_result_loggers()],
        verbose=1,
    )
