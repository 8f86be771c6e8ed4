"""The curve-history cache on a sweep's parent run (sweeps/best/curve_cache.py): written at the end of
a sweep, it gives the learning curves exactly the histories the store holds, and never a history the
store has changed since (a trial that logged more, a re-logged epoch, a run gone); a damaged or foreign
file is ignored. On a SQLite store and through a real `mlflow server` (whose search and bulk answers
must agree on each run's latest point, or no entry would ever be used)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from sweeps import keys
from sweeps.best import curve_cache
from sweeps.best.command import print_selection_after_sweep, read_children, run_best
from sweeps.best.figures import curve_metrics_of
from sweeps.best.histories import fetch_histories

from fault_support import MlflowServer

METRICS = curve_metrics_of("val_acc")  # val_acc, test_acc_rare, feat_rare, feat_common


def _sweep(client, name: str, root) -> tuple[str, str]:
    """A parent run and 12 trial runs (stop epoch x seed) of 9 epochs; one still running, one that
    re-logged an epoch, one with a NaN, one without epoch 3, none with feat_common."""
    eid = client.create_experiment(name, artifact_location=str(root / f"artifacts_{name}"))
    parent = client.create_run(eid, tags={keys.ROLE_TAG: keys.ROLE_SWEEP}, run_name=name).info.run_id
    client.log_batch(parent, params=[Param("metric", "val_acc"), Param("mode", "max")])
    now = int(time.time() * 1000)
    for i, (stop, seed) in enumerate((s, seed) for s in (0, 3, 6, None) for seed in range(3)):
        run = client.create_run(eid, run_name=f"t{i}", tags={keys.PARENT_TAG: parent, keys.ROLE_TAG: keys.ROLE_TRIAL,
                                                            keys.TRIAL_ID_TAG: f"t{i}"}).info.run_id
        params = {"seed": seed, "mixup.stop_epoch": stop, "mixup.alpha": 1.0}
        rows = [Metric(k, 0.5 + 0.01 * e + 0.001 * i - 0.02 * j, now + e, e)
                for e in range(1, 10) for j, k in enumerate(("val_acc", "test_acc", "test_acc_rare", "feat_rare"))]
        if i == 4:
            rows.append(Metric("val_acc", 0.99, now + 50, 5))  # a resumed trial re-logged epoch 5
        if i == 7:
            rows.append(Metric("feat_rare", float("nan"), now + 60, 9))
        if i == 9:
            rows = [r for r in rows if r.step != 3]  # a history with a gap (stored with its steps)
        client.log_batch(run, params=[Param(k, json.dumps(v)) for k, v in params.items()], metrics=rows)
        client.log_batch(run, metrics=[Metric("best_val_acc", 0.6 + 0.001 * i, now, 0)])
        if i != 11:
            client.set_terminated(run, "FINISHED")
    return eid, parent


def _children(client, eid, parent):
    return read_children(client, eid, parent)


def _comparable(found: dict) -> dict:
    return {w: [(s, "nan" if math.isnan(v) else v) for s, v in h.items()] for w, h in found.items()}


def _every_curve_history(children) -> list[tuple[str, str]]:
    return [(r.info.run_id, m) for r in children for m in METRICS]


def _fetches(monkeypatch) -> list:
    """Records what curve_cache asks the store for (and still asks it)."""
    asked: list = []
    real = curve_cache.fetch_points

    def recording(client, wanted):
        asked.extend(wanted)
        return real(client, wanted)

    monkeypatch.setattr(curve_cache, "fetch_points", recording)
    return asked


def _check_cache_follows_the_store(client, eid, parent, monkeypatch):
    children = _children(client, eid, parent)
    running = next(r.info.run_id for r in children if r.info.status == "RUNNING")
    written = curve_cache.refresh(client, parent, children, METRICS, curve_cache.load(client, parent))
    # Every ended trial's logged curve metrics, nothing of the running one, nothing never logged.
    ended = [r for r in children if r.info.status == "FINISHED"]
    assert set(written.entries) == {(r.info.run_id, m) for r in ended for m in METRICS if m != "feat_common"}
    cache = curve_cache.load(client, parent)  # what the parent run now holds
    assert set(cache.entries) == set(written.entries)

    wanted = _every_curve_history(children)
    expected = fetch_histories(client, wanted)
    asked = _fetches(monkeypatch)
    got = curve_cache.histories(client, cache, children, wanted)
    assert _comparable(got) == _comparable(expected)
    assert sorted(asked) == sorted((running, m) for m in METRICS if m != "feat_common")  # only the running trial

    # The store changes under the cache: one trial logs an epoch more, another re-logs its last one.
    grown, relogged = ended[0].info.run_id, ended[1].info.run_id
    later = int(time.time() * 1000) + 10_000
    client.log_batch(grown, metrics=[Metric("val_acc", 0.123, later, 10)])
    client.log_batch(relogged, metrics=[Metric("test_acc_rare", 0.456, later, 9)])
    children = _children(client, eid, parent)
    asked.clear()
    got = curve_cache.histories(client, cache, children, wanted)
    assert got[(grown, "val_acc")][10] == 0.123 and got[(relogged, "test_acc_rare")][9] == 0.456
    assert _comparable(got) == _comparable(fetch_histories(client, wanted))
    assert {(grown, "val_acc"), (relogged, "test_acc_rare")} <= set(asked)
    assert (grown, "test_acc_rare") not in asked  # its other histories did not change: still cached

    # Refreshing again replaces exactly the changed entries and drops a deleted run's.
    client.delete_run(ended[2].info.run_id)
    children = _children(client, eid, parent)
    asked.clear()
    fresh = curve_cache.refresh(client, parent, children, METRICS, cache)
    assert sorted(asked) == sorted([(grown, "val_acc"), (relogged, "test_acc_rare")])
    assert not any(r == ended[2].info.run_id for r, _ in fresh.entries)
    asked.clear()
    assert curve_cache.refresh(client, parent, children, METRICS, fresh) is fresh and asked == []


def test_the_cache_gives_the_stores_histories_and_never_a_changed_one_on_sqlite(tmp_path, monkeypatch):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid, parent = _sweep(client, "cache", tmp_path)
    _check_cache_follows_the_store(client, eid, parent, monkeypatch)


def test_the_cache_gives_the_stores_histories_through_a_tracking_server(tmp_path, monkeypatch):
    server = MlflowServer(tmp_path).start()
    try:
        client = MlflowClient(server.uri)
        eid, parent = _sweep(client, "cache", tmp_path)
        _check_cache_follows_the_store(client, eid, parent, monkeypatch)
    finally:
        server.stop()


def test_the_end_of_a_sweep_writes_the_cache_and_best_redraws_from_it(tmp_path, monkeypatch, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid, parent = _sweep(client, "ended", tmp_path)
    print_selection_after_sweep("ended", uri, parent)
    capsys.readouterr()
    assert "curves/histories.npz" in [a.path for a in client.list_artifacts(parent, "curves")]
    running = [r.info.run_id for r in _children(client, eid, parent) if r.info.status == "RUNNING"]
    # A changed selection (one more trial ended) is drawn again: only what the cache lacks is fetched.
    for rid in running:
        client.set_terminated(rid, "FINISHED")
    asked = _fetches(monkeypatch)
    assert run_best("ended", uri, as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["written_to_parent"] is True
    assert {r for r, _ in asked} <= set(running)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other_format", "format_shape", "lengths",
                                    "short_tokens", "bad_index"])
def test_a_damaged_or_foreign_cache_file_is_ignored(tmp_path, damage):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid, parent = _sweep(client, "damaged", tmp_path)
    children = _children(client, eid, parent)
    cache = curve_cache.refresh(client, parent, children, METRICS, curve_cache.CurveCache())
    path = tmp_path / curve_cache.CACHE_FILE
    cache.write(path)
    if damage == "garbage":
        path.write_bytes(b"not an npz file")
    elif damage == "truncated":  # a zip cut short (a bad CRC, a missing directory)
        path.write_bytes(path.read_bytes()[:-200])
    else:
        arrays = dict(np.load(path))
        if damage == "other_format":
            arrays["format"] = np.array(curve_cache.FORMAT + 1)
        elif damage == "format_shape":
            arrays["format"] = np.array([curve_cache.FORMAT, 0])
        elif damage == "lengths":
            arrays["values"] = arrays["values"][:-1]
        elif damage == "short_tokens":
            arrays["token_time"] = arrays["token_time"][:-1]
        else:
            arrays["run"][0] = len(arrays["runs"]) + 5
        np.savez(path, **arrays)
    client.log_artifact(parent, str(path), artifact_path=curve_cache.CACHE_DIR)
    assert len(curve_cache.load(client, parent)) == 0
    wanted = _every_curve_history(children)
    got = curve_cache.histories(client, curve_cache.load(client, parent), children, wanted)
    assert _comparable(got) == _comparable(fetch_histories(client, wanted))


def test_the_driver_keeps_the_cache_up_to_date_while_trials_end(tmp_path, monkeypatch, caplog):
    """The driver's Tune callback, driven through its hooks as Tune calls them (restored from a pickle,
    as a resumed driver gets it): nothing before a trial ended, a refresh off the loop once one has,
    none again before the interval, and a store that fails is said once, never raised."""
    import pickle

    from sweeps.monitor.curve_writer import INTERVAL_ENV, CurveCacheWriter

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid, parent = _sweep(client, "running", tmp_path)
    monkeypatch.setenv(INTERVAL_ENV, "0")
    writer = pickle.loads(pickle.dumps(CurveCacheWriter(uri, eid, parent, "val_acc")))
    writer.on_step_end(0, [])
    assert not writer.refreshing() and len(curve_cache.load(client, parent)) == 0  # no trial ended yet
    writer.on_trial_complete(1, [], None)
    writer.on_step_end(2, [])
    writer.on_experiment_end([])
    ended = [r for r in _children(client, eid, parent) if r.info.status == "FINISHED"]
    assert set(curve_cache.load(client, parent).entries) == {
        (r.info.run_id, m) for r in ended for m in METRICS if m != "feat_common"}

    monkeypatch.setenv(INTERVAL_ENV, "3600")
    last = writer._thread
    writer.on_trial_error(3, [], None)
    writer.on_step_end(4, [])
    assert writer._thread is last  # no refresh before the interval

    gone = CurveCacheWriter(f"sqlite:///{tmp_path / 'deleted.db'}", eid, parent, "val_acc")
    monkeypatch.setenv(INTERVAL_ENV, "0")
    for _ in range(2):
        gone.on_trial_complete(5, [], None)
        gone.on_step_end(6, [])
        gone.on_experiment_end([])
    assert sum("curve-history cache not written" in r.getMessage() for r in caplog.records) == 1
    assert not (tmp_path / "deleted.db").exists()


def test_a_redraw_that_fails_half_way_leaves_the_selection_to_be_drawn_again(tmp_path, monkeypatch, capsys):
    """selection.json says "these plots are this selection's": it goes last, so a redraw that fails
    (here: drawing the curves) leaves the previous one, and the next `best` draws again."""
    from sweeps.best import figures

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    eid, parent = _sweep(client, "halfway", tmp_path)
    assert run_best("halfway", uri, as_json=True) == 0
    first = json.loads(capsys.readouterr().out)
    running = next(r.info.run_id for r in _children(client, eid, parent) if r.info.status == "RUNNING")
    client.set_terminated(running, "FINISHED")  # the selection changes: one more trial

    real = figures.write_plots

    def fails_at_the_curves(sel, history, directory, on_written=lambda p: None):
        real(sel, lambda *key: (_ for _ in ()).throw(OSError("disk full")), directory, on_written)

    monkeypatch.setattr(figures, "write_plots", fails_at_the_curves)
    assert run_best("halfway", uri, as_json=True) == 1
    capsys.readouterr()
    stored = json.loads(Path(client.download_artifacts(parent, "selection/selection.json", str(tmp_path / "a"))).read_text())
    assert stored["table"] == first["table"]  # still the previous selection's
    monkeypatch.undo()
    assert run_best("halfway", uri, as_json=True) == 0
    again = json.loads(capsys.readouterr().out)
    stored = json.loads(Path(client.download_artifacts(parent, "selection/selection.json", str(tmp_path / "b"))).read_text())
    assert stored["table"] == again["table"] != first["table"]
