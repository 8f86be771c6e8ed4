"""A selection (selection.py) as the `best --json` document and as the text report.

The text report is written for a person reading a terminal: the table fits 120 columns (columns that
do not fit are left out and `--wide` named; `--wide` shows them all), and every sentence under it is
checked against the data it describes: no spread is claimed for one seed, no comparison without two
shared seeds, a tie says which rule broke it, test metrics are said to be shown for every group
because the table shows them for every group.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Sequence

from ..keys import STOP_EPOCH_KEY, TEST_ACC
from ..labels import format_value, group_label, ordered_keys, short_names, trial_label
from .selection import Comparison, GroupResult, Selection, Spread, Verdict, natural_order

TERMINAL_COLUMNS = 120
TIE_RULE = ("more seeds first, then the earliest stop epoch (never = latest), then the other keys' values "
            "in natural order")
# The columns of the narrow table, after the label, n, metric and paired columns, while they fit.
_NARROW_REPORTED = (TEST_ACC, "test_acc_rare")


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


# -- the JSON document ------------------------------------------------------------------------------

def _paired_to_dict(c: Comparison | None) -> dict[str, Any] | None:
    if c is None:
        return None
    p = c.paired
    return {
        "definition": "this group minus the best, per shared seed; 95% paired t interval of the mean",
        "seeds": list(p.seeds),
        "differences": [_clean(d) for d in p.differences],
        "n_seeds": p.n,
        "mean_difference": _clean(p.mean),
        "sd": _clean(p.sd),
        "ci95_low": _clean(p.low),
        "ci95_high": _clean(p.high),
        "separated": p.separated,  # null: fewer than 2 shared seeds
        "identical": p.identical,
    }


def row_to_dict(r: GroupResult, comparison: Comparison | None = None) -> dict[str, Any]:
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
    for name, s in r.reported.items():
        row[f"{name}_mean"] = _clean(s.mean)
        row[f"{name}_std"] = _clean(s.std)
    row.setdefault(f"{TEST_ACC}_mean", None)
    row.setdefault(f"{TEST_ACC}_std", None)
    row["paired_vs_best"] = _paired_to_dict(comparison)
    row["run_ids"] = list(r.run_ids)
    return row


def _comparison_of(v: Verdict, r: GroupResult) -> Comparison | None:
    return next((c for c in v.comparisons if c.group is r), None)


def _verdict_to_dict(v: Verdict) -> dict[str, Any]:
    return {
        "best_stop_epoch": v.best.stop_epoch,
        "best_config": dict(v.best.config),
        "best_label": v.best.label,
        "metric_mean": _clean(v.best.metric.mean),
        "metric_std": _clean(v.best.metric.std),
        "n": v.best.metric.n,
        "runner_up": dict(v.runner_up.config) if v.runner_up else None,
        "within_noise": v.within_noise,
        "not_separated_from_best": [r.label for r in v.not_separated],
        "not_paired": [r.label for r in v.not_paired],
        "paired": {c.group.label: _paired_to_dict(c) for c in v.comparisons},
    }


def selection_to_dict(sel: Selection, **context: Any) -> dict[str, Any]:
    """The `--json` document (also stored as selection/selection.json on the parent run)."""
    ov = sel.overall
    return {
        **context,
        "metric": sel.metric,
        "mode": sel.mode,
        "metric_definition": "value at the final epoch (latest step of the metric history), per trial",
        "best_stop_epoch": sel.best_stop_epoch,
        "best_config": sel.best_config,
        "best_label": sel.best.label,
        "best": row_to_dict(sel.best),
        "runner_up": row_to_dict(ov.runner_up, ov.comparisons[0]) if ov.runner_up else None,
        "within_noise": ov.within_noise,
        "ties": [dict(r.config) for r in ov.tied],
        "tie_rule": TIE_RULE,
        "not_separated_from_best": [r.label for r in ov.not_separated],
        "not_paired_with_best": [r.label for r in ov.not_paired],
        "best_per_combination": [{"combination": dict(c), **_verdict_to_dict(v)} for c, v in sel.per_combination],
        "table": [row_to_dict(r, _comparison_of(ov, r)) for r in sel.rows],
        "excluded": [
            {"trial_id": e.trial_id, "run_id": e.run_id, "status": e.status, "reason": e.reason,
             "params": dict(e.config), "label": trial_label(e.config, sel.label_keys)}
            for e in sel.excluded
        ],
        "n_trials": sel.n_trials,
        "n_used": sum(r.metric.n for r in sel.rows),
        "superseded_run_ids": list(sel.superseded_run_ids),
        "varying_keys": list(sel.varying_keys),
        "label_keys": list(sel.label_keys),
        "fixed_params": dict(sel.fixed_params),
    }


# -- the text report ----------------------------------------------------------------------------------

def _fmt(x: float | None, digits: int = 4) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.{digits}f}"


def _signed(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:+.4f}"


def _mean_std(s: Spread | None) -> str:
    if s is None:
        return "-"
    return f"{_fmt(s.mean)} ± {_fmt(s.std)}" if s.std is not None else _fmt(s.mean)


def _paired_cells(c: Comparison | None, mode: str) -> list[str]:
    """[difference with its interval, verdict word] of one row against the best."""
    if c is None:
        return ["(best)", ""]
    p = c.paired
    if p.n == 0:
        return ["no shared seed", "-"]
    if p.identical:
        return [f"{_signed(p.mean)} on {p.n} seed(s)", "identical"]
    if p.low is None:
        return [f"{_signed(p.mean)} (1 seed)", "-"]
    cell = f"{_signed(p.mean)} [{_signed(p.low)}, {_signed(p.high)}]"
    if not p.separated:
        return [cell, "not separated"]
    worse = p.mean < 0 if mode == "max" else p.mean > 0
    return [cell, "worse" if worse else "better*"]


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _reported_names(sel: Selection) -> list[str]:
    names: list[str] = []
    for r in sel.rows:
        names += [n for n in r.reported if n not in names]
    return names


def _columns(sel: Selection, wide: bool) -> list[tuple[str, list[str]]]:
    """(header, one cell per row) of every column the table may show, in order."""
    ov = sel.overall
    all_single = all(r.metric.n == 1 for r in sel.rows)
    cols: list[tuple[str, list[str]]] = [
        (" ", ["*" if r is sel.best else " " for r in sel.rows]),
        ("group", [r.label for r in sel.rows]),
        ("n", [str(r.metric.n) for r in sel.rows]),
        (sel.metric, [_mean_std(r.metric) for r in sel.rows]),
    ]
    if len(sel.rows) > 1 and not all_single:
        paired = [_paired_cells(_comparison_of(ov, r), sel.mode) for r in sel.rows]
        cols.append(("Δ vs best [95% CI]", [p[0] for p in paired]))
        cols.append(("", [p[1] for p in paired]))
    if wide:
        cols.append(("min .. max", [f"{_fmt(r.metric.min)} .. {_fmt(r.metric.max)}" if r.metric.n > 1 else "-"
                                    for r in sel.rows]))
    names = _reported_names(sel)
    for name in names if wide else [n for n in _NARROW_REPORTED if n in names]:
        cols.append((name, [_mean_std(r.reported.get(name)) for r in sel.rows]))
    return cols


def format_table(sel: Selection, wide: bool = False, width: int = TERMINAL_COLUMNS) -> tuple[list[str], bool]:
    """Aligned table, one row per group, the overall best marked with '*'. Returns (lines, whether
    columns were left out to fit `width`)."""
    cols = _columns(sel, wide)
    left_out = False
    while True:
        lines = _align([[h for h, _ in cols]] + [[c[i] for _, c in cols] for i in range(len(sel.rows))])
        if wide or max(len(line) for line in lines) <= width or len(cols) <= 4:
            return lines, left_out
        cols.pop()  # the rightmost column is the least needed one
        left_out = True


def _names(groups: Sequence[GroupResult]) -> str:
    """Labels in table order (by configuration), whatever order the groups were ranked in."""
    ordered = sorted(groups, key=lambda r: tuple(natural_order(v) for v in r.config.values()))
    return ", ".join(r.label for r in ordered)


def _stop_words(r: GroupResult) -> str:
    if STOP_EPOCH_KEY not in r.config:
        return ""
    stop = r.stop_epoch
    if stop is None:
        return " (Mixup for the whole run)"
    if stop == 0:
        return " (standard training, no Mixup)"
    return f" (Mixup for epochs 1-{stop}, standard training after)"


def _verdict_sentences(v: Verdict, metric: str, what: str = "group") -> list[str]:
    """What the paired comparison says, sentence by sentence, only what the numbers support."""
    out: list[str] = []
    if not v.comparisons:
        return [f"Only one {what}: nothing to compare it with."]
    if all(r.metric.n < 2 for r in (v.best, *(c.group for c in v.comparisons))):
        return [f"One seed per {what}: no spread and no paired comparison (a paired comparison needs "
                f">= 2 seeds); the choice is the better {metric} of single runs."]
    if v.tied:
        verb = "has" if len(v.tied) == 1 else "have"
        out.append(f"Tie: {_names(v.tied)} {verb} exactly the same mean {metric} over as many seeds; "
                   f"broken by the rule: {TIE_RULE}.")
    identical = [c.group for c in v.comparisons if c.paired.identical and c.paired.n >= 2]
    if identical:
        out.append(f"{_names(identical)}: the same {metric} as the best on every shared seed.")
    not_sep = [g for g in v.not_separated if g not in identical]
    separated = [c.group for c in v.comparisons if c.separated]
    paired_words = "paired by seed, 95% t interval of the mean difference"
    if separated and not not_sep and not identical:
        out.append(f"The data separate the best from every other {what} ({paired_words}).")
    else:
        if separated:
            out.append(f"The data separate the best from {_names(separated)} ({paired_words}).")
        if not_sep or identical:
            cannot = identical + not_sep
            out.append(f"The data cannot separate the best from {_names(cannot)}"
                       + ("" if separated else f" ({paired_words})")
                       + ": add seeds before trusting the choice among them.")
    if v.not_paired:
        out.append(f"No paired comparison for {_names(v.not_paired)}: fewer than 2 seeds shared with the best.")
    return out


def _combination_verdict(v: Verdict) -> str:
    """The verdict of one combination's stop epochs, in a few words (the table has the numbers)."""
    if not v.comparisons:
        return "the only stop epoch."
    if all(r.metric.n < 2 for r in (v.best, *(c.group for c in v.comparisons))):
        return "one seed each: no comparison."
    words = []
    if v.tied:
        words.append(f"tied with {_stop_names(v.tied)} (broken by the earliest stop epoch)")
    if v.not_separated:
        words.append(f"not separated from {_stop_names(v.not_separated)}")
    if v.not_paired:
        words.append(f"not compared with {_stop_names(v.not_paired)} (< 2 shared seeds)")
    separated = [c.group for c in v.comparisons if c.separated]
    if separated and not words:
        return "separated from every other stop epoch."
    if separated:
        words.append(f"separated from {_stop_names(separated)}")
    return "; ".join(words) + "."


