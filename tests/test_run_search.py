"""A sweep's child runs searched in parallel parts from a tracking server (sweeps/best/run_search.py)
are exactly the runs one search returns, in its order: also a run started before its parent (a clock
off on another host), one started after the parent ended, runs on a part's boundary, and runs of
another parent left out. Through a real `mlflow server`."""

from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Metric

from sweeps import keys
from sweeps.best import run_search

from fault_support import MlflowServer


def test_parts_of_a_search_are_one_search(tmp_path, monkeypatch):
    server = MlflowServer(tmp_path).start()
    try:
        client = MlflowClient(server.uri)
        eid = client.create_experiment("parts")
        start = int(time.time() * 1000) - 100_000
        parent = client.create_run(eid, start_time=start, tags={keys.ROLE_TAG: keys.ROLE_SWEEP}).info.run_id
        other = client.create_run(eid, start_time=start).info.run_id
        offsets = [-5_000, 0, 0, 1, 25_000, 25_000, 49_999, 50_000, 99_999, 100_000, 250_000]
        offsets += list(range(3_000, 90_000, 3_000))
        for i, offset in enumerate(offsets):
            client.create_run(eid, start_time=start + offset, tags={keys.PARENT_TAG: parent, keys.ROLE_TAG: "trial"})
            if i % 5 == 0:
                client.create_run(eid, start_time=start + offset, tags={keys.PARENT_TAG: other})
        client.log_batch(parent, metrics=[Metric(keys.TRIALS_TOTAL, float(len(offsets)), start, 0)])
        client.set_terminated(parent, "FINISHED", end_time=start + 100_000)
        parent_run = client.get_run(parent)

        one = run_search.search_all(client, [eid], f"tags.`{keys.PARENT_TAG}` = '{parent}'")
        assert len(one) == len(offsets)
        monkeypatch.setattr(run_search, "PART_RUNS", 4)  # 40 runs: the 8 parts of MAX_PARTS
        assert len(run_search._parts(client, parent_run)) == run_search.MAX_PARTS
        parts = run_search.child_runs(client, eid, parent, parent_run)
        assert [r.info.run_id for r in parts] == [r.info.run_id for r in one]
        # Windows cover every start time exactly once, boundaries included.
        windows = run_search.start_time_windows(start, start + 100_000, 4)
        assert len(windows) == 4
        counts = [len(run_search.search_all(client, [eid], f"tags.`{keys.PARENT_TAG}` = '{parent}' AND {w}"))
                  for w in windows]
        assert sum(counts) == len(offsets) and min(counts) > 0
    finally:
        server.stop()


def test_a_sqlite_store_or_an_unknown_size_is_searched_in_one_part(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid = client.create_experiment("one")
    parent = client.create_run(eid)
    client.log_batch(parent.info.run_id, metrics=[Metric(keys.TRIALS_TOTAL, 5000.0, 0, 0)])
    assert run_search._parts(client, client.get_run(parent.info.run_id)) == [""]
    assert run_search.start_time_windows(10, 10, 4) == [""] and run_search.start_time_windows(0, 10, 1) == [""]
