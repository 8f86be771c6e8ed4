"""`mixup-sweep best`: selection of the early-stop epoch from a real MLflow SQLite store.

The stores are built with the real MLflow client in exactly the sweep layout (design.md): a parent run
tagged mixup_sweep.role=sweep, child runs with mlflow.parentRunId / role=trial / trial_id, string params,
per-epoch metrics at step=epoch and step-less summary metrics. The expected selection is recomputed here
from what MLflow holds, independently of sweeps.best (selection and command).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from sweeps.best.command import print_selection_after_sweep, run_best
from sweeps.best.selection import SelectionError, TrialRecord, group_trials, select

EPOCHS = 6
SEED_NOISE = {0: -0.010, 1: 0.000, 2: 0.012}
# Final val_acc per (alpha, stop_epoch) before seed noise. Best: alpha 1.0, stop 4 (gap 0.03 >> std).
FINAL_VAL = {
    (1.0, 0): 0.70, (1.0, 2): 0.78, (1.0, 4): 0.82, (1.0, None): 0.74,
    (0.5, 0): 0.70, (0.5, 2): 0.76, (0.5, 4): 0.79, (0.5, None): 0.77,
}


def _trial_params(seed, alpha, stop, policy="same", spell=json.dumps):
    """Flattened trial config as MLflow string params. sweeps/tracking.py spells non-strings as JSON
    (null, 1.0); the str() spelling (None) is accepted too, and used for the 'null_best' sweep."""
    tree = {"seed": seed, "mixup.alpha": alpha, "mixup.stop_epoch": stop, "mixup.label_policy": policy,
            "mixup.per_sample": False, "data.name": "feature_noise", "train.epochs": EPOCHS, "train.lr": 0.1,
            "train.milestones": [0.5, 0.75]}
    return {k: v if isinstance(v, str) else spell(v) for k, v in tree.items()}


def _curve(final, peak_at=None, peak=None, epochs=EPOCHS):
    """val_acc per epoch rising to `final`; optionally a mid-run peak above every final value, so that
    selecting on the best epoch instead of the final one would pick a different group."""
    vals = {e: final - 0.05 * (epochs - e) / epochs for e in range(1, epochs + 1)}
    if peak_at is not None:
        vals[peak_at] = peak
    return vals


def _add_trial(client, eid, parent_id, trial_id, params, val_curve, status="FINISHED", error=None,
               val_loss_final=None, start_time=None):
    tags = {"mlflow.parentRunId": parent_id, "mixup_sweep.role": "trial", "mixup_sweep.trial_id": trial_id}
    run = client.create_run(eid, start_time=start_time, tags=tags, run_name=trial_id)
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    metrics = []
    for epoch, v in val_curve.items():
        test = v - 0.02
        loss = 1.0 - v if val_loss_final is None or epoch != max(val_curve) else val_loss_final
        for key, value in (("val_acc", v), ("val_loss", loss), ("test_acc", test), ("test_acc_common", test + 0.1),
                           ("test_acc_rare", test - 0.2), ("mixup_active", 1.0), ("train_loss", 0.5)):
            metrics.append(Metric(key, value, ts, epoch))
    if status == "FINISHED":
        best_epoch = max(val_curve, key=val_curve.get)
        for key, value in (("best_epoch", best_epoch), ("best_val_acc", val_curve[best_epoch]),
                           ("final_test_acc", val_curve[max(val_curve)] - 0.02), ("wall_s", 1.0)):
            metrics.append(Metric(key, float(value), ts, 0))
    extra = [RunTag("mixup_sweep.error", error)] if error else []
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()], tags=extra)
    if status != "RUNNING":
        client.set_terminated(rid, status=status)
    return rid


def _add_parent(client, eid, metric="val_acc", mode="max", start_time=None):
    run = client.create_run(eid, start_time=start_time, tags={"mixup_sweep.role": "sweep"}, run_name="sweep")
    client.log_batch(run.info.run_id, params=[Param("metric", metric), Param("mode", mode)])
    return run.info.run_id


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store: experiment 'es' (the main sweep) and 'null_best' (two parents)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)

    eid = client.create_experiment("es", artifact_location=str(root / "artifacts_es"))
    parent = _add_parent(client, eid)
    failed = running = retried = None
    for (alpha, stop), final in FINAL_VAL.items():
        for seed, noise in SEED_NOISE.items():
            tid = f"a{alpha}_s{stop}_seed{seed}"
            params = _trial_params(seed, alpha, stop)
            if (alpha, stop, seed) == (1.0, 2, 2):  # diverged: its partial history would win if counted
                failed = _add_trial(client, eid, parent, tid, params, {1: 0.9, 2: 0.95, 3: 0.99},
                                    status="FAILED", error="diverged at epoch 3")
                continue
            if (alpha, stop, seed) == (0.5, 0, 0):  # retried: an earlier failed attempt of the same trial
                retried = _add_trial(client, eid, parent, tid, params, {1: 0.99}, status="FAILED",
                                     error="worker died", start_time=int(time.time() * 1000) - 60_000)
            peak = (3, 0.95) if stop is None else (None, None)  # Mixup throughout peaks early (U shape)
            loss_final = 0.05 if (alpha, stop) == (0.5, 2) else None  # best group under val_loss / min
            _add_trial(client, eid, parent, tid, params, _curve(final + noise, *peak), val_loss_final=loss_final)
    running = _add_trial(client, eid, parent, "a1.0_s4_seed3", _trial_params(3, 1.0, 4), {1: 0.99, 2: 0.99},
                         status="RUNNING")
    client.set_terminated(parent, "FINISHED")

    # 'null_best': an older parent (best stop_epoch 3) and a newer one where Mixup throughout wins
    # by less than one std (seed noise).
    nid = client.create_experiment("null_best", artifact_location=str(root / "artifacts_null"))
    old = _add_parent(client, nid, start_time=int(time.time() * 1000) - 3_600_000)
    for stop, final in ((0, 0.60), (3, 0.70)):
        for seed in (0, 1, 2):
            _add_trial(client, nid, old, f"old_{stop}_{seed}", _trial_params(seed, 1.0, stop, spell=str),
                       _curve(final + SEED_NOISE[seed]))
    new = _add_parent(client, nid)
    for stop, final in ((0, 0.700), (None, 0.705)):
        for seed in (0, 1, 2):
            _add_trial(client, nid, new, f"new_{stop}_{seed}", _trial_params(seed, 1.0, stop, spell=str),
                       _curve(final + 2 * SEED_NOISE[seed]))
    return {"root": root, "uri": uri, "parent": parent, "failed": failed, "running": running,
            "retried": retried, "null_old": old, "null_new": new}


def _expected(uri, experiment, parent_id, metric="val_acc", mode="max"):
    """Selection recomputed from MLflow: FINISHED children, final-step metric, grouped by (alpha, stop)."""
    client = MlflowClient(uri)
    eid = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([eid], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    groups = {}
    for r in runs:
        if r.info.status != "FINISHED":
            continue
        hist = client.get_metric_history(r.info.run_id, metric)
        final = max(hist, key=lambda m: m.step).value
        test = max(client.get_metric_history(r.info.run_id, "test_acc"), key=lambda m: m.step).value
        key = (r.data.params["mixup.alpha"], r.data.params["mixup.stop_epoch"])
        groups.setdefault(key, []).append((final, test))
    table = {k: (statistics.fmean(v for v, _ in vals), statistics.stdev(v for v, _ in vals),
                 min(v for v, _ in vals), max(v for v, _ in vals), len(vals), statistics.fmean(t for _, t in vals))
             for k, vals in groups.items()}
    pick = max if mode == "max" else min
    best = pick(table, key=lambda k: table[k][0])
    return table, best


def _stop(s):
    return None if s in ("None", "null") else int(s)


def _key(params):
    return json.dumps(params["mixup.alpha"]), json.dumps(params["mixup.stop_epoch"])


def _run_json(capsys, **kw):
    rc = run_best(as_json=True, **kw)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_best_json_matches_independent_selection(store, capsys):
    doc = _run_json(capsys, names="es", tracking_uri=store["uri"])
    table, best = _expected(store["uri"], "es", store["parent"])

    assert doc["best_stop_epoch"] == _stop(best[1]) == 4
    assert doc["best_config"] == {"mixup.alpha": float(best[0]), "mixup.stop_epoch": 4}
    assert doc["metric"] == "val_acc" and doc["mode"] == "max"
    rows = {_key(r["params"]): r for r in doc["table"]}
    assert set(rows) == set(table)
    for key, (mean, std, lo, hi, n, test_mean) in table.items():
        row = rows[key]
        assert row["metric_mean"] == pytest.approx(mean, abs=1e-12)
        assert row["metric_std"] == pytest.approx(std, abs=1e-12)
        assert (row["metric_min"], row["metric_max"], row["n"]) == (pytest.approx(lo), pytest.approx(hi), n)
        assert row["test_acc_mean"] == pytest.approx(test_mean, abs=1e-12)
        assert row["test_acc_rare_mean"] == pytest.approx(test_mean - 0.2, abs=1e-9)
        assert row["test_acc_common_mean"] == pytest.approx(test_mean + 0.1, abs=1e-9)
    # The failed seed and the unfinished trial are left out (n=2 for that group), with their reasons.
    assert rows[("1.0", "2")]["n"] == 2 and rows[("1.0", "4")]["n"] == 3
    excluded = {e["run_id"]: e for e in doc["excluded"]}
    assert set(excluded) == {store["failed"], store["running"]}
    assert excluded[store["failed"]]["reason"] == "FAILED: diverged at epoch 3"
    assert excluded[store["running"]]["reason"] == "unfinished (RUNNING)"
    # The retried trial counts once, with its finished run.
    assert doc["superseded_run_ids"] == [store["retried"]]
    assert rows[("0.5", "0")]["n"] == 3 and store["retried"] not in rows[("0.5", "0")]["run_ids"]
    assert doc["fixed_params"]["mixup.per_sample"] is False and doc["fixed_params"]["train.milestones"] == [0.5, 0.75]
    assert doc["n_trials"] == 8 * 3 + 1 and doc["n_used"] == 8 * 3 - 1
    # Per alpha: best stop epoch 4 for both; clear margin, not within noise.
    per = {c["combination"]["mixup.alpha"]: c for c in doc["best_per_combination"]}
    assert per[1.0]["best_stop_epoch"] == 4 and per[0.5]["best_stop_epoch"] == 4
    assert doc["within_noise"] is False and doc["runner_up"]["params"] == {"mixup.alpha": 0.5, "mixup.stop_epoch": 4}


def test_best_writes_parent_run_idempotently(store, capsys):
    client = MlflowClient(store["uri"])
    parent = store["parent"]
    doc = _run_json(capsys, names="es", tracking_uri=store["uri"])
    history = len(client.get_metric_history(parent, "best_stop_epoch"))
    doc = _run_json(capsys, names="es", tracking_uri=store["uri"])
    assert doc["written_to_parent"] is True
    run = client.get_run(parent)
    assert run.data.metrics["best_stop_epoch"] == 4.0
    assert run.data.tags["mixup_sweep.best_stop_epoch"] == "4"
    assert json.loads(run.data.tags["mixup_sweep.best_config"]) == doc["best_config"]
    # Logged at a fixed step and only when changed: one entry, however often `best` runs.
    assert len(client.get_metric_history(parent, "best_stop_epoch")) == history == 1
    assert len(client.get_metric_history(parent, "selected_val_acc_mean")) == 1
    files = [f.path for f in client.list_artifacts(parent, "selection")]
    # alpha and the stop epoch are both swept: the heatmap too
    assert sorted(files) == ["selection/heatmap.png", "selection/learning_curves.png",
                             "selection/metric_vs_stop_epoch.png", "selection/selection.json",
                             "selection/selection.md"]
    local = Path(client.download_artifacts(parent, "selection", str(store["root"] / "dl")))
    for png in ("heatmap.png", "learning_curves.png", "metric_vs_stop_epoch.png"):
        data = (local / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    stored = json.loads((local / "selection.json").read_text())
    assert stored["best_stop_epoch"] == 4 and stored["table"] == doc["table"]
    assert "Best stop_epoch: 4" in (local / "selection.md").read_text()
    # Children get no selection metrics, only their label as run name (the store's children were
    # named by trial id, as a sweep made before labels existed); the experiment opens on its runs.
    assert "best_stop_epoch" not in client.get_run(store["failed"]).data.metrics
    eid = client.get_experiment_by_name("es").experiment_id
    names = {r.info.run_id: r.info.run_name for r in client.search_runs([eid], max_results=1000)}
    assert names[store["failed"]] == "E=2 a=1.0 s2" and names[store["running"]] == "E=4 a=1.0 s3"
    assert sorted(set(names.values()) - {"sweep"}) == sorted(
        f"E={'never' if stop is None else stop} a={alpha} s{seed}"
        for alpha, stop in FINAL_VAL for seed in (0, 1, 2, 3) if seed < 3 or (alpha, stop) == (1.0, 4))
    assert client.get_experiment(eid).tags["mlflow.experimentKind"] == "custom_model_development"


def test_text_report(store, capsys):
    assert run_best("es", store["uri"], as_json=False) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 120 for line in out.splitlines()), max(out.splitlines(), key=len)
    assert "Best stop_epoch: 4" in out
    assert "Excluded (not in the table): 2 trial(s)" in out
    assert "  - E=2 a=1.0 s2 (trial a1.0_s2_seed2): FAILED: diverged at epoch 3" in out
    assert "  - E=4 a=1.0 s3 (trial a1.0_s4_seed3): unfinished (RUNNING)" in out
    assert "Chosen on val_acc (validation); the test metrics in the table are shown for every group" in out
    table = [line for line in out.splitlines() if " ± " in line and line[:3].strip() in ("", "*")
             and "E=" in line]
    assert len(table) == 8 and table[0].split()[:2] == ["E=0", "a=0.5"] and table[3].split()[0] == "E=never"
    assert [line.startswith("*") for line in table] == [False] * 6 + [True, False]
    assert table[6].split()[1:3] == ["E=4", "a=1.0"] and "(best)" in table[6]
    assert len({line.index("±") for line in table}) == 1  # aligned columns
    # Every other group is worse seed by seed here (the store's seed noise is the same in every group).
    assert all("]  worse  " in line for i, line in enumerate(table) if i != 6), table
    assert "The data separate the best from every other group" in out
    assert "  a=0.5: E=4 (val_acc 0.7907 ± 0.0110); separated from every other stop epoch." in out

    assert run_best("es", store["uri"], as_json=False, wide=True) == 0
    wide = capsys.readouterr().out
    header = next(line for line in wide.splitlines() if line.lstrip().startswith("group"))
    for column in ("min .. max", "test_acc_common", "test_acc_rare", "test_acc_at_best"):
        assert column in header or column == "test_acc_at_best"  # the store logs no test_acc_at_best
    assert "More columns: --wide" not in wide


def test_null_best_most_recent_parent_and_run_id(store, capsys):
    client = MlflowClient(store["uri"])
    doc = _run_json(capsys, names="null_best", tracking_uri=store["uri"])
    _, best = _expected(store["uri"], "null_best", store["null_new"])
    assert best[1] == "None" and doc["best_stop_epoch"] is None and doc["parent_run_id"] == store["null_new"]
    # The gap (0.005) is far below either group's std over seeds (~0.022), but on every seed E=0 is
    # exactly 0.005 below: paired by seed, the data separate them.
    paired = doc["table"][0]["paired_vs_best"]
    assert doc["table"][0]["label"] == "E=0" and paired["n_seeds"] == 3 and paired["separated"] is True
    assert paired["mean_difference"] == pytest.approx(-0.005) and paired["ci95_high"] < 0
    assert doc["table"][0]["metric_std"] > 0.02 and doc["within_noise"] is False
    run = client.get_run(store["null_new"])
    assert run.data.metrics["best_stop_epoch"] == -1.0
    assert run.data.tags["mixup_sweep.best_stop_epoch"] == "null"
    assert run.data.tags["mixup_sweep.selection_within_noise"] == "false"

    assert run_best("null_best", store["uri"], as_json=False) == 0
    out = capsys.readouterr().out
    assert "Best: E=never (Mixup for the whole run)" in out and "The data separate the best from every other" in out

    doc_old = _run_json(capsys, names="null_best", tracking_uri=store["uri"], run_id=store["null_old"])
    assert doc_old["best_stop_epoch"] == 3 and doc_old["parent_run_id"] == store["null_old"]
    assert client.get_run(store["null_old"]).data.metrics["best_stop_epoch"] == 3.0
    assert client.get_run(store["null_new"]).data.metrics["best_stop_epoch"] == -1.0


def test_metric_override_infers_min_for_losses(store, capsys):
    doc = _run_json(capsys, names="es", tracking_uri=store["uri"], metric="val_loss")
    _, best = _expected(store["uri"], "es", store["parent"], metric="val_loss", mode="min")
    assert doc["mode"] == "min" and doc["metric"] == "val_loss"
    assert best == ("0.5", "2") and doc["best_config"] == {"mixup.alpha": 0.5, "mixup.stop_epoch": 2}
    # An exploratory metric is shown, never stored over the sweep's own (val_acc) selection.
    assert doc["written_to_parent"] is False and doc["artifacts"] == []
    run = MlflowClient(store["uri"]).get_run(store["parent"])
    assert "selected_val_loss_mean" not in run.data.metrics
    assert run.data.tags.get("mixup_sweep.selection_metric", "val_acc") == "val_acc"


def test_errors_are_one_line_exit_2_and_create_nothing(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert run_best("es", None, as_json=True) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no MLflow database" in err and "mlflow.db" in err
    assert run_best("es", f"sqlite:///{tmp_path / 'other.db'}", as_json=False) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []

    db = store["root"] / "mlflow.db"
    before = db.stat().st_size, sorted(p.name for p in store["root"].iterdir())
    assert run_best("nope", store["uri"], as_json=True) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(out.err.strip().splitlines()) == 1
    assert "no sweep named 'nope'" in out.err and "es" in out.err and "null_best" in out.err
    assert run_best("es", store["uri"], as_json=True, run_id="0" * 32) == 2
    assert "no run with id" in capsys.readouterr().err
    assert run_best("es", store["uri"], as_json=True, run_id=store["null_old"]) == 2
    assert "does not belong to sweep 'es'" in capsys.readouterr().err
    assert run_best("es", store["uri"], as_json=True, metric="no_such_metric") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "val_acc" in err
    assert (db.stat().st_size, sorted(p.name for p in store["root"].iterdir())) == before
    assert list(tmp_path.iterdir()) == []


def test_default_store_follows_mlflow_tracking_uri(store, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no mlflow.db here: the environment's store is the one `run` used
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    assert _run_json(capsys, names="es", tracking_uri=None)["best_stop_epoch"] == 4
    assert list(tmp_path.iterdir()) == []


def test_print_selection_after_sweep(store, capsys):
    print_selection_after_sweep("es", store["uri"], store["parent"])
    out = capsys.readouterr().out
    assert "Best stop_epoch: 4" in out and "selection/selection.json" in out
    assert len(MlflowClient(store["uri"]).get_metric_history(store["parent"], "best_stop_epoch")) == 1


def test_best_in_a_fresh_process(store):
    """Through the console script when sweeps/cli.py wires `best` to run_best, else `python -c`."""
    exe = shutil.which("mixup-sweep") or str(Path(sys.executable).with_name("mixup-sweep"))
    cli = Path(__file__).resolve().parents[1] / "sweeps" / "cli.py"
    if os.path.exists(exe) and cli.exists() and "run_best" in cli.read_text():
        ok = [exe, "best", "es", "--json", "--tracking-uri", store["uri"]]
        bad = [exe, "best", "nope", "--tracking-uri", store["uri"]]
    else:
        call = "import sys; from sweeps.best.command import run_best; sys.exit(run_best({!r}, {!r}, True))"
        ok = [sys.executable, "-c", call.format("es", store["uri"])]
        bad = [sys.executable, "-c", call.format("nope", store["uri"])]
    proc = subprocess.run(ok, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["best_stop_epoch"] == 4
    proc = subprocess.run(bad, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "no sweep named 'nope'" in proc.stderr


# ---- pure functions: no MLflow ----

def _rec(tid, seed, stop, value, status="FINISHED", n_alpha="1.0"):
    return TrialRecord(run_id=f"r{tid}", trial_id=tid, status=status,
                       params={"seed": str(seed), "mixup.stop_epoch": str(stop), "mixup.alpha": n_alpha},
                       metrics={"val_acc": value, "test_acc": value - 0.1} if value is not None else {})


def test_exact_ties_are_broken_by_the_rule_never_by_input_order():
    recs = [_rec("a0", 0, 5, 0.8), _rec("a1", 1, 5, 0.8),
            _rec("b0", 0, 10, 0.8), _rec("b1", 1, 10, 0.8), _rec("b2", 2, 10, 0.8),
            _rec("c0", 0, "None", 0.8), _rec("c1", 1, "None", 0.8), _rec("c2", 2, "None", 0.8),
            _rec("d0", 0, 20, 0.8), _rec("d1", 1, 20, 0.8), _rec("d2", 2, 20, 0.8)]
    for order in (recs, recs[::-1], recs[3:] + recs[:3]):
        sel = select(group_trials(order), "val_acc", "max")
        # More seeds first (10, 20, never have 3; 5 has 2), then the earliest stop epoch: 10.
        assert sel.best_stop_epoch == 10
        assert [r.stop_epoch for r in sel.overall.tied] == [20, None]  # same mean and as many seeds
        assert sel.overall.within_noise is True
        assert [r.stop_epoch for r in sel.rows] == [5, 10, 20, None]  # 'never' sorts last
    assert sel.varying_keys == ("mixup.stop_epoch",)  # alpha constant, seed left out
    assert sel.fixed_params == {"mixup.alpha": 1.0}


def test_fixed_stop_epoch_is_still_reported_and_unlogged_params_do_not_split_groups():
    recs = [_rec("a0", 0, 5, 0.8, n_alpha="0.5"), _rec("a1", 1, 5, 0.82, n_alpha="0.5"),
            _rec("b0", 0, 5, 0.7), _rec("b1", 1, 5, 0.72),
            TrialRecord("rnew", "new", "RUNNING", params={}, metrics={})]  # params not logged yet
    grouping = group_trials(recs)
    assert grouping.varying_keys == ("mixup.alpha", "mixup.stop_epoch")
    sel = select(grouping, "val_acc", "max")
    assert sel.best_stop_epoch == 5 and sel.best_config == {"mixup.alpha": 0.5, "mixup.stop_epoch": 5}
    assert [e.reason for e in sel.excluded] == ["unfinished (RUNNING)"]


def test_single_seeds_cannot_judge_noise_and_missing_metric_is_excluded():
    recs = [_rec("a", 0, 0, 0.6), _rec("b", 0, 2, 0.65), _rec("c", 1, 2, None),
            _rec("d", 0, 4, 0.9, status="KILLED")]
    sel = select(group_trials(recs), "val_acc", "max")
    assert sel.best_stop_epoch == 2 and sel.best.metric.std is None
    assert sel.overall.within_noise is None
    assert {e.trial_id: e.reason for e in sel.excluded} == {"c": "no 'val_acc' metric logged", "d": "KILLED"}
    with pytest.raises(SelectionError) as err:
        select(group_trials([_rec("x", 0, 0, 0.5, status="FAILED")]), "val_acc", "max")
    assert err.value.exit_code == 1


# ---- paired comparison by seed ----

def _groups(values_by_stop: dict, n_alpha="1.0"):
    return [_rec(f"{stop}_{seed}", seed, stop, v, n_alpha=n_alpha)
            for stop, values in values_by_stop.items() for seed, v in enumerate(values)]


def test_paired_differences_separate_what_unpaired_spreads_cannot():
    # The seed moves both groups a lot (shared data and initialisation); E=5 is below E=10 on every
    # seed by about 0.01. Unpaired, the gap (0.0105) is well inside either group's std (~0.03).
    seed_effect = [-0.03, 0.0, 0.03, 0.015]
    recs = _groups({10: [0.80 + e for e in seed_effect],
                    5: [0.80 + e - d for e, d in zip(seed_effect, (0.010, 0.012, 0.009, 0.011))]})
    sel = select(group_trials(recs), "val_acc", "max")
    best, other = sel.best, sel.rows[0]
    assert best.stop_epoch == 10 and other.stop_epoch == 5
    gap = best.metric.mean - other.metric.mean
    assert gap < min(best.metric.std, other.metric.std)  # the old one-std rule: "within noise"
    paired = sel.overall.comparisons[0].paired
    diffs = [o - b for o, b in zip(other.metric_values, best.metric_values)]
    assert paired.seeds == (0, 1, 2, 3) and paired.differences == pytest.approx(diffs)
    assert paired.mean == pytest.approx(statistics.fmean(diffs))
    half = 3.182446 * statistics.stdev(diffs) / 2  # t(0.975, 3) * sd / sqrt(4)
    assert (paired.low, paired.high) == (pytest.approx(paired.mean - half), pytest.approx(paired.mean + half))
    assert paired.high < 0 and paired.separated is True
    assert sel.overall.not_separated == () and sel.overall.within_noise is False


def test_paired_differences_that_change_sign_do_not_separate():
    seed_effect = [-0.03, 0.0, 0.03, 0.015]
    recs = _groups({10: [0.80 + e for e in seed_effect],
                    5: [0.80 + e + d for e, d in zip(seed_effect, (-0.02, 0.012, -0.015, 0.01))]})
    sel = select(group_trials(recs), "val_acc", "max")
    assert sel.best_stop_epoch == 10
    paired = sel.overall.comparisons[0].paired
    assert paired.low < 0 < paired.high and paired.separated is False
    assert [r.stop_epoch for r in sel.overall.not_separated] == [5] and sel.overall.within_noise is True


def test_paired_interval_matches_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    from sweeps.best.paired import paired_difference, t975

    for df in (1, 2, 3, 7, 30, 31, 45, 200):
        assert t975(df) == pytest.approx(scipy_stats.t.ppf(0.975, df), abs=1e-6 if df <= 30 else 2e-4)
    best = {0: 0.91, 1: 0.88, 2: 0.93, 3: 0.90, 4: 0.86}
    other = {0: 0.90, 1: 0.885, 2: 0.91, 4: 0.85, 9: 0.99}  # seed 3 missing, seed 9 not in best
    p = paired_difference(best, other)
    diffs = [other[s] - best[s] for s in (0, 1, 2, 4)]
    lo, hi = scipy_stats.t.interval(0.95, len(diffs) - 1, loc=statistics.fmean(diffs),
                                    scale=scipy_stats.sem(diffs))
    assert p.seeds == (0, 1, 2, 4) and (p.low, p.high) == (pytest.approx(lo, abs=1e-7), pytest.approx(hi, abs=1e-7))


def test_groups_sharing_fewer_than_two_seeds_get_no_verdict():
    recs = _groups({10: [0.8, 0.82, 0.81]}) + [_rec("x", 7, 5, 0.5)]  # E=5: one seed, not one of the best's
    sel = select(group_trials(recs), "val_acc", "max")
    assert sel.best_stop_epoch == 10
    assert sel.overall.comparisons[0].paired.n == 0 and sel.overall.comparisons[0].separated is None
    assert [r.stop_epoch for r in sel.overall.not_paired] == [5] and sel.overall.within_noise is None


def test_best_json_carries_the_paired_figures(store, capsys):
    doc = _run_json(capsys, names="es", tracking_uri=store["uri"])
    rows = {r["label"]: r for r in doc["table"]}
    assert rows["E=4 a=1.0"]["paired_vs_best"] is None  # the best itself
    paired = rows["E=2 a=1.0"]["paired_vs_best"]  # seed 2 of this group diverged: two seeds paired
    assert paired["seeds"] == [0, 1] and paired["n_seeds"] == 2
    assert paired["mean_difference"] == pytest.approx(0.775 - 0.815, abs=1e-9)
    assert paired["separated"] is True and paired["ci95_low"] <= paired["mean_difference"] <= paired["ci95_high"]
    assert doc["not_separated_from_best"] == [] and doc["not_paired_with_best"] == []
    assert doc["best_label"] == "E=4 a=1.0" and "earliest stop epoch" in doc["tie_rule"]
    per = {c["combination"]["mixup.alpha"]: c for c in doc["best_per_combination"]}
    assert set(per[0.5]["paired"]) == {"E=0 a=0.5", "E=2 a=0.5", "E=never a=0.5"}


def test_best_of_several_sweeps_side_by_side(store, capsys):
    docs = _run_json(capsys, names=["es", "null_best"], tracking_uri=store["uri"])
    assert set(docs) == {"es", "null_best"}
    assert docs["es"]["best_stop_epoch"] == 4 and docs["null_best"]["best_stop_epoch"] is None

    assert run_best(["es", "null_best"], store["uri"], as_json=False) == 0
    out = capsys.readouterr().out
    assert all(len(line) <= 120 for line in out.splitlines())
    side = out.split("\n\n")[1].splitlines()
    assert side[0].split()[:4] == ["group", "es:", "n", "mean"] and "null_best: n" in side[0]
    rows = {line.split("  ")[0].strip(): line for line in side[1:]}
    # null_best keeps alpha at 1.0: its groups land in the a=1.0 rows of es.
    assert "best" in rows["E=4 a=1.0"] and rows["E=never a=1.0"].rstrip().endswith("best")
    assert rows["E=0 a=0.5"].rstrip().endswith("-")  # not in null_best
    assert out.count("Sweep 'es'") == 1 and out.count("Sweep 'null_best'") == 1


def test_best_again_on_an_unchanged_sweep_redraws_nothing_and_a_change_redraws(store, capsys):
    """The plots (most of `best`'s time at thousands of trials: every curve is a metric history) are
    drawn once per selection: `best` again writes nothing new; a trial that finishes since redraws."""
    client = MlflowClient(store["uri"])
    eid = client.get_experiment_by_name("null_best").experiment_id
    parent = store["null_new"]
    _run_json(capsys, names="null_best", tracking_uri=store["uri"])
    artifacts = store["root"] / "artifacts_null" / parent / "artifacts" / "selection"
    first = {p.name: p.stat().st_mtime_ns for p in artifacts.iterdir()}
    assert "learning_curves.png" in first
    time.sleep(0.05)
    _run_json(capsys, names="null_best", tracking_uri=store["uri"])
    assert {p.name: p.stat().st_mtime_ns for p in artifacts.iterdir()} == first  # untouched
    _add_trial(client, eid, parent, "new_0_3", _trial_params(3, 1.0, 0, spell=str), _curve(0.71))
    doc = _run_json(capsys, names="null_best", tracking_uri=store["uri"])
    assert {p.name: p.stat().st_mtime_ns for p in artifacts.iterdir()} != first  # the new trial: redrawn
    stored = json.loads((artifacts / "selection.json").read_text())
    assert stored["table"] == doc["table"]
