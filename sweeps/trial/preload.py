"""What a trial process imports, imported ahead of its trial. On an embedded Ray whose CPUs the sweep's
concurrent trials fill, the raylet imports this module into the worker processes it prestarts
(runner.py; Ray's `preload_python_modules`, ray_compat/worker_preload.py) while the driver is still
opening MLflow and building the Tuner: a trial's actor then starts in a worker that has torch, Ray Tune
and MLflow loaded (about 3.5 s of imports on a 2-core machine). Imports only: nothing runs."""

from __future__ import annotations

import importlib
import sys


def _preload() -> None:
    import mixup_core
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - a trial's SQLite store

    from . import trainable  # noqa: F401 - Ray Tune, the trial's reporters and tracking

    # torch.optim's optimizers import torch._dynamo when built (about 0.9 s): every trial builds one.
    importlib.import_module("torch._dynamo")
    # mixup_core's names resolve on first use (PEP 562): resolve those a trial calls.
    for name in ("run_trial", "run_packed_trials", "read_history", "latest_checkpoint"):
        getattr(mixup_core, name)


# Ray's worker catches only ImportError from a preload module; anything else would kill every worker
# before a trial could say what is wrong. A trial imports all of this again and fails there, in its
# own words.
try:
    _preload()
except Exception as error:  # noqa: BLE001
    print(f"mixup-sweep: preloading the trial's modules failed ({type(error).__name__}: {error}); "
          "the trial imports them itself", file=sys.stderr)
