"""`mixup-sweep list [--json]`: every sweep in a tracking store, newest first, from the parent runs
alone (one search, however many trials the sweeps have): state, size, progress and the best stop
epoch `best` recorded."""

from __future__ import annotations

import time
from typing import Any

from .. import keys
from .status import sweep_state

_EXPERIMENTS_PER_SEARCH = 100


def list_sweeps(client) -> list[dict[str, Any]]:
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    ids = list(experiments)
    parents = []
    for start in range(0, len(ids), _EXPERIMENTS_PER_SEARCH):
        token = None
        while True:
            page = client.search_runs(ids[start:start + _EXPERIMENTS_PER_SEARCH],
                                      f"tags.`{keys.ROLE_TAG}` = '{keys.ROLE_SWEEP}'", max_results=1000,
                                      order_by=["attributes.start_time DESC"], page_token=token)
            parents.extend(page)
            token = page.token
            if not token:
                break
    parents.sort(key=lambda r: r.info.start_time or 0, reverse=True)
    now = time.time()
    rows = []
    for run in parents:
        m, tags = run.data.metrics, run.data.tags
        beat = m.get(keys.HEARTBEAT)
        state, _ = sweep_state(run, now - beat if beat else None)
        best = tags.get(keys.BEST_STOP_EPOCH_TAG)
        rows.append({
            "name": experiments.get(run.info.experiment_id, "?"),
            "parent_run_id": run.info.run_id,
            "state": state,
            "started": (run.info.start_time or 0) / 1000,
            "trials_total": int(m[keys.TRIALS_TOTAL]) if keys.TRIALS_TOTAL in m else None,
            "trials_finished": int(m[keys.TRIALS_FINISHED]) if keys.TRIALS_FINISHED in m else None,
            "progress": 1.0 if state == "finished" else m.get(keys.PROGRESS),
            "best_stop_epoch": None if best is None else ("never" if best == "null" else best),
            "job_id": tags.get(keys.JOB_ID_TAG),
        })
    return rows


def format_listing(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no sweeps in this tracking store (start one: mixup-sweep run SPEC)"
    header = ["sweep", "state", "trials", "progress", "best E", "started", "ray job"]
    table = [header]
    for r in rows:
        size = "-" if r["trials_total"] is None else f"{r['trials_finished'] or 0}/{r['trials_total']}"
        progress = "-" if r["progress"] is None else f"{r['progress']:.0%}"
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["started"])) if r["started"] else "-"
        table.append([r["name"], r["state"], size, progress, r["best_stop_epoch"] or "-", started, r["job_id"] or "-"])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)
