"""The learning curves' metric histories of a sweep's finished trials, kept on its parent run as one
artifact (curves/histories.npz), so that drawing the curves again reads one file instead of hundreds
of histories from the store (at 2,000 trials x 200 epochs the curves need 600 histories: about 4 s of
a tracking server's CPU on 2 cores, more than the rest of `best`).

A cache, never the record: each entry keeps the latest point (step, timestamp, value) of the history
it was made from, and is used only while that equals the run's latest point in the store (MLflow
returns it with every run a search finds, so checking costs nothing). A trial that logged more since,
a resumed one, a deleted run: its entry is not used, its history is fetched from the store again.

Written by the driver while the sweep runs (monitor/curve_writer.py) and by the selection at the end
of a sweep (command.py, which draws from it); `best` reads it and fetches from the store what it
lacks, so a store without the artifact (a sweep of an older version) is drawn as before.
"""

from __future__ import annotations

import io
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from .. import keys
from ..ray_compat.mlflow_bulk import latest_points
from .histories import Point, fetch_points, latest_per_step

CACHE_DIR = "curves"
CACHE_FILE = "histories.npz"
CACHE_ARTIFACT = f"{CACHE_DIR}/{CACHE_FILE}"
FORMAT = 2  # a file of another format is not read (it is replaced at the next write)
ENDED = ("FINISHED", "FAILED", "KILLED")  # a trial run in one of these logs nothing more (unless resumed)

Key = tuple[str, str]  # (run id, metric)
Token = tuple[int, int, float]  # (step, timestamp, value) of a history's latest point


def same_point(a: Token, b: Token) -> bool:
    """Equal latest points; NaN equals NaN here (a diverged trial's last value)."""
    return a[0] == b[0] and a[1] == b[1] and (a[2] == b[2] or (math.isnan(a[2]) and math.isnan(b[2])))


def latest_point(points: Iterable[Point]) -> Token:
    """The point MLflow keeps as the latest: the largest (step, timestamp, value), a NaN compared as
    the 0 it stores for it, the first logged of equal ones (MLflow replaces only on a strictly larger)."""
    return max(points, key=lambda p: (p[0], p[1], 0.0 if math.isnan(p[2]) else p[2]))


@dataclass(frozen=True)
class Entry:
    token: Token
    steps: np.ndarray  # int64, ascending
    values: np.ndarray  # float64, the latest value logged at each step

    @classmethod
    def from_points(cls, points: list[Point]) -> "Entry":
        history = latest_per_step(points)
        return cls(latest_point(points), np.fromiter(history.keys(), np.int64, len(history)),
                   np.fromiter(history.values(), np.float64, len(history)))

    def history(self) -> dict[int, float]:
        return dict(zip(self.steps.tolist(), self.values.tolist()))


class CurveCache:
    """{(run id, metric): Entry}, read from and written to one .npz file (no pickles)."""

    def __init__(self, entries: Mapping[Key, Entry] | None = None):
        self.entries: Mapping[Key, Entry] = entries if entries is not None else {}

    def __len__(self) -> int:
        return len(self.entries)

    def valid(self, key: Key, latest: Token | None) -> Entry | None:
        """The entry of `key` when it was made from the history whose latest point is `latest`."""
        entry = self.entries.get(key)
        return entry if entry is not None and latest is not None and same_point(entry.token, latest) else None

    def write(self, path: Path) -> None:
        """Steps 1..n (every epoch once, the usual history) are stored as their first step only."""
        keys_ = list(self.entries)
        runs = sorted({r for r, _ in keys_})
        metrics = sorted({m for _, m in keys_})
        run_at, metric_at = {r: i for i, r in enumerate(runs)}, {m: i for i, m in enumerate(metrics)}
        entries = [self.entries[k] for k in keys_]
        contiguous = np.array([len(e.steps) == 0 or int(e.steps[-1] - e.steps[0]) == len(e.steps) - 1
                               for e in entries], dtype=bool)
        gapped = [e.steps for e, c in zip(entries, contiguous) if not c]
        np.savez(
            path,
            format=np.array(FORMAT),
            runs=np.array(runs, dtype=str), metrics=np.array(metrics, dtype=str),
            run=np.array([run_at[r] for r, _ in keys_], np.int64),
            metric=np.array([metric_at[m] for _, m in keys_], np.int64),
            token_step=np.array([e.token[0] for e in entries], np.int64),
            token_time=np.array([e.token[1] for e in entries], np.int64),
            token_value=np.array([e.token[2] for e in entries], np.float64),
            length=np.array([len(e.steps) for e in entries], np.int64),
            contiguous=contiguous,
            first_step=np.array([int(e.steps[0]) if len(e.steps) else 0 for e in entries], np.int64),
            steps=np.concatenate(gapped) if gapped else np.zeros(0, np.int64),
            values=np.concatenate([e.values for e in entries]) if entries else np.zeros(0, np.float64),
        )

    @classmethod
    def read(cls, path) -> "CurveCache":
        """`path`: a file's path or a binary file. Raises ValueError (or KeyError, OSError) for a file
        that is not a cache of this format."""
        with np.load(path, allow_pickle=False) as f:
            if f["format"].shape != () or int(f["format"]) != FORMAT:
                raise ValueError(f"curve cache: not format {FORMAT}")
            runs, metrics = f["runs"].tolist(), f["metrics"].tolist()
            run, metric, length = f["run"].tolist(), f["metric"].tolist(), f["length"].tolist()
            contiguous, first_step = f["contiguous"].tolist(), f["first_step"].tolist()
            token_step, token_time, token_value = f["token_step"].tolist(), f["token_time"].tolist(), f["token_value"].tolist()
            steps, values = f["steps"], f["values"]
        per_entry = (run, metric, length, contiguous, first_step, token_step, token_time, token_value)
        if (not isinstance(runs, list) or not isinstance(metrics, list) or not isinstance(run, list)
                or any(not isinstance(a, list) or len(a) != len(run) for a in per_entry)
                or steps.ndim != 1 or values.ndim != 1
                or not all(0 <= r < len(runs) for r in run) or not all(0 <= m < len(metrics) for m in metric)
                or not all(n >= 0 for n in length) or len(values) != sum(length)
                or len(steps) != sum(n for n, c in zip(length, contiguous) if not c)):
            raise ValueError("curve cache: its arrays do not fit together")
        value_at = np.concatenate([[0], np.cumsum(length)]).tolist()
        gapped = [n if not c else 0 for n, c in zip(length, contiguous)]
        step_at = np.concatenate([[0], np.cumsum(gapped)]).tolist()
        where = {(runs[r], metrics[m]): i for i, (r, m) in enumerate(zip(run, metric))}

        def entry(i: int) -> Entry:
            lo, hi = value_at[i], value_at[i + 1]
            entry_steps = (np.arange(first_step[i], first_step[i] + hi - lo, dtype=np.int64) if contiguous[i]
                           else steps[step_at[i]:step_at[i + 1]])
            return Entry((token_step[i], token_time[i], token_value[i]), entry_steps, values[lo:hi])

        return cls(_StoredEntries(where, entry))


