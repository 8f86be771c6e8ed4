"""Every use of a Ray internal (a private module, an underscore name, an undocumented attribute or
protocol) lives in this package, one module per need, and nowhere else in `sweeps` (a contract test
checks it). Each internal is listed in `INTERNALS` with a probe that fails, naming the internal, when
a Ray upgrade changes what we rely on; tests/test_ray_compat.py runs every probe. pyproject.toml caps
`ray` below the next minor release nobody has tested.

  experiment_state.py      the trials of Ray's saved experiment state (resume)
  search_state.py          searcher / concurrency-limiter state rebuilt from those trials (resume)
  optuna_search.py         which trials Ray's OptunaSearch handed out
  surviving_checkpoint.py  a trial restored from the newest checkpoint that survives a driver crash
  asha.py                  ASHA's rung epochs, read from the scheduler
  resources.py             the CPUs an embedded Ray offers
  runtime_env.py           no runtime_env for trial actors on an embedded Ray (credentials, prestarted workers)
  loopback_node.py         `ray start` of a worker node that stays on 127.0.0.1 (dev cluster)
  quiet_output.py          Ray's lines that mislead a user (its resume hint, per-checkpoint INFO, logdir)
  worker_preload.py        modules an embedded Ray's workers import as they start (prestarted ones too, kept)
  lean_head.py             an embedded Ray head without its API server and autoscaler monitor, nor idle waits
  fast_exit.py             (CPython, not Ray) leaving after a command without the interpreter's teardown
  mlflow_bulk.py           (MLflow, not Ray) the tracking store behind a client, the server's bulk history call,
                           a run's latest metric points (step, timestamp, value)
"""

from __future__ import annotations

import inspect
import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable


class RayInternalChanged(AssertionError):
    pass


@dataclass(frozen=True)
class Internal:
    name: str  # the Ray internal, as code names it
    used_by: str  # the module of this package that relies on it
    probe: Callable[[], None]  # raises when the internal is not what that module relies on


def _require(condition: bool, what: str) -> None:
    if not condition:
        raise RayInternalChanged(what)


def _params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def _probe_get_fs_and_path() -> None:
    from ray.train._internal.storage import get_fs_and_path

    _require(_params(get_fs_and_path)[:1] == ["storage_path"], "get_fs_and_path(storage_path, ...)")


def _probe_find_newest() -> None:
    from ray.tune.execution.experiment_state import _find_newest_experiment_checkpoint

    _require("fs" in _params(_find_newest_experiment_checkpoint), "_find_newest_experiment_checkpoint(path, fs=...)")


def _probe_loads_with_cloudpickle() -> None:
    import json

    from ray.tune.utils.serialization import _loads_with_cloudpickle

    _require(_loads_with_cloudpickle(json.dumps({"a": 1})) == {"a": 1}, "_loads_with_cloudpickle(json text) -> object")


def _noop_searcher():
    from ray.tune.search.searcher import Searcher

    class _Noop(Searcher):
        def suggest(self, trial_id):
            return None

    return _Noop(metric="m", mode="max")


def _probe_concurrency_limiter() -> None:
    from ray.tune.search import ConcurrencyLimiter

    limiter = ConcurrencyLimiter(_noop_searcher(), max_concurrent=2)
    for attr, kind in (("live_trials", set), ("num_unfinished_live_trials", int), ("cached_results", dict)):
        _require(isinstance(getattr(limiter, attr, None), kind), f"ConcurrencyLimiter.{attr} ({kind.__name__})")


def _probe_search_generator() -> None:
    from ray.tune.execution import tune_controller
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    generator = SearchGenerator(ConcurrencyLimiter(_noop_searcher(), max_concurrent=1))
    _require(isinstance(getattr(generator, "_counter", None), int), "SearchGenerator._counter (int)")
    _require(isinstance(getattr(generator, "_finished", None), bool), "SearchGenerator._finished (bool)")
    _require(_params(SearchGenerator.restore_from_dir) == ["dirpath"], "SearchGenerator.restore_from_dir(dirpath)")
    _require("_search_alg.restore_from_dir(" in inspect.getsource(tune_controller.TuneController),
             "TuneController restores the search algorithm with restore_from_dir")


def _probe_optuna_trials() -> None:
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0.0, 1.0)}, metric="m", mode="max")
    _require(isinstance(getattr(search, "_ot_trials", None), dict), "OptunaSearch._ot_trials (dict)")
    search.suggest("t1")
    _require("t1" in search._ot_trials, "OptunaSearch._ot_trials is keyed by Ray trial id")


def _probe_asha_rungs() -> None:
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(time_attr="epoch", metric="m", mode="max", max_t=16, grace_period=1, reduction_factor=4)
    brackets = getattr(scheduler, "_brackets", None)
    _require(isinstance(brackets, list) and brackets, "AsyncHyperBandScheduler._brackets (list)")
    rungs = getattr(brackets[0], "_rungs", None)
    _require(isinstance(rungs, list) and all(len(r) == 2 for r in rungs), "_Bracket._rungs [(milestone, recorded)]")
    _require(sorted(m for m, _ in rungs) == [1, 4, 16], "_Bracket._rungs milestones grace * rf**k")


