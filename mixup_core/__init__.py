"""mixup_core: the training engine of mixup-sweeps, torch only (no Ray, no MLflow, no Optuna).

The API the sweep layer uses, importable from the package itself:

  configuration   TrialConfig, validate_trial_config, load_trial_config, ConfigError, flatten,
                  set_dotted, parse_override, parse_overrides, read_yaml, format_validation_error,
                  dump_yaml
  training        run_trial(cfg, out_dir, reporter)           one trial (trial.py)
                  run_packed_trials(cfgs, out_dirs, reporters) several in one process (packing.py)
                  Reporter, LocalReporter                      how a runner hears epochs (reporting.py)
  outputs         read_history, latest_checkpoint, latest_intact_checkpoint, load_checkpoint (verifies
                  the checksums first), verify_checkpoint, CheckpointError, HISTORY_FILE, summarize
  devices, data   resolve_device, limit_cpu_threads, load_npz_arrays
  files           find_yaml, bundled_names (a YAML named by path or bundled name)

Names are resolved on first use (PEP 562): `from mixup_core import ConfigError` does not import torch,
which a driver that only validates a spec never needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigError": "errors",
    "TrialConfig": "config",
    "validate_trial_config": "config",
    "load_trial_config": "config",
    "flatten": "config",
    "set_dotted": "config",
    "parse_override": "config",
    "parse_overrides": "config",
    "read_yaml": "config",
    "format_validation_error": "config",
    "dump_yaml": "config",
    "validation_count": "config",
    "resolve_augment": "config",
    "run_trial": "trial",
    "run_packed_trials": "packing",
    "Reporter": "reporting",
    "LocalReporter": "reporting",
    "read_history": "checkpoint",
    "latest_checkpoint": "checkpoint",
    "latest_intact_checkpoint": "checkpoint",
    "verify_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "CheckpointError": "checkpoint",
    "HISTORY_FILE": "checkpoint",
    "summarize": "outputs",
    "resolve_device": "device",
    "limit_cpu_threads": "device",
    "load_npz_arrays": "data.npz",
    "find_yaml": "named_yaml",
    "bundled_names": "named_yaml",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mixup_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return __all__
