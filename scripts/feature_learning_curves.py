"""Feature-learning curves on the feature-noise data model: standard training, Mixup, and Mixup
early-stopped at a few epochs E, for one seed (Zou et al. 2023, claims 2 and 3).

Runs every trial in-process with `mixup_core.trial.run_trial` (the bundled `feature_noise` config
unless --config says otherwise) and writes one PNG: rare-feature test accuracy, and the largest
filter/feature correlations feat_rare and feat_common, against the epoch.

    python scripts/feature_learning_curves.py --out docs/feature_learning_curves.png
    python scripts/feature_learning_curves.py --seed 3 --early-stops 20 40 60 --set train.epochs=300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from mixup_core.config import ConfigError, load_trial_config
from mixup_core.trial import run_trial


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="feature_noise", help="bundled config name or YAML path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--early-stops", type=int, nargs="*", default=[20, 40, 60], metavar="E",
                   help="epochs after which early-stopped Mixup switches to standard training")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override (repeatable)")
    p.add_argument("--out", type=Path, default=Path("docs/feature_learning_curves.png"))
    p.add_argument("--work-dir", type=Path, default=None, help="keep the trial directories here")
    return p.parse_args(argv)


def run_one(config: str, overrides: list[str], seed: int, stop_epoch, work: Path) -> list[dict]:
    stop = "null" if stop_epoch is None else stop_epoch
    cfg = load_trial_config(config, [*overrides, f"seed={seed}", f"mixup.stop_epoch={stop}"])
    out = work / f"seed{seed}_stop{stop}"
    run_trial(cfg, out)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def plot(runs: dict[str, tuple[object, list[dict]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), constrained_layout=True)
    panels = [("test_acc_rare", "test accuracy on rare-feature data"),
              ("feat_rare", "feat_rare = mean_k max_r <w_k,r, rare_k>"),
              ("feat_common", "feat_common = mean_k max_r <w_k,r, common_k>")]
    colors = plt.get_cmap("viridis")
    early = [name for name in runs if name.startswith("Mixup, E=")]
    for name, (stop, rows) in runs.items():
        epochs = [r["epoch"] for r in rows]
        if name == "standard":
            style = dict(color="tab:red", lw=2)
        elif name == "Mixup":
            style = dict(color="black", lw=2)
        else:
            style = dict(color=colors(0.15 + 0.7 * early.index(name) / max(len(early) - 1, 1)), lw=1.5, ls="--")
        for ax, (key, _) in zip(axes, panels):
            ax.plot(epochs, [r[key] for r in rows], label=name, **style)
            if isinstance(stop, int) and stop > 0:
                ax.axvline(stop, color=style["color"], lw=0.6, ls=":")
    for ax, (key, label) in zip(axes, panels):
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="grey", lw=0.8, ls=":")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    variants: list[tuple[str, object]] = [("standard", 0), ("Mixup", None)]
    variants += [(f"Mixup, E={e}", e) for e in sorted(set(args.early_stops))]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="feature_curves_") as tmp:
        work = args.work_dir or Path(tmp)
        try:
            for name, stop in variants:
                runs[name] = (stop, run_one(args.config, args.overrides, args.seed, stop, work))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"{'run':<16} {'test_acc_common':>15} {'test_acc_rare':>13} {'feat_common':>11} {'feat_rare':>9}")
    for name, (_, rows) in runs.items():
        r = rows[-1]
        print(f"{name:<16} {r['test_acc_common']:>15.3f} {r['test_acc_rare']:>13.3f} "
              f"{r['feat_common']:>11.2f} {r['feat_rare']:>9.2f}")
    plot(runs, args.out, f"feature-noise data model, seed {args.seed}: standard vs Mixup vs early-stopped Mixup")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