def _stop_names(groups: Sequence[GroupResult]) -> str:
    return ", ".join(f"E={format_value(STOP_EPOCH_KEY, g.stop_epoch)}" for g in groups)


def wrap(text: str, indent: str = "") -> list[str]:
    """A sentence wrapped to the terminal, continuation lines indented two more."""
    return textwrap.wrap(text, width=TERMINAL_COLUMNS, initial_indent=indent, subsequent_indent=indent + "  ",
                         break_on_hyphens=False, break_long_words=False) or [""]


def _better_footnote(v: Verdict, mode: str) -> list[str]:
    """better* rows: higher mean over all its seeds lost, but better on the seeds both have."""
    flagged = [c.group for c in v.comparisons if c.separated and c.paired.mean is not None
               and (c.paired.mean > 0 if mode == "max" else c.paired.mean < 0)]
    if not flagged:
        return []
    return [f"better*: {_names(flagged)} beat the best on the seeds both have, though not on the mean over all "
            "its seeds (they have different seeds); compare on the same seeds."]


def _excluded_lines(sel: Selection) -> list[str]:
    if not sel.excluded:
        return []
    out = [f"Excluded (not in the table): {len(sel.excluded)} trial(s)"]
    for e in sel.excluded[:20]:
        out.append(f"  - {trial_label(e.config, sel.label_keys)} (trial {e.trial_id}): {e.reason}")
    if len(sel.excluded) > 20:
        out.append(f"  ... and {len(sel.excluded) - 20} more (see --json)")
    # A configuration none of whose trials finished has no row: say so, it is easy to miss.
    shown = {tuple(sorted((k, repr(v)) for k, v in r.config.items())) for r in sel.rows}
    missing: dict[str, int] = {}
    for e in sel.excluded:
        config = {k: v for k, v in e.config.items() if k in sel.varying_keys}
        if tuple(sorted((k, repr(v)) for k, v in config.items())) not in shown:
            label = group_label(config, sel.label_keys)
            missing[label] = missing.get(label, 0) + 1
    for label, n in missing.items():
        out.append(f"  {label}: no usable trial ({n} excluded), so no row in the table.")
    return out


