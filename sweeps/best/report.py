"""A selection (selection.py) as the `best --json` document and as the text report."""

from __future__ import annotations

import math
from typing import Any

from ..keys import STOP_EPOCH_KEY, TEST_ACC
from .selection import GroupResult, Selection, Spread, Verdict, config_label, format_value


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def row_to_dict(r: GroupResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "params": dict(r.config),
        "label": r.label,
        "n": r.metric.n,
        "metric_mean": _clean(r.metric.mean),
        "metric_std": _clean(r.metric.std),
        "metric_min": _clean(r.metric.min),
        "metric_max": _clean(r.metric.max),
        "metric_values": [_clean(v) for v in r.metric_values],
        "seeds": list(r.seeds),
    }
    for name, s in r.tests.items():
        row[f"{name}_mean"] = _clean(s.mean)
        row[f"{name}_std"] = _clean(s.std)
    row.setdefault(f"{TEST_ACC}_mean", None)
    row.setdefault(f"{TEST_ACC}_std", None)
    row["run_ids"] = list(r.run_ids)
    return row


def _verdict_to_dict(v: Verdict) -> dict[str, Any]:
    return {
        "best_stop_epoch": v.best.stop_epoch,
        "best_config": dict(v.best.config),
        "metric_mean": _clean(v.best.metric.mean),
        "metric_std": _clean(v.best.metric.std),
        "n": v.best.metric.n,
        "runner_up": dict(v.runner_up.config) if v.runner_up else None,
        "within_noise": v.within_noise,
    }


def selection_to_dict(sel: Selection, **context: Any) -> dict[str, Any]:
    """The `--json` document (also stored as selection/selection.json on the parent run)."""
    best = row_to_dict(sel.best)
    ov = sel.overall
    return {
        **context,
        "metric": sel.metric,
        "mode": sel.mode,
        "metric_definition": "value at the final epoch (latest step of the metric history), per trial",
        "best_stop_epoch": sel.best_stop_epoch,
        "best_config": sel.best_config,
        "best": best,
        "runner_up": row_to_dict(ov.runner_up) if ov.runner_up else None,
        "within_noise": ov.within_noise,
        "ties": [dict(r.config) for r in ov.tied],
        "within_one_std_of_best": [dict(r.config) for r in ov.within_one_std],
        "best_per_combination": [{"combination": dict(c), **_verdict_to_dict(v)} for c, v in sel.per_combination],
        "table": [row_to_dict(r) for r in sel.rows],
        "excluded": [
            {"trial_id": e.trial_id, "run_id": e.run_id, "status": e.status, "reason": e.reason, "params": dict(e.config)}
            for e in sel.excluded
        ],
        "n_trials": sel.n_trials,
        "n_used": sum(r.metric.n for r in sel.rows),
        "superseded_run_ids": list(sel.superseded_run_ids),
        "varying_keys": list(sel.varying_keys),
        "fixed_params": dict(sel.fixed_params),
    }


def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _mean_std(s: Spread | None) -> str:
    if s is None:
        return "-"
    return f"{_fmt(s.mean)} ± {_fmt(s.std)}" if s.std is not None else f"{_fmt(s.mean)} (1 seed)"


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def format_table(sel: Selection) -> list[str]:
    """Aligned table, one row per group, the overall best marked with '*'."""
    test_names = []
    for r in sel.rows:
        test_names += [n for n in r.tests if n not in test_names]
    keys = list(sel.varying_keys)
    header = [" "] + (keys or ["config"]) + ["n", f"{sel.metric} mean ± std", "min .. max"]
    header += [f"{n} mean ± std" for n in test_names]
    lines = [header]
    for r in sel.rows:
        cells = ["*" if r is sel.best else " "]
        cells += [format_value(r.config.get(k), k) for k in keys] or ["(all)"]
        cells += [str(r.metric.n), _mean_std(r.metric), f"{_fmt(r.metric.min)} .. {_fmt(r.metric.max)}"]
        cells += [_mean_std(r.tests.get(n)) for n in test_names]
        lines.append(cells)
    return _align(lines)


