"""`mixup-train CONFIG --out DIR [--set k=v ...] [--resume]`: one trial, no Ray, no MLflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, bundled_config_names, load_trial_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mixup-train",
        description="Train one Mixup trial (no Ray, no MLflow). Writes config.yaml, metrics.jsonl, "
        "summary.json and checkpoints/ under --out.",
    )
    p.add_argument("config", help=f"a YAML path or a bundled config: {', '.join(bundled_config_names())}")
    p.add_argument("--out", required=True, type=Path, help="output directory of the trial")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set mixup.alpha=0.4 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def format_summary(summary: dict, last: dict | None) -> str:
    rows = [(k, summary[k]) for k in ("status", "epochs", "best_epoch", "best_val_acc", "test_acc_at_best",
                                      "final_test_acc", "wall_s")]
    if summary.get("error"):
        rows.append(("error", summary["error"]))
    if last:
        for k in ("test_acc_common", "test_acc_rare", "test_ece", "feat_common", "feat_rare"):
            if k in last:
                rows.append((f"final {k}", last[k]))
    width = max(len(k) for k, _ in rows)
    fmt = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(f"  {k:<{width}}  {fmt(v)}" for k, v in rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_trial_config(args.config, args.overrides)
        out: Path = args.out
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a directory")
        if args.resume:
            from .checkpoint import latest_checkpoint, load_checkpoint

            ckpt = latest_checkpoint(out / "checkpoints")
            if ckpt is None:
                raise ConfigError(f"--resume: no checkpoint under {out / 'checkpoints'}; run without --resume")
            load_checkpoint(ckpt)  # fail now, with a clear message, if it is unusable
        elif (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0:
            raise ConfigError(f"--out {out}: already holds a trial; use --resume to continue it or pick another directory")
        from .device import resolve_device

        resolve_device(cfg.train.device)
    except ConfigError as e:
        print(f"mixup-train: error: {e}", file=sys.stderr)
        return 2

    from .reporting import LocalReporter
    from .trial import run_trial

    try:
        summary = run_trial(cfg, out, LocalReporter(out, resume=args.resume), progress=not args.quiet)
    except ConfigError as e:  # problems only visible once data is read (e.g. a bad npz)
        print(f"mixup-train: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nmixup-train: interrupted; continue with: mixup-train {args.config} --out {out} --resume",
              file=sys.stderr)
        return 130
    from .checkpoint import read_history

    history = read_history(out / "metrics.jsonl")
    print(f"\nmixup-train: {out}")
    print(format_summary(summary, history[-1] if history else None))
    return 0 if summary["status"] == "finished" else 1


if __name__ == "__main__":
    sys.exit(main())
