"""MLflow's bulk metric-history calls (sweeps/best/histories.py): the tracking store behind an
`MlflowClient` (its `_tracking_client.store`; the public client has no bulk call), and the server's
bulk endpoint, the one MLflow's own UI draws its charts from; a run's latest metric points, which the
curve-history cache (sweeps/best/curve_cache.py) checks its entries against."""

from __future__ import annotations

BULK_ENDPOINT = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"


def tracking_store(client):
    """The store an MlflowClient talks to: a RestStore (a server) or a SqlAlchemyStore (SQLite)."""
    return client._tracking_client.store


def latest_points(run) -> dict[str, tuple[int, int, float]]:
    """{metric: (step, timestamp, value)} of a run's latest values, as the store keeps them (the
    largest (step, timestamp, value) logged: MLflow's rule). The public `run.data.metrics` has the
    values only; the entity keeps the whole Metric objects it was built from."""
    return {m.key: (int(m.step), int(m.timestamp), float(m.value)) for m in run.data._metric_objs}