def format_report(sel: Selection, sweep: str = "", parent_run_id: str = "", tracking_uri: str = "") -> str:
    """The human-readable report printed by `mixup-sweep best` and stored as selection.md."""
    out: list[str] = []
    where = f" (parent run {parent_run_id}, {tracking_uri})" if parent_run_id else ""
    out.append(f"Sweep '{sweep}'{where}")
    out.append(f"Selection metric: final-epoch {sel.metric} ({sel.mode}), mean over seeds; "
               f"grouped by configuration minus seed")
    used = sum(r.metric.n for r in sel.rows)
    out.append(f"Trials: {used} of {sel.n_trials} used, {len(sel.excluded)} excluded")
    if sel.excluded:
        reasons: dict[str, int] = {}
        for e in sel.excluded:
            reasons[e.reason] = reasons.get(e.reason, 0) + 1
        out.append("Excluded (not in the table): " + "; ".join(f"{n} x {r}" for r, n in sorted(reasons.items())))
        for e in sel.excluded[:20]:
            out.append(f"  - trial {e.trial_id} ({config_label(e.config)}): {e.reason}")
        if len(sel.excluded) > 20:
            out.append(f"  ... and {len(sel.excluded) - 20} more (see --json)")
    if sel.superseded_run_ids:
        out.append(f"Ignored {len(sel.superseded_run_ids)} earlier run(s) of retried trials.")
    out.append("")
    out.extend(format_table(sel))
    out.append("")

    if len(sel.per_combination) > 1 and STOP_EPOCH_KEY in sel.varying_keys:
        out.append("Best stop_epoch per combination:")
        for combo, v in sel.per_combination:
            note = ""
            if v.within_noise and v.runner_up is not None:
                note = f"  [within seed noise of stop_epoch={format_value(v.runner_up.stop_epoch, STOP_EPOCH_KEY)}]"
            out.append(f"  {config_label(combo)}: stop_epoch={format_value(v.best.stop_epoch, STOP_EPOCH_KEY)}  "
                       f"{sel.metric} {_mean_std(v.best.metric)} (n={v.best.metric.n}){note}")
        out.append("")

    best, ov = sel.best, sel.overall
    out.append(f"Best stop_epoch: {format_value(best.stop_epoch, STOP_EPOCH_KEY)}"
               + ("  (null: Mixup for the whole run)" if best.stop_epoch is None else ""))
    out.append(f"Best configuration: {best.label}")
    out.append(f"  {sel.metric}: {_mean_std(best.metric)} over {best.metric.n} seed(s) "
               f"(min {_fmt(best.metric.min)}, max {_fmt(best.metric.max)})")
    if best.tests:
        main = best.tests.get(TEST_ACC)
        extra = ", ".join(f"{n} {_mean_std(s)}" for n, s in best.tests.items() if n != TEST_ACC)
        out.append(f"  test accuracy of this group (final epoch): {_mean_std(main)}" + (f"; {extra}" if extra else ""))
    if ov.runner_up is not None:
        ru = ov.runner_up
        gap = abs(best.metric.mean - ru.metric.mean)
        if ov.tied:
            out.append(f"  TIE: {len(ov.tied)} other group(s) have exactly the same mean "
                       f"({', '.join(r.label for r in ov.tied)}); chosen by more seeds, smaller std, then table order.")
        if ov.within_noise:
            out.append(f"  WITHIN SEED NOISE: runner-up {ru.label} has {sel.metric} {_mean_std(ru.metric)}; "
                       f"gap {_fmt(gap)} <= one std. {len(ov.within_one_std)} group(s) are within one std of the best: "
                       "the data do not separate them; add seeds before trusting this choice.")
        elif ov.within_noise is None:
            out.append(f"  Runner-up {ru.label}: {sel.metric} {_mean_std(ru.metric)} (gap {_fmt(gap)}); "
                       "single seeds: spread unknown, cannot tell signal from seed noise.")
        else:
            out.append(f"  Runner-up {ru.label}: {sel.metric} {_mean_std(ru.metric)} (gap {_fmt(gap)} > one std).")
    if sel.metric.startswith("test"):
        out.append(f"WARNING: selected on a TEST metric ({sel.metric}); the chosen group's test accuracy is "
                   "optimistically biased. Select on a validation metric (val_acc).")
    else:
        out.append(f"Selected on validation ({sel.metric}); test accuracy is reported for the chosen group only, "
                   "never used to choose.")
    return "\n".join(out)