class _StoredEntries(Mapping):
    """A read cache's entries, each made when asked for: drawing the curves needs a few hundred of
    thousands (making them all took a third of a second at 2,000 trials)."""

    def __init__(self, where: dict[Key, int], entry):
        self._where = where
        self._entry = entry

    def __getitem__(self, key: Key) -> Entry:
        return self._entry(self._where[key])

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def download(client, parent_run_id: str) -> bytes | None:
    """The parent run's cache file, or None when it has none or it cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        with tempfile.TemporaryDirectory(prefix="mixup-curves-") as tmp:
            return Path(client.download_artifacts(parent_run_id, CACHE_ARTIFACT, tmp)).read_bytes()
    except (MlflowException, OSError):
        return None


def parse(data: bytes | None) -> CurveCache:
    """The cache in `data`; an empty one for none, or for a file that is not a cache of this format
    (then everything is fetched from the store, as without a cache)."""
    if data is None:
        return CurveCache()
    try:
        return CurveCache.read(io.BytesIO(data))
    except Exception:  # noqa: BLE001 - a damaged or foreign file (zipfile, numpy and type errors alike)
        return CurveCache()


def load(client, parent_run_id: str) -> CurveCache:
    return parse(download(client, parent_run_id))


def save(client, parent_run_id: str, cache: CurveCache) -> None:
    with tempfile.TemporaryDirectory(prefix="mixup-curves-") as tmp:
        path = Path(tmp) / CACHE_FILE
        cache.write(path)
        client.log_artifact(parent_run_id, str(path), artifact_path=CACHE_DIR)


def cacheable(children: Iterable, metrics: Iterable[str]) -> dict[Key, Token]:
    """The latest points of `metrics` of the ended trial runs among `children` (a running trial's
    history still grows: caching it would only be checked and thrown away)."""
    metrics = list(metrics)
    out: dict[Key, Token] = {}
    for run in children:
        if run.data.tags.get(keys.ROLE_TAG) != keys.ROLE_TRIAL or run.info.status not in ENDED:
            continue
        latest = latest_points(run)
        out.update({(run.info.run_id, m): latest[m] for m in metrics if m in latest})
    return out


def refresh(client, parent_run_id: str, children: Iterable, metrics: Iterable[str], cache: CurveCache) -> CurveCache:
    """`cache` brought up to date with the store for the ended trials among `children`: entries that
    no longer match are dropped, missing ones fetched; written to the parent run when it changed."""
    wanted = cacheable(children, metrics)
    kept = {k: e for k, e in cache.entries.items() if k in wanted and same_point(e.token, wanted[k])}
    missing = [k for k in wanted if k not in kept]
    if not missing and len(kept) == len(cache):
        return cache
    for key, points in fetch_points(client, missing).items():
        if points:
            kept[key] = Entry.from_points(points)
    fresh = CurveCache(kept)
    save(client, parent_run_id, fresh)
    return fresh


def histories(client, cache: CurveCache, children: Iterable, wanted: list[Key]) -> dict[Key, dict[int, float]]:
    """{key: {step: value}} for `wanted`: from the cache where its entry matches the store's latest
    point (`children`: the runs as a search returned them), the rest fetched from the store. A metric
    a run never logged has an empty history (not asked for)."""
    latest = {r.info.run_id: latest_points(r) for r in children}
    out: dict[Key, dict[int, float]] = {}
    fetch: list[Key] = []
    for key in dict.fromkeys(wanted):
        run_id, metric = key
        point = latest.get(run_id, {}).get(metric)
        if run_id in latest and point is None:
            out[key] = {}
        elif (entry := cache.valid(key, point)) is not None:
            out[key] = entry.history()
        else:
            fetch.append(key)
    if fetch:
        out.update({k: latest_per_step(p) for k, p in fetch_points(client, fetch).items()})
    return out
