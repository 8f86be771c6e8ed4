"""The sweep service: specs, Ray Tune orchestration, MLflow tracking and the `mixup-sweep` CLI.

Depends on `mixup_core` through `mixup_core.trial.run_trial` and `mixup_core.reporting.Reporter` only.
"""

from .usage_reporting import keep_usage_reporting_off

keep_usage_reporting_off()  # before anything imports MLflow or starts Ray (usage_reporting.py)
