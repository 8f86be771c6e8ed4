"""The two selection plots, drawn from plain numbers (no MLflow here) onto PNG files.

Figures are built with `matplotlib.figure.Figure` and the Agg canvas directly, never through pyplot,
so drawing needs no display and touches no global backend state of the process that calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

NEVER_LABEL = "never"
_MAX_LEGEND_LINES = 12  # beyond this (e.g. a continuous Optuna space) a legend hides the plot


@dataclass(frozen=True)
class StopEpochPoint:
    """One group's selection metric over seeds, placed at its stop epoch (None = Mixup throughout)."""

    stop_epoch: int | None
    mean: float
    std: float | None  # None for a single seed: no spread to draw
    n: int


@dataclass(frozen=True)
class LearningCurve:
    """One group's per-epoch metric: one {epoch: value} history per seed."""

    label: str
    histories: Sequence[Mapping[int, float]]
    stop_epoch: int | None = None  # drawn as the epoch after which Mixup was switched off


def _new_figure(width: float = 7.0, height: float = 4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _never_position(numeric_stops: Sequence[int]) -> float:
    # Right of every real stop epoch, one "typical gap" further, so it reads as the end of the axis.
    if not numeric_stops:
        return 0.0
    lo, hi = min(numeric_stops), max(numeric_stops)
    return hi + max(1.0, 0.15 * (hi - lo))


def plot_metric_vs_stop_epoch(
    series: Mapping[str, Sequence[StopEpochPoint]], metric: str, path: Path, title: str = ""
) -> None:
    """The selection metric against the Mixup stop epoch, one line per alpha/label-policy combination,
    error bars = std over seeds; the null stop epoch (Mixup throughout) sits at the right, labelled 'never'."""
    numeric = sorted({p.stop_epoch for pts in series.values() for p in pts if p.stop_epoch is not None})
    never_x = _never_position(numeric)
    has_never = any(p.stop_epoch is None for pts in series.values() for p in pts)

    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for label, points in series.items():
        pts = sorted(points, key=lambda p: never_x if p.stop_epoch is None else p.stop_epoch)
        xs = [never_x if p.stop_epoch is None else p.stop_epoch for p in pts]
        ys = [p.mean for p in pts]
        errs = [0.0 if p.std is None or math.isnan(p.std) else p.std for p in pts]
        ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=4, label=label or "all trials")

    ticks = list(numeric) + ([never_x] if has_never else [])
    tick_labels = [str(s) for s in numeric] + ([NEVER_LABEL] if has_never else [])
    if len(ticks) > 15:  # keep labels readable: thin the numeric ticks, always keep 'never'
        step = math.ceil(len(numeric) / 12)
        keep = numeric[::step]
        ticks = list(keep) + ([never_x] if has_never else [])
        tick_labels = [str(s) for s in keep] + ([NEVER_LABEL] if has_never else [])
    ax.set_xticks(ticks)
    ax.set_xticklabels(tick_labels)
    ax.set_xlabel("mixup.stop_epoch (Mixup on for epochs before it; never = Mixup throughout)")
    ax.set_ylabel(f"final-epoch {metric} (mean ± std over seeds)")
    ax.set_title(title or f"{metric} vs Mixup stop epoch")
    ax.grid(True, alpha=0.3)
    if len(series) <= _MAX_LEGEND_LINES:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def _mean_and_band(histories: Sequence[Mapping[int, float]]):
    """Per epoch: mean and min-max over the seeds that reached that epoch."""
    epochs = sorted({e for h in histories for e in h})
    means, lows, highs = [], [], []
    for e in epochs:
        vals = [h[e] for h in histories if e in h and not math.isnan(h[e])]
        if not vals:
            vals = [math.nan]
        means.append(sum(vals) / len(vals))
        lows.append(min(vals))
        highs.append(max(vals))
    return epochs, means, lows, highs


def plot_learning_curves(curves: Sequence[LearningCurve], metric: str, path: Path, title: str = "") -> None:
    """Per-epoch metric of a few groups: mean over seeds as a line, min-max over seeds as a band."""
    fig = _new_figure()
    ax = fig.add_subplot(1, 1, 1)
    for curve in curves:
        epochs, means, lows, highs = _mean_and_band(curve.histories)
        if not epochs:
            continue
        (line,) = ax.plot(epochs, means, label=f"{curve.label} (n={len(curve.histories)})")
        if len(curve.histories) > 1:
            ax.fill_between(epochs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
        if curve.stop_epoch is not None and curve.stop_epoch > 0:
            ax.axvline(curve.stop_epoch, color=line.get_color(), linestyle=":", linewidth=1)
    if not curves:
        ax.text(0.5, 0.5, "no curves to draw", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("epoch (dotted: Mixup switched off after this epoch)")
    ax.set_ylabel(f"{metric} (mean over seeds, band = min-max)")
    ax.set_title(title or f"{metric} learning curves")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