def _probe_get_num_cpus() -> None:
    from ray._private.utils import get_num_cpus

    _require(float(get_num_cpus()) > 0, "ray._private.utils.get_num_cpus() > 0")


def _probe_env_vars_to_propagate() -> None:
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    _require(isinstance(propagated, (set, frozenset)), "class_cache.ENV_VARS_TO_PROPAGATE (a set)")
    _require("AWS_ACCESS_KEY_ID" in propagated, "class_cache.ENV_VARS_TO_PROPAGATE holds the AWS credentials")
    _require(isinstance(getattr(class_cache, "DEFAULT_ENV_VARS", None), dict), "class_cache.DEFAULT_ENV_VARS (a dict)")
    source = inspect.getsource(class_cache._ActorClassCache.get)
    _require("DEFAULT_ENV_VARS" in source and "ENV_VARS_TO_PROPAGATE" in source,
             "_ActorClassCache.get builds the actor's env_vars from DEFAULT_ENV_VARS and ENV_VARS_TO_PROPAGATE")


def _probe_mixins() -> None:
    from ray.tune.trainable import Trainable
    from ray.tune.trainable.function_trainable import wrap_function

    class _Marker:
        pass

    def fn(config):
        pass

    fn.__mixins__ = (_Marker,)
    _require(issubclass(wrap_function(fn), _Marker), "wrap_function mixes in train_func.__mixins__")
    _require(_params(Trainable.restore) == ["checkpoint_path"], "Trainable.restore(checkpoint_result)")


def _probe_loopback_node() -> None:
    from ray._private import ray_constants, services
    from ray.scripts.scripts import main

    _require(hasattr(ray_constants, "ENABLE_RAY_CLUSTER"), "ray._private.ray_constants.ENABLE_RAY_CLUSTER")
    _require(callable(getattr(services, "resolve_ip_for_localhost", None)),
             "ray._private.services.resolve_ip_for_localhost(host)")
    _require(callable(main), "ray.scripts.scripts.main (the `ray` CLI)")


def _probe_quiet_output() -> None:
    import importlib

    from ray.tune import CLIReporter

    from .quiet_output import CHECKPOINT_LOGGERS, RESULT_LOGDIR, RESUME_HINT, RESUME_HINT_LOGGER

    _require(RESUME_HINT in inspect.getsource(importlib.import_module(RESUME_HINT_LOGGER)),
             f"{RESUME_HINT_LOGGER} logs {RESUME_HINT!r}")
    for name in CHECKPOINT_LOGGERS:
        _require("Checkpoint successfully created" in inspect.getsource(importlib.import_module(name)),
                 f"{name} logs each checkpoint")
    _require(RESULT_LOGDIR in inspect.getsource(importlib.import_module("ray.tune.progress_reporter")),
             "the progress table prints 'Result logdir:'")
    _require(callable(getattr(CLIReporter, "_progress_str", None)), "CLIReporter._progress_str")


def _probe_mlflow_bulk() -> None:
    import mlflow.server
    from mlflow import MlflowClient
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from .mlflow_bulk import BULK_ENDPOINT, tracking_store

    _require(hasattr(MlflowClient("http://127.0.0.1:1"), "_tracking_client"), "MlflowClient._tracking_client.store")
    _require(type(tracking_store(MlflowClient("http://127.0.0.1:1"))).__name__ == "RestStore",
             "MlflowClient(http URI)._tracking_client.store is a RestStore")
    _require(_params(SqlAlchemyStore.get_metric_history_bulk) == ["run_ids", "metric_key", "max_results"],
             "SqlAlchemyStore.get_metric_history_bulk(run_ids, metric_key, max_results)")
    rules = {r.rule for r in mlflow.server.app.url_map.iter_rules()}
    _require(any(rule.endswith(BULK_ENDPOINT) for rule in rules), f"mlflow server serves {BULK_ENDPOINT}")
    from mlflow.entities import Metric, Run, RunData, RunInfo

    from .mlflow_bulk import latest_points

    info = RunInfo("r", "0", "u", "FINISHED", 0, 1, "active")
    run = Run(info, RunData(metrics=[Metric("val_acc", 0.5, 1234, 7)]))
    _require(latest_points(run) == {"val_acc": (7, 1234, 0.5)}, "RunData._metric_objs: the Metric objects of a run")


def _probe_worker_preload() -> None:
    import ray
    from ray._private.workers import default_worker

    _require("worker_preload_modules" in inspect.getsource(default_worker),
             "default_worker.py imports --worker-preload-modules before accepting work")
    raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
    with raylet.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        _require(data.find(b"preload_python_modules") >= 0 and data.find(b"--worker-preload-modules=") >= 0,
                 "the raylet knows the preload_python_modules setting and passes --worker-preload-modules")
        _require(data.find(b"num_workers_soft_limit") >= 0, "the raylet's num_workers_soft_limit setting")


