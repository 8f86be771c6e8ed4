"""The selection plots, drawn from plain numbers (no MLflow here) onto PNG files.

- learning curves: one panel per metric (the selection metric, then test_acc_rare, feat_rare,
  feat_common where logged), one curve per group: mean over seeds as a line, min..max over seeds as
  a band; each group has its own colour, line style and marker, so no curve hides another even where
  they coincide (before the stop epoch, the early-stopped groups ARE the Mixup run);
- the final metric against the stop epoch: every seed a point, the seeds joined by thin lines (the
  pairing the selection uses), the mean as a thick line, one colour per combination of the other keys;
- a heatmap of the mean final metric when exactly two keys are swept besides the seed.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly, never through pyplot,
so drawing needs no display and touches no global backend state of the process that calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..labels import NEVER

# Distinguishable without colour too (print, colour blindness): styles and markers cycle with a
# different period than the colours, so no two of the first 60 groups look alike.
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")
_LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p")
_MAX_LEGEND_LINES = 14  # beyond this (e.g. a continuous Optuna space) a legend hides the plot


def style(i: int) -> dict[str, Any]:
    return {"color": _COLORS[i % len(_COLORS)], "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
            "marker": _MARKERS[i % len(_MARKERS)]}


@dataclass(frozen=True)
class GroupCurves:
    """One group's per-epoch histories: metric -> one {epoch: value} per seed."""

    label: str
    histories: Mapping[str, Sequence[Mapping[int, float]]]
    stop_epoch: int | None = None  # drawn as the epoch after which Mixup was switched off
    is_best: bool = False


@dataclass(frozen=True)
class SeedValues:
    """One group's final metric per seed, at its stop epoch (None = Mixup throughout)."""

    stop_epoch: int | None
    seeds: Sequence[Any]
    values: Sequence[float]


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _never_position(numeric_stops: Sequence[int]) -> float:
    # Right of every real stop epoch, one "typical gap" further, so it reads as the end of the axis.
    if not numeric_stops:
        return 0.0
    lo, hi = min(numeric_stops), max(numeric_stops)
    return hi + max(1.0, 0.15 * (hi - lo))


def _mean_and_band(histories: Sequence[Mapping[int, float]]):
    """Per epoch: mean, min and max over the seeds that reached that epoch."""
    epochs = sorted({e for h in histories for e in h})
    means, lows, highs = [], [], []
    for e in epochs:
        vals = [h[e] for h in histories if e in h and not math.isnan(h[e])] or [math.nan]
        means.append(sum(vals) / len(vals))
        lows.append(min(vals))
        highs.append(max(vals))
    return epochs, means, lows, highs


def plot_learning_curves(groups: Sequence[GroupCurves], metrics: Sequence[str], path: Path, title: str = "") -> None:
    """One panel per metric, one curve per group (mean over seeds, band min..max), legend below."""
    metrics = [m for m in metrics if any(g.histories.get(m) for g in groups)] or list(metrics[:1])
    cols = 1 if len(metrics) == 1 else 2
    rows = math.ceil(len(metrics) / cols)
    legend_rows = math.ceil(min(len(groups), _MAX_LEGEND_LINES) / 4)
    legend_in = 0.25 * legend_rows + 0.05  # inches above the panels for the legend
    fig = _new_figure(8.0 if cols == 1 else 6.4 * cols, 3.6 * rows + legend_in + 0.5)
    handles, labels = [], []
    for p, metric in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, p + 1)
        for i, g in enumerate(groups):
            epochs, means, lows, highs = _mean_and_band(g.histories.get(metric, ()))
            if not epochs:
                continue
            st = style(i)
            n = len(g.histories[metric])
            # Markers every `every` epochs, each group starting at another epoch: where curves coincide
            # (identical runs, or early-stopped groups before their stop epoch) every group's markers show.
            every = max(1, len(epochs) // 8)
            start = (i * every) // max(1, len(groups))  # spread over the period, not one epoch apart
            (line,) = ax.plot(epochs, means, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                              markersize=5, markevery=(start, every), linewidth=2.2 if g.is_best else 1.5,
                              label=f"{g.label}{'  (best)' if g.is_best else ''}  n={n}", zorder=3 if g.is_best else 2)
            if n > 1:
                ax.fill_between(epochs, lows, highs, color=st["color"], alpha=0.12, linewidth=0)
            if g.stop_epoch is not None and g.stop_epoch > 0:
                ax.axvline(g.stop_epoch, color=st["color"], linestyle=":", linewidth=1, alpha=0.8)
            if p == 0:
                handles.append(line)
                labels.append(line.get_label())
        ax.set_title(metric, fontsize=11)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
    if not groups:
        fig.text(0.5, 0.5, "no curves to draw", ha="center", va="center")
    fig.suptitle(title or "mean over seeds (band: min..max over seeds); dotted vertical line: Mixup switched off",
                 fontsize=10, y=1 - 0.08 / fig.get_figheight(), va="top")
    # The legend on top, under the title: viewers that show the figure cropped (MLflow's artifact
    # preview scrolls) show the top first.
    top_in = 0.35 + (legend_in if handles and len(handles) <= _MAX_LEGEND_LINES else 0.0)
    if handles and len(handles) <= _MAX_LEGEND_LINES:
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_figheight()),
                   ncol=min(4, len(handles)), fontsize=9, frameon=False)
    _fixed_grid_margins(fig, rows, cols, top_in)
    _save(fig, path)


