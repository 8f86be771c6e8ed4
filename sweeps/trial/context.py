"""What every trial of a sweep gets from the driver, resolved there once: the base trial configuration
(spec defaults and overrides applied), the selection metric and mode, the report interval, the epochs
Ray must see (ASHA's rungs), the labels' keys, and where its MLflow run goes.

Small and picklable (Ray ships it to every trial through `tune.with_parameters`). A trial only applies
its own values of the varying keys and validates that one configuration: it never re-reads or
re-validates the spec, whose grid may have many thousands of points.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from mixup_core import TrialConfig, set_dotted, validate_trial_config

from ..labels import trial_label
from ..metrics import Mode, worst_value


def trial_dict_at(base_trial: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The raw configuration of the trial with these values of the varying keys."""
    raw = copy.deepcopy(base_trial)
    for key, value in params.items():
        set_dotted(raw, key, value)
    return raw


def trial_config_at(base_trial: dict[str, Any], params: dict[str, Any]) -> TrialConfig:
    """The validated configuration of the trial with these values of the varying keys."""
    raw = trial_dict_at(base_trial, params)
    shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return validate_trial_config(raw, source=f"the trial with {shown or 'no changes'}")


@dataclass(frozen=True)
class TrialContext:
    base_trial: dict[str, Any]  # the fully resolved trial configuration of the spec
    metric: str
    mode: Mode
    report_interval_s: float
    rung_epochs: frozenset[int]  # epochs at which ASHA compares trials: always reported to Ray
    tracking_uri: str  # absolute
    experiment_id: str
    parent_run_id: str
    label_keys: tuple[str, ...] = ()  # the keys trial labels show (labels.sweep_label_keys)

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        return trial_config_at(self.base_trial, params)

    def run_name(self, params: dict[str, Any]) -> str:
        """The MLflow run name of the trial with these values of the varying keys: its label, the same
        in Ray's table, `best`, `status` and the plots (labels.py)."""
        return trial_label(params, self.label_keys)

    @property
    def worst_value(self) -> float:
        return worst_value(self.mode)