def format_report(sel: Selection, sweep: str = "", parent_run_id: str = "", tracking_uri: str = "",
                  wide: bool = False) -> str:
    """The human-readable report printed by `mixup-sweep best` and stored as selection.md."""
    out: list[str] = []
    where = f": parent run {parent_run_id}, {tracking_uri}" if parent_run_id else ""
    out.append(f"Sweep '{sweep}'{where}")
    used = sum(r.metric.n for r in sel.rows)
    out.append(f"Selection metric: final-epoch {sel.metric} ({sel.mode}); groups = configurations minus seed; "
               f"trials: {used} of {sel.n_trials} used, {len(sel.excluded)} excluded")
    out.extend(_excluded_lines(sel))
    if sel.superseded_run_ids:
        out.append(f"Ignored {len(sel.superseded_run_ids)} earlier run(s) of retried trials.")
    out.append("")
    table, left_out = format_table(sel, wide)
    table_at = len(out)
    test_shown = any(name in table[0] for name in _reported_names(sel))
    out.extend(table)
    legend = ("Cells: mean ± std over seeds." if any(r.metric.n > 1 for r in sel.rows)
              else "Cells: one seed each, so no spread.")
    if any(line.find("Δ vs best") >= 0 for line in table[:1]):
        legend += (" Δ: the group minus the best, paired by seed (mean difference and its 95% paired t"
                   " interval); 'not separated': the interval includes 0.")
    if left_out:
        legend += " More columns: --wide."
    out.extend(wrap(legend))
    out.append("")

    best = sel.best
    n = best.metric.n
    spread = f"{_mean_std(best.metric)} over {n} seeds" if n > 1 else f"{_fmt(best.metric.mean)} (1 seed)"
    out.append(f"Best: {best.label}{_stop_words(best)}: {sel.metric} {spread}")
    if STOP_EPOCH_KEY in best.config:
        out.append(f"Best stop_epoch: {format_value(STOP_EPOCH_KEY, best.stop_epoch)}")
    out.extend(_verdict_sentences(sel.overall, sel.metric))
    out.extend(_better_footnote(sel.overall, sel.mode))

    combo_keys = [k for k in sel.varying_keys if k != STOP_EPOCH_KEY]
    if len(sel.per_combination) > 1 and STOP_EPOCH_KEY in sel.varying_keys:
        out.append("")
        names = short_names(ordered_keys(combo_keys))
        out.append(f"Best stop epoch for each {', '.join(names.values())}:")
        for combo, v in sel.per_combination:
            out.extend(wrap(f"{group_label(combo, sel.label_keys)}: E={format_value(STOP_EPOCH_KEY, v.best.stop_epoch)} "
                             f"({sel.metric} {_mean_std(v.best.metric)}); {_combination_verdict(v)}", indent="  "))
    out.append("")
    if sel.metric.startswith("test"):
        out.append(f"WARNING: selected on a TEST metric ({sel.metric}): the chosen group's test accuracy is "
                   "optimistically biased. Select on a validation metric (val_acc).")
    else:
        shown = "; the test metrics in the table are shown for every group, never used to choose" if test_shown else ""
        kind = " (validation)" if sel.metric.startswith("val") else ""
        out.append(f"Chosen on {sel.metric}{kind}{shown}.")
    # Every line but the table's is prose: wrapped to the terminal, keeping its indentation.
    lines = []
    for k, line in enumerate(out):
        if table_at <= k < table_at + len(table) or len(line) <= TERMINAL_COLUMNS:
            lines.append(line)
        else:
            lines.extend(wrap(line.lstrip(), indent=line[:len(line) - len(line.lstrip())]))
    return "\n".join(lines)