def _fixed_grid_margins(fig, rows: int, cols: int, top_in: float) -> None:
    """Margins in inches that fit this figure's labels (ticks of 0..1 values and epochs, a title
    per panel, 'epoch' below): what tight_layout finds, without measuring every text of four panels
    (half of drawing the figure)."""
    width, height = fig.get_figwidth(), fig.get_figheight()
    left, right, bottom, top = 0.75, 0.25, 0.55, top_in + 0.35
    col_gap, row_gap = 0.75, 0.85
    axis_w = (width - left - right - (cols - 1) * col_gap) / cols
    axis_h = (height - top - bottom - (rows - 1) * row_gap) / rows
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height, top=1 - top / height,
                        wspace=col_gap / axis_w, hspace=row_gap / axis_h)


def plot_metric_vs_stop_epoch(series: Mapping[str, Sequence[SeedValues]], metric: str, path: Path,
                              title: str = "") -> None:
    """The final selection metric against the Mixup stop epoch: each seed a point (the same seed joined
    by a thin line across stop epochs), the mean over seeds a thick line; one colour per series (a
    combination of the other swept keys). The null stop epoch sits at the right, labelled 'never'."""
    from matplotlib.collections import LineCollection

    numeric = sorted({p.stop_epoch for pts in series.values() for p in pts if p.stop_epoch is not None})
    never_x = _never_position(numeric)
    has_never = any(p.stop_epoch is None for pts in series.values() for p in pts)
    span = (max(numeric + [never_x]) - min(numeric + [never_x])) if numeric else 1.0

    fig = _new_figure(8.0, 4.8)
    ax = fig.add_subplot(1, 1, 1)
    n_series = len(series)
    for i, (label, points) in enumerate(series.items()):
        st = style(i)
        pts = sorted(points, key=lambda p: never_x if p.stop_epoch is None else p.stop_epoch)
        xs = [never_x if p.stop_epoch is None else p.stop_epoch for p in pts]
        # A small horizontal offset per series, so that series at the same stop epoch do not overlap.
        shift = (i - (n_series - 1) / 2) * 0.012 * span if n_series > 1 else 0.0
        seeds = list(dict.fromkeys(s for p in pts for s in p.seeds))
        lines = []
        for seed in seeds:
            sx = [x + shift for x, p in zip(xs, pts) if seed in p.seeds]
            sy = [p.values[list(p.seeds).index(seed)] for p in pts if seed in p.seeds]
            lines.append(list(zip(sx, sy)))
            if n_series <= 3 and sx:  # name the seed at its line's right end (few series: no clutter)
                ax.annotate(f"s{seed}", (sx[-1], sy[-1]), xytext=(5, 0), textcoords="offset points",
                            fontsize=7, color=st["color"], va="center")
        # Every seed's line of a series in one collection and its points in one marker line: the same
        # picture as a line per seed (each drawn on its own, so overlaps still darken), at a fraction
        # of the cost with hundreds of seeds.
        ax.add_collection(LineCollection(lines, colors=st["color"], linewidths=0.8, alpha=0.35, zorder=2))
        points = [xy for line in lines for xy in line]
        ax.plot([x for x, _ in points], [y for _, y in points], color=st["color"], alpha=0.35, marker=st["marker"],
                markersize=4, linestyle="none", zorder=2)
        means = [sum(p.values) / len(p.values) for p in pts]
        ax.plot([x + shift for x in xs], means, color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                markersize=8, linewidth=2.4, label=f"{label}: mean over seeds" if label else "mean over seeds",
                zorder=3)
    # One legend entry for what the thin lines are, whatever the number of series.
    ax.plot([], [], color="#555555", linewidth=0.8, alpha=0.5, marker="o", markersize=4,
            label="one seed (joined across stop epochs)")

    ticks = list(numeric) + ([never_x] if has_never else [])
    tick_labels = [str(s) for s in numeric] + ([NEVER] if has_never else [])
    if len(numeric) > 14:  # keep labels readable: thin the numeric ticks, always keep 'never'
        keep = numeric[::math.ceil(len(numeric) / 12)]
        ticks = list(keep) + ([never_x] if has_never else [])
        tick_labels = [str(s) for s in keep] + ([NEVER] if has_never else [])
    ax.set_xticks(ticks)
    ax.set_xticklabels(tick_labels)
    ax.set_xlabel("E = mixup.stop_epoch (Mixup for epochs 1..E, then standard training; never = Mixup throughout)",
                  fontsize=9)
    ax.set_ylabel(f"final-epoch {metric}")
    ax.set_title(title or f"final {metric} vs Mixup stop epoch", fontsize=11)
    ax.grid(True, alpha=0.3)
    if n_series <= _MAX_LEGEND_LINES:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    _save(fig, path)


