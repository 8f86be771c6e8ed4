"""What a sweep will run and what it costs in epochs: the `--dry-run` listing (starts nothing)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Optional

from mixup_core import ConfigError, resolve_augment

from ..keys import STOP_EPOCH_KEY
from ..spec import Sweep
from .packs import pack_plan, packs_trials
from .sharing import plan_cost, plan_trials, sharing_applies


def _fmt(value: Any) -> str:
    return "null" if value is None else str(value)


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *map(line, rows)]


CIFAR_IMAGE_SIZE = (32, 32)


def augmentation_line(sweep: Sweep) -> Optional[str]:
    """What `data.augment` applies to the trials' images (the same rule the trial uses), or None for
    data without images (a swept data.augment is in the table, per trial)."""
    data = sweep.base_trial["data"]
    if data["name"] == "feature_noise":
        return None
    size = CIFAR_IMAGE_SIZE if data["name"] in ("cifar10", "cifar100") else None
    choice = sweep.trial_config({}).data.augment
    shown = choice if isinstance(choice, (bool, str)) else "{crop_pad: %d, flip: %s}" % (choice.crop_pad, str(choice.flip).lower())
    shown = str(shown).lower()
    try:
        applied = resolve_augment(choice, data["name"], size)
    except ConfigError:  # npz with `true`: scaled to the image size, known once the file is read
        return f"  augmentation (data.augment: {shown}): random crop padded by 1/8 of the image side + flip"
    if applied is False:
        return f"  augmentation (data.augment: {shown}): none"
    parts = [f"random crop padded by {applied.crop_pad} px" if applied.crop_pad else "", "horizontal flip" if applied.flip else ""]
    return f"  augmentation (data.augment: {shown}): {' + '.join(p for p in parts if p)}"


def describe(sweep: Sweep) -> str:
    spec = sweep.spec
    res = spec.resources
    lines = [
        f"sweep {spec.name!r} from {sweep.source}",
        f"  metric {spec.metric} ({spec.mode}); {res.cpu:g} CPU + {res.gpu:g} GPU per trial; "
        f"{spec.max_concurrent} at a time; up to {spec.max_failures} restart(s) per trial",
    ]
    augmentation = augmentation_line(sweep)
    if augmentation:
        lines.append(augmentation)
    if spec.scheduler is not None:
        a = spec.scheduler
        lines.append(f"  scheduler: ASHA, grace_period {a.grace_period}, reduction_factor {a.reduction_factor:g}, "
                     f"max_t {a.max_t if a.max_t is not None else sweep.max_epochs()}")
    if spec.optuna is not None:
        o = spec.optuna
        lines.append(f"  Optuna (TPE, seed {sweep.search_seed}): {o.n_trials} trials over")
        for key in sweep.grid_keys:
            values = sweep.grid_values(key)
            lines.append(f"    {key}: one of {', '.join(map(_fmt, values))} (grid key, categorical)")
        for key, dim in o.space.items():
            if dim.type == "categorical":
                lines.append(f"    {key}: one of {', '.join(map(_fmt, dim.choices or []))}")
            else:
                lines.append(f"    {key}: {dim.type} in [{dim.low:g}, {dim.high:g}]{' (log)' if dim.log else ''}")
        per_trial = sweep.max_epochs()
        total = o.n_trials * per_trial
        lines.append(f"total: {o.n_trials} trials, at most {total} epochs ({per_trial} per trial)")
        return "\n".join(lines)

    points = sweep.grid_points()
    keys = sweep.grid_keys
    pack_of = _pack_numbers(sweep)
    rows = []
    total = 0
    shown = _shown_rows(len(points))
    for i, point in enumerate(points, 1):
        epochs = sweep.epochs_of(point)
        total += epochs
        if i in shown:
            rows.append([str(i), *(_fmt(point[k]) for k in keys), str(epochs),
                         *([str(pack_of[_fingerprint(point)])] if pack_of else [])])
    table = _table(rows, ["#", *keys, "epochs", *(["pack"] if pack_of else [])])
    if len(points) > len(rows):  # a huge grid: its first and last rows, and the count between
        half = 2 + len(rows) // 2
        table = [*table[:half], f"... {len(points) - len(rows):,} more trials not listed ...", *table[half:]]
    lines += ["", *table]
    bound = "at most " if spec.scheduler is not None else ""
    lines.append(f"total: {len(points)} trials, {bound}{total} epochs")
    if pack_of:
        packs = len(set(pack_of.values()))
        lines.append(f"packed: {packs} pack(s) of up to {res.pack} trials, each one process and one Ray trial with "
                     f"{res.cpu * res.pack:g} CPU + {res.gpu * res.pack:g} GPU; "
                     f"{spec.max_concurrent // res.pack} pack(s) at a time")
    lines += _sharing_lines(sweep, total, bound)
    return "\n".join(lines)


MAX_LISTED = 200  # trials listed one by one; a bigger grid shows its first and last MAX_LISTED / 2


def _shown_rows(n: int) -> range | set[int]:
    if n <= MAX_LISTED:
        return range(1, n + 1)
    half = MAX_LISTED // 2
    return set(range(1, half + 1)) | set(range(n - half + 1, n + 1))


def _fingerprint(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True, default=str)


def _pack_numbers(sweep: Sweep) -> dict[str, int]:
    """Grid point -> its pack's number (1-based, the order packs start in); empty when not packed."""
    if not packs_trials(sweep):
        return {}
    return {_fingerprint(m.point): n for n, pack in enumerate(pack_plan(sweep), 1) for m in pack.members}


def _sharing_lines(sweep: Sweep, independent: int, bound: str) -> list[str]:
    """The cost with and without Mixup-prefix sharing (share_prefix; see sharing.py)."""
    if STOP_EPOCH_KEY not in sweep.grid_keys:
        return []
    if not sweep.spec.share_prefix:
        return [f"share_prefix: false (with sharing: {bound}{plan_cost(plan_trials_shared(sweep))} epochs; "
                f"without: {bound}{independent} epochs)"]
    plan = plan_trials(sweep)
    shared = plan_cost(plan)
    trunks = [t for t in plan if t.kind == "trunk"]
    branches = sum(t.kind == "branch" for t in plan)
    if not sharing_applies(sweep) or not trunks:
        return [f"share_prefix: no trials share a Mixup prefix here ({bound}{independent} epochs)"]
    extra = sum(not t.is_user_trial for t in trunks)
    saved = 1 - shared / independent if independent else 0.0
    return [
        f"share_prefix: {len(trunks)} Mixup trunk(s) ({extra} not in the grid), {branches} branch(es) "
        f"start from a trunk checkpoint",
        f"epochs with sharing: {bound}{shared}; without: {bound}{independent} ({saved:.0%} saved)",
    ]


def plan_trials_shared(sweep: Sweep):
    shared_spec = sweep.spec.model_copy(update={"share_prefix": True})
    return plan_trials(dataclasses.replace(sweep, spec=shared_spec))
