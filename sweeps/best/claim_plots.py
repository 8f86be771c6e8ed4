"""Figures of a claim's verdict (claims.py), drawn from its ClaimResult onto a PNG.

- arms (claims decoupling, rare_feature, early_stop): per arm, rare-feature test accuracy, feat_rare,
  the final train loss and common test accuracy; every seed a dot, the mean a bar, so a reader sees the spread the
  verdict is about.
- map: two heatmaps over the data-model grid, Mixup minus standard and early-stopped minus Mixup
  throughout on rare test accuracy, each cell annotated with the paired mean and 95% half-width;
  cells whose interval contains 0 (or that have one seed) are hatched: there the sign is seed noise.

Built on `matplotlib.figure.Figure` with the Agg canvas (no pyplot), like plots.py.
"""

from __future__ import annotations

from pathlib import Path

from .claims import COMMON, FEAT_RARE, HOLDS, MIXUP, RARE, REVERSED, STANDARD, TRAIN_LOSS, ClaimResult, cell_label

# Rare accuracy is the claim; feat_rare and the final train loss are the mechanism (a rare feature
# learned in the weights; a soft label that cannot be fitted vs a hard one fitted to ~0); common
# accuracy is the control (every arm should learn the common feature).
_PANELS = ((RARE, "rare-feature test accuracy", (0.0, 1.05)),
           (FEAT_RARE, "feat_rare (max filter / rare feature)", None),
           (TRAIN_LOSS, "final train loss (mixed batches under Mixup)", None),
           (COMMON, "common-feature test accuracy", (0.0, 1.05)))


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _arm_color(arm: str) -> str:
    if arm == STANDARD:
        return "tab:red"
    if arm == MIXUP:
        return "black"
    return "tab:blue"


def plot_arms(result: ClaimResult, path: Path) -> None:
    cell = result.cells[0]
    arms = list(cell.arms)
    fig = _figure(max(8.0, 1.0 * len(arms) * 2 + 1.5), 7.6)
    axes = fig.subplots(2, 2).ravel()
    for ax, (metric, title, ylim) in zip(axes, _PANELS):
        for i, arm in enumerate(arms):
            s = cell.arms[arm]
            vals = s.values.get(metric, ())
            if not vals:
                continue
            ax.bar(i, s.mean(metric), width=0.6, color=_arm_color(arm), alpha=0.25)
            jitter = [(k - (len(vals) - 1) / 2) * 0.08 for k in range(len(vals))]
            ax.scatter([i + j for j in jitter], vals, s=16, color=_arm_color(arm), zorder=3)
        ax.set_xticks(range(len(arms)), [a.replace(", ", "\n") for a in arms], fontsize=8, rotation=30, ha="right")
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if ylim:
            ax.set_ylim(*ylim)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls=":")  # chance
    n = max(s.n for s in cell.arms.values())
    width = fig.get_figwidth()
    fig.suptitle(_wrap(f"claim '{result.claim}': {n} seed(s), bar = mean, dot = one seed. {result.headline}",
                       int(width * 15)), fontsize=9)
    fig.savefig(path)


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _grid(result: ClaimResult, pick):
    """(row values, column values, {(row, col): Paired}) for the comparison `pick(cell)` returns."""
    axes = result.axes
    cols = sorted({c.cell[0] for c in result.cells}, key=float)
    rows = sorted({c.cell[1] for c in result.cells}, key=float) if len(axes) == 2 else [None]
    table = {}
    for c in result.cells:
        comp = pick(c)
        if comp is not None:
            table[(c.cell[1] if len(axes) == 2 else None, c.cell[0])] = comp.diff
    return rows, cols, table


def _heatmap(ax, fig, result: ClaimResult, rows, cols, table, title: str) -> None:
    import numpy as np
    from matplotlib.patches import Rectangle

    data = np.full((len(rows), len(cols)), np.nan)
    for (r, c), d in table.items():
        data[rows.index(r), cols.index(c)] = d.mean
    image = ax.imshow(data, cmap="RdBu", vmin=-1.0, vmax=1.0, origin="lower", aspect="auto")
    for (r, c), d in table.items():
        i, j = rows.index(r), cols.index(c)
        text = f"{d.mean:+.2f}" + (f"\n±{d.half_width:.2f}" if d.half_width is not None else "\n1 seed")
        noise = d.status not in (HOLDS, REVERSED)  # the interval contains 0 (or one seed): the sign is noise
        if noise:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="//", edgecolor="0.45", lw=0))
        ax.text(j, i, text, ha="center", va="center", fontsize=9,
                color="white" if abs(d.mean) > 0.6 and not noise else "black",
                bbox=dict(facecolor="white", alpha=0.8, lw=0, pad=1.5) if noise else None)
    ax.set_xticks(range(len(cols)), [f"{v:g}" for v in cols])
    ax.set_xlabel(result.axes[0])
    if len(result.axes) == 2:
        ax.set_yticks(range(len(rows)), [f"{v:g}" for v in rows])
        ax.set_ylabel(result.axes[1])
    else:
        ax.set_yticks([])
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, shrink=0.85, label="difference in rare test accuracy")


def plot_map(result: ClaimResult, path: Path) -> None:
    early = sorted({c.diff.a for cell in result.cells for c in cell.comparisons if c.role == "vs Mixup"})
    panels = [(lambda cell: cell.find(MIXUP, STANDARD), "Mixup - standard (rare-feature gain)")]
    panels += [(lambda cell, a=a: cell.find(a, MIXUP), f"{a} - Mixup throughout") for a in early]
    fig = _figure(5.6 * len(panels) + 0.5, 5.0)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (pick, title) in zip(axes, panels):
        rows, cols, table = _grid(result, pick)
        _heatmap(ax, fig, result, rows, cols, table, title)
    n = max(s.n for cell in result.cells for s in cell.arms.values())
    fig.suptitle(_wrap(f"paired over {n} seed(s); cell = mean ± 95% CI half-width; hatched = CI contains 0 "
                       f"(within seed noise) or one seed", int(fig.get_figwidth() * 15)), fontsize=9)
    fig.savefig(path)


def plot_claim(result: ClaimResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (plot_map if result.claim == "map" else plot_arms)(result, path)


__all__ = ["plot_claim", "plot_arms", "plot_map", "cell_label"]