def plot_heatmap(values: Mapping[tuple[str, str], tuple[float, int]], row_labels: Sequence[str],
                 col_labels: Sequence[str], row_key: str, col_key: str, metric: str, path: Path,
                 best: tuple[str, str] | None = None) -> None:
    """Mean final metric per (row value, column value) cell, each cell annotated with its mean and its
    number of seeds; the best cell outlined. A missing cell (no usable trial) is grey, marked '-'."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.patches import Rectangle

    grid = np.full((len(row_labels), len(col_labels)), np.nan)
    for (r, c), (mean, _) in values.items():
        grid[row_labels.index(r), col_labels.index(c)] = mean
    fig = _new_figure(max(5.0, 1.1 * len(col_labels) + 2.5), max(3.0, 0.7 * len(row_labels) + 1.8))
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(grid)
    cmap = colormaps["viridis"].copy()
    cmap.set_bad("#dddddd")
    image = ax.imshow(masked, cmap=cmap, aspect="auto")
    finite = grid[np.isfinite(grid)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for (r, c), (mean, n) in values.items():
        i, j = row_labels.index(r), col_labels.index(c)
        ax.text(j, i, f"{mean:.4f}\nn={n}", ha="center", va="center", fontsize=8,
                color="black" if mean > mid else "white")
    for i in range(len(row_labels)):
        for j in range(len(col_labels)):
            if not np.isfinite(grid[i, j]):
                ax.text(j, i, "-", ha="center", va="center", fontsize=9, color="#555555")
    if best is not None:
        i, j = row_labels.index(best[0]), col_labels.index(best[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(col_labels)))
    ax.set_xticklabels(col_labels)
    ax.set_yticks(range(len(row_labels)))
    ax.set_yticklabels(row_labels)
    ax.set_xlabel(col_key)
    ax.set_ylabel(row_key)
    ax.set_title(f"mean final {metric} over seeds (red: best)", fontsize=11)
    fig.colorbar(image, ax=ax, label=metric)
    fig.tight_layout()
    _save(fig, path)
