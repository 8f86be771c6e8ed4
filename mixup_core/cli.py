"""`mixup-train CONFIG --out DIR [--set k=v ...] [--resume]`: one trial, no Ray, no MLflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import ConfigError, bundled_config_names, load_trial_config
from .private_files import check_creatable


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


def holds_a_trial(out: Path) -> bool:
    """Epochs logged or a checkpoint written: a fresh run there would overwrite them."""
    metrics = out / "metrics.jsonl"
    if metrics.exists() and metrics.stat().st_size > 0:
        return True
    return (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir())


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
        check_creatable(out, f"--out {out}")
        restore, messages = None, []
        if args.resume:
            from .resume import plan_resume

            plan = plan_resume(cfg, out)
            restore, messages = plan.checkpoint, plan.messages
        elif holds_a_trial(out):
            raise ConfigError(f"--out {out}: already holds a trial; use --resume to continue it or pick another directory")
        from .device import resolve_device

        resolve_device(cfg.train.device)
    except ConfigError as e:
        print(f"mixup-train: error: {e}", file=sys.stderr)
        return 2
    for message in messages:  # only once every check passed: bad input stays one line
        print(f"mixup-train: {message}", file=sys.stderr)

    from .reporting import LocalReporter
    from .trial import run_trial

    try:
        reporter = LocalReporter(out, resume=args.resume, checkpoint=restore)
        summary = run_trial(cfg, out, reporter, progress=not args.quiet)
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
