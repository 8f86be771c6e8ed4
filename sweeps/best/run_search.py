"""A sweep's runs from its tracking store: every page of a search, and a sweep's child runs searched
in parallel parts when the store is a tracking server.

A server answers a search of 1,000 runs in about a second of its own CPU (its ORM and JSON: about 1 ms
a run, on 2 cores), and pages follow one another (each page's token comes with the previous one), so
at 2,000 trials the search alone was 2.5 s of `best` and `status`, the server working and the client
waiting. Split by start time into windows that cover every possible time (the first open below, the
last open above, so a run whose clock was off still falls into one), the parts run side by side on
the server's workers. The merged list is what one search returns, in its order (start time
descending, then run id: MLflow's default).
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor

from .. import keys

PART_RUNS = 400  # about this many runs a part: fewer gain nothing over the requests they cost
MAX_PARTS = 8
SEARCH_THREADS = 4  # parts in flight at once (a server has a few workers)


def search_all(client, experiment_ids: list[str], filter_string: str, order_by: list[str] | None = None) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, order_by=order_by, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def start_time_windows(start_ms: int, end_ms: int, parts: int) -> list[str]:
    """`parts` filters on attributes.start_time that together match every run exactly once."""
    if parts <= 1 or end_ms <= start_ms:
        return [""]
    cuts = sorted({start_ms + (end_ms - start_ms) * i // parts for i in range(1, parts)})
    windows = [f"attributes.start_time < {cuts[0]}"]
    windows += [f"attributes.start_time >= {lo} AND attributes.start_time < {hi}" for lo, hi in zip(cuts, cuts[1:])]
    windows.append(f"attributes.start_time >= {cuts[-1]}")
    return windows


def _parts(client, parent) -> list[str]:
    if parent is None or not str(client.tracking_uri).startswith(("http://", "https://")):
        return [""]  # SQLite: in this process, one query is as fast as any split
    expected = parent.data.metrics.get(keys.TRIALS_TOTAL) or 0
    parts = min(MAX_PARTS, math.ceil(expected / PART_RUNS))
    end = parent.info.end_time or int(time.time() * 1000)
    return start_time_windows(parent.info.start_time or 0, end, parts)


def child_runs(client, experiment_id: str, parent_run_id: str, parent=None) -> list:
    """Every run whose parent is `parent_run_id`, as one search returns them. `parent`: that run as
    the store returned it (its start time and the sweep's size decide the parts), if at hand."""
    where = f"tags.`{keys.PARENT_TAG}` = '{parent_run_id}'"
    windows = _parts(client, parent)
    if len(windows) == 1:
        return search_all(client, [experiment_id], where)
    with ThreadPoolExecutor(min(SEARCH_THREADS, len(windows))) as pool:
        found = list(pool.map(lambda w: search_all(client, [experiment_id], f"{where} AND {w}"), windows))
    runs = {r.info.run_id: r for part in found for r in part}
    return sorted(runs.values(), key=lambda r: (-(r.info.start_time or 0), r.info.run_id))