def _probe_lean_head() -> None:
    from ray._private import node, parameter

    _require(_params(node.Node.start_api_server) == ["include_dashboard", "raise_on_failure"],
             "Node.start_api_server(*, include_dashboard, raise_on_failure)")
    head = inspect.getsource(node.Node.start_head_processes)
    _require("self._ray_params.no_monitor" in head and "self.start_api_server(" in head,
             "Node.start_head_processes starts the monitor unless no_monitor, then the API server")
    _require("self._webui_url" in inspect.getsource(node.Node), "Node._webui_url")
    _require("no_monitor" in _params(parameter.RayParams.__init__), "RayParams(no_monitor=...)")
    # the registration wait: Node.__init__ starts the node's processes, then asks the GCS for the node
    init = inspect.getsource(node.Node.__init__)
    _require(0 <= init.find("self.start_ray_processes()") < init.find("services.get_node("),
             "Node.__init__ calls start_ray_processes() and then waits in services.get_node")
    _require(all(hasattr(node.Node, a) for a in ("get_gcs_client", "start_ray_processes")), "Node.get_gcs_client()")
    _require("self._node_id" in init and "self.head" in init, "Node._node_id, Node.head")
    from ray._raylet import InnerGcsClient

    _require("get_all_node_info" in dir(InnerGcsClient), "GcsClient.get_all_node_info()")
    # the dependency check without importing: the same modules as Ray's own check
    from ray._private import services, utils

    from .lean_head import DASHBOARD_DEPENDENCIES

    _require("get_dashboard_dependency_error" in inspect.getsource(services.start_raylet)
             and callable(utils.get_dashboard_dependency_error),
             "services.start_raylet asks utils.get_dashboard_dependency_error() for the agent's mode")
    deps = Path(utils.__file__).parent.parent / "dashboard" / "optional_deps.py"
    imported = {line.split()[1] for line in deps.read_text().splitlines() if line.startswith(("import ", "from "))}
    _require(imported <= set(DASHBOARD_DEPENDENCIES), f"ray/dashboard/optional_deps.py imports only {DASHBOARD_DEPENDENCIES}")
    import ray

    raylet = Path(ray.__file__).parent / "core" / "src" / "ray" / "raylet" / "raylet"
    with raylet.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        _require(data.find(b"raylet_client_connect_timeout_milliseconds") >= 0
                 and data.find(b"raylet_client_num_connect_attempts") >= 0,
                 "the raylet's raylet_client_connect_timeout_milliseconds / raylet_client_num_connect_attempts")


def _probe_fast_exit() -> None:
    import atexit

    _require(callable(getattr(atexit, "_run_exitfuncs", None)), "atexit._run_exitfuncs()")


INTERNALS: tuple[Internal, ...] = (
    Internal("ray.train._internal.storage.get_fs_and_path", "experiment_state", _probe_get_fs_and_path),
    Internal("ray.tune.execution.experiment_state._find_newest_experiment_checkpoint", "experiment_state",
             _probe_find_newest),
    Internal("ray.tune.utils.serialization._loads_with_cloudpickle", "experiment_state", _probe_loads_with_cloudpickle),
    Internal("ConcurrencyLimiter.live_trials / num_unfinished_live_trials / cached_results", "search_state",
             _probe_concurrency_limiter),
    Internal("SearchGenerator._counter / _finished / restore_from_dir", "search_state", _probe_search_generator),
    Internal("OptunaSearch._ot_trials", "optuna_search", _probe_optuna_trials),
    Internal("AsyncHyperBandScheduler._brackets[i]._rungs", "asha", _probe_asha_rungs),
    Internal("ray._private.utils.get_num_cpus", "resources", _probe_get_num_cpus),
    Internal("ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE / DEFAULT_ENV_VARS", "runtime_env",
             _probe_env_vars_to_propagate),
    Internal("function trainable __mixins__ and Trainable.restore(checkpoint_result)", "surviving_checkpoint",
             _probe_mixins),
    Internal("ray._private.ray_constants.ENABLE_RAY_CLUSTER / services.resolve_ip_for_localhost", "loopback_node",
             _probe_loopback_node),
    Internal("ray.tune.tune / ray.train storage loggers, CLIReporter._progress_str", "quiet_output",
             _probe_quiet_output),
    Internal("MlflowClient._tracking_client.store, SqlAlchemyStore.get_metric_history_bulk, the server's "
             "get-history-bulk endpoint, RunData._metric_objs", "mlflow_bulk", _probe_mlflow_bulk),
    Internal("atexit._run_exitfuncs", "fast_exit", _probe_fast_exit),
    Internal("the raylet's preload_python_modules, num_workers_soft_limit (_system_config)", "worker_preload",
             _probe_worker_preload),
    Internal("Node.start_head_processes / start_api_server / _webui_url / start_ray_processes / get_gcs_client, "
             "RayParams.no_monitor, utils.get_dashboard_dependency_error, raylet_client_connect_* settings", "lean_head",
             _probe_lean_head),
)
