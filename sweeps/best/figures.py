"""Which plots a selection gets and what goes into them (the drawing itself: plots.py).

MLflow-free: the per-epoch histories come from a `history(run_id, metric) -> {epoch: value}` callable,
which command.py backs with MLflow and tests with plain dicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping

from ..keys import SEED_KEY, STOP_EPOCH_KEY
from ..labels import format_value, group_label, ordered_keys, short_names
from . import plots
from .selection import GroupResult, Selection, natural_order, rank

STOP_EPOCH_PLOT = "metric_vs_stop_epoch.png"
CURVES_PLOT = "learning_curves.png"
HEATMAP_PLOT = "heatmap.png"
# Panels of the learning-curve figure after the selection metric, where the trials logged them: the
# paper's claim is about the rare feature (feature-noise data model).
CURVE_METRICS = ("test_acc_rare", "feat_rare", "feat_common")
MAX_CURVES = 10  # more curves than this in one panel cannot be told apart, whatever their styles
MAX_SEEDS_PER_CURVE = 20  # a curve's mean and band over at most this many seeds (the table uses all)

History = Callable[[str, str], Mapping[int, float]]


def curve_groups(sel: Selection) -> list[GroupResult]:
    """Every group when there are few; else the best's combination (the groups differing from it only
    in the stop epoch, the choice `best` makes), the best ranked first, at most MAX_CURVES."""
    if len(sel.rows) <= MAX_CURVES:
        return list(sel.rows)
    others = [k for k in sel.varying_keys if k != STOP_EPOCH_KEY]
    same = [r for r in sel.rows if all(r.config.get(k) == sel.best.config.get(k) for k in others)]
    chosen = rank(same, sel.mode)[:MAX_CURVES]
    return [r for r in sel.rows if r in chosen]  # table order: by stop epoch


def swept_keys(sel: Selection) -> list[str]:
    """The keys whose value differs between the groups (seed excluded), in label order."""
    keys = [k for k in sel.varying_keys if k != SEED_KEY and len({repr(r.config.get(k)) for r in sel.rows}) > 1]
    return ordered_keys(keys)


def curve_metrics(sel: Selection) -> list[str]:
    return curve_metrics_of(sel.metric)


def curve_metrics_of(metric: str) -> list[str]:
    """The learning curves' panels for a selection on `metric` (the metrics curve_cache.py keeps)."""
    return [metric] + [m for m in CURVE_METRICS if m != metric]


def histories_needed(sel: Selection) -> list[tuple[str, str]]:
    """The (run id, metric) histories `write_plots` reads: fetch them together (one request each)."""
    return [(rid, m) for g in curve_groups(sel) for rid in g.run_ids[:MAX_SEEDS_PER_CURVE] for m in curve_metrics(sel)]


def write_plots(sel: Selection, history: History, directory: Path,
                on_written: Callable[[Path], None] = lambda path: None) -> list[Path]:
    """Draw the selection's plots into `directory`; returns the files written, and hands each to
    `on_written` as soon as it is (the caller uploads it meanwhile). The learning curves are drawn
    last: `history` is only called then (the caller fetches the histories meanwhile)."""
    written: list[Path] = []

    def done(path: Path) -> None:
        written.append(path)
        on_written(path)

    keys = swept_keys(sel)
    if STOP_EPOCH_KEY in sel.varying_keys:
        combo_keys = [k for k in keys if k != STOP_EPOCH_KEY]
        series: dict[str, list[plots.SeedValues]] = {}
        for r in sel.rows:
            label = group_label({k: r.config.get(k) for k in combo_keys}, combo_keys) if combo_keys else ""
            series.setdefault(label, []).append(plots.SeedValues(r.stop_epoch, r.seeds, r.metric_values))
        path = directory / STOP_EPOCH_PLOT
        plots.plot_metric_vs_stop_epoch(series, sel.metric, path)
        done(path)

    if len(keys) == 2:
        # Rows: the other key, columns: the stop epoch (when swept), as people read "alpha x E".
        col_key, row_key = (keys[0], keys[1]) if keys[0] == STOP_EPOCH_KEY else (keys[1], keys[0])
        col_values = sorted({r.config.get(col_key) for r in sel.rows}, key=natural_order)
        row_values = sorted({r.config.get(row_key) for r in sel.rows}, key=natural_order)
        names = short_names([row_key, col_key])
        cells = {(format_value(row_key, r.config.get(row_key)), format_value(col_key, r.config.get(col_key))):
                 (r.metric.mean, r.metric.n) for r in sel.rows}
        best = (format_value(row_key, sel.best.config.get(row_key)), format_value(col_key, sel.best.config.get(col_key)))
        path = directory / HEATMAP_PLOT
        plots.plot_heatmap(cells, [format_value(row_key, v) for v in row_values],
                           [format_value(col_key, v) for v in col_values],
                           f"{names[row_key]} = {row_key}", f"{names[col_key]} = {col_key}", sel.metric, path, best)
        done(path)

    groups = curve_groups(sel)
    metrics = curve_metrics(sel)
    curves = [plots.GroupCurves(
        label=g.label,
        histories={m: [h for rid in g.run_ids[:MAX_SEEDS_PER_CURVE] if (h := history(rid, m))] for m in metrics},
        stop_epoch=g.stop_epoch,
        is_best=g is sel.best,
    ) for g in groups]
    path = directory / CURVES_PLOT
    plots.plot_learning_curves(curves, metrics, path)
    done(path)
    return written