def format_side_by_side(selections: dict[str, Selection], wide: bool = False,
                        width: int = TERMINAL_COLUMNS) -> str:
    """Several sweeps in one table: a row per group label, for each sweep its n, mean ± std and verdict
    against its own best. Labels use every key any of the sweeps varies, a key one sweep keeps fixed
    taking its fixed value there, so the same configuration lands in the same row."""
    keys = ordered_keys(k for sel in selections.values() for k in sel.label_keys)
    rows: dict[str, dict[str, tuple[GroupResult, Selection]]] = {}
    for name, sel in selections.items():
        for r in sel.rows:
            label = group_label({**sel.fixed_params, **r.config}, keys)
            rows.setdefault(label, {})[name] = (r, sel)
    header = ["group"]
    for name in selections:
        header += [f"{name}: n", "mean ± std", "vs its best"]
    lines = [header]
    for label, per in rows.items():
        cells = [label]
        for name in selections:
            if name not in per:
                cells += ["-", "-", ""]
                continue
            r, sel = per[name]
            verdict_word = "best" if r is sel.best else _paired_cells(_comparison_of(sel.overall, r), sel.mode)[1]
            cells += [str(r.metric.n), _mean_std(r.metric), verdict_word or "-"]
        lines.append(cells)
    metric = {sel.metric for sel in selections.values()}
    out = [f"Side by side: final-epoch {', '.join(sorted(metric))}; each sweep's groups compared with its own "
           "best, paired by seed (95% t interval)", ""]
    table = _align(lines)
    out += table
    if not wide and max(len(line) for line in table) > width:
        out.append("(wider than the terminal: compare fewer sweeps at once, or read each report below)")
    return "\n".join(out)
