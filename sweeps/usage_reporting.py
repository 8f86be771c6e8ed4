"""The libraries this project runs report their usage to their vendors by default; here they do not.

* MLflow 3 starts a telemetry client at `import mlflow` in every process (the driver, each trial, the
  tracking server and the UI it serves): it fetches its configuration from config.mlflow-telemetry.io
  and sends usage events there (seen in a sweep's output with `_MLFLOW_TELEMETRY_LOGGING=true`: a DNS
  lookup of that host from the driver and from every trial). It is off outside CI only when
  `MLFLOW_DISABLE_TELEMETRY` is set.
* Ray sends usage statistics to usage-stats.ray.io from the head node unless `RAY_USAGE_STATS_ENABLED=0`.

Experiment data is often private and clusters are firewalled: traffic goes to loopback or to the
servers a user names, nowhere else. Defaults only (a user who sets either variable keeps it); set when
`sweeps` is imported, before anything imports MLflow or starts Ray, so that the processes started from
here (Ray's embedded node and its workers, `mlflow server`, a submitted job's driver) inherit them.
A cluster's own nodes get them in their environment (devcluster, docker/, cluster/).
"""

from __future__ import annotations

import os

USAGE_REPORTING_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0"}


def keep_usage_reporting_off() -> None:
    for name, value in USAGE_REPORTING_OFF.items():
        os.environ.setdefault(name, value)
