"""The curves' metric histories fetched in bulk (sweeps/best/histories.py) are exactly what one
`get_metric_history` per run gives: on a SQLite store and through a real `mlflow server` (whose bulk
endpoint is the one MLflow's UI uses: this is its canary), with a re-logged step, a NaN, a metric a run
never logged, and responses cut at the value limit."""

from __future__ import annotations

import math
import time

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric

from sweeps.best import histories
from sweeps.best.histories import fetch_histories, latest_per_step

from fault_support import MlflowServer


def _expected(client, run_id, metric):
    return latest_per_step((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, metric))


def _comparable(found: dict) -> dict:
    """Exact equality, NaN included (NaN != NaN)."""
    return {w: [(step, "nan" if math.isnan(v) else v) for step, v in h.items()] for w, h in found.items()}


def _fill(client) -> list[tuple[str, str]]:
    eid = client.create_experiment("histories")
    now = int(time.time() * 1000)
    runs = []
    for i in range(7):
        rid = client.create_run(eid).info.run_id
        rows = [Metric(k, 0.1 * e + i + j, now + e, e) for e in range(1, 13) for j, k in enumerate(("val_acc", "feat_rare"))]
        if i == 2:
            rows.append(Metric("val_acc", 99.0, now + 100, 5))  # a resumed trial re-logs epoch 5: latest wins
            rows.append(Metric("val_acc", float("nan"), now + 101, 13))
        if i == 3:
            rows = [r for r in rows if r.key == "val_acc"]  # never logged feat_rare
        client.log_batch(rid, metrics=rows)
        runs.append(rid)
    return [(rid, m) for rid in runs for m in ("val_acc", "feat_rare", "never_logged")]


def _check(client, wanted, monkeypatch):
    expected = {w: _expected(client, *w) for w in wanted}
    assert expected[(wanted[6][0], "val_acc")][5] == 99.0
    monkeypatch.setattr(histories, "_single", lambda *a: pytest.fail(f"fetched one by one: {a[1:]}"))
    got = fetch_histories(client, wanted)
    assert list(got) == wanted
    assert _comparable(got) == _comparable(expected)
    assert math.isnan(got[(wanted[6][0], "val_acc")][13])
    # Responses cut at the value limit are split until each part fits...
    monkeypatch.setattr(histories, "BULK_MAX_VALUES", 30)  # 7 runs of 12-14 values: pairs fit
    assert _comparable(fetch_histories(client, wanted)) == _comparable(got)
    # ...and a run over the limit alone is fetched on its own.
    monkeypatch.undo()
    monkeypatch.setattr(histories, "BULK_MAX_VALUES", 14)  # run 2 logged 14 val_acc values
    assert _comparable(fetch_histories(client, wanted)) == _comparable(got)


def test_bulk_histories_on_sqlite_equal_one_request_per_history(tmp_path, monkeypatch):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    _check(client, _fill(client), monkeypatch)


def test_bulk_histories_through_a_tracking_server_equal_one_request_per_history(tmp_path, monkeypatch):
    server = MlflowServer(tmp_path).start()
    try:
        client = MlflowClient(server.uri)
        wanted = _fill(client)
        _check(client, wanted, monkeypatch)
        # A server without the bulk endpoint (older, or a proxy that refuses it): one history at a time.
        monkeypatch.undo()
        monkeypatch.setattr(histories, "BULK_ENDPOINT", "/ajax-api/2.0/mlflow/no-such-endpoint")
        assert _comparable(fetch_histories(client, wanted)) == _comparable({w: _expected(client, *w) for w in wanted})
    finally:
        server.stop()
