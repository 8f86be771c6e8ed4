"""The sweep service: specs, Ray Tune orchestration, MLflow tracking and the `mixup-sweep` CLI.

Depends on `mixup_core` through `mixup_core.trial.run_trial` and `mixup_core.reporting.Reporter` only.
"""
