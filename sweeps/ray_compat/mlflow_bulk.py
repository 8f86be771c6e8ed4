"""MLflow's bulk metric-history calls (sweeps/best/histories.py): the tracking store behind an
`MlflowClient` (its `_tracking_client.store`; the public client has no bulk call), and the server's
bulk endpoint, the one MLflow's own UI draws its charts from."""

from __future__ import annotations

BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


def tracking_store(client):
    """The store an MlflowClient talks to: a RestStore (a server) or a SqlAlchemyStore (SQLite)."""
    return client._tracking_client.store
