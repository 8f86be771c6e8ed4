"""The short label of a trial, built from what its sweep varies: `E=60 a=1.0 s0`, `E=never s1`, `E=0 s2`.

One function makes it, so that the MLflow run name, Ray's progress table, `best`, `status` and the plots
all show the same words for the same trial (design.md, MLflow layout). Pure: no Ray, no MLflow.

- Only the keys the sweep varies are in a label (a grid key with one value is not: it tells trials
  apart no better than the spec does). Their order is fixed by the key, not by the spec: stop epoch,
  alpha, the label policy and its parameters, the other keys, seed last.
- `mixup.stop_epoch` null (Mixup for the whole run) is `never`, everywhere; another null is `null`.
- Floats are shortened to 4 significant digits (an Optuna alpha of 0.3456789 is `a=0.3457`) but keep
  one decimal when whole (`a=1.0`, so alpha never reads like an epoch).
- The seed is written `s0` (no `=`), the way people say it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

from .keys import GRID_POINT, PACK_KEY, SEED_KEY, SHARE_KEY, STOP_EPOCH_KEY

NEVER = "never"  # mixup.stop_epoch null: Mixup is never switched off

# Short names of the keys a Mixup sweep varies. A key not listed here is shown by its last dotted part
# (train.lr -> lr) unless two varying keys would then look alike; then by its full dotted name.
ABBREVIATIONS: dict[str, str] = {
    STOP_EPOCH_KEY: "E",
    "mixup.alpha": "a",
    "mixup.label_policy": "lp",
    "mixup.label_alpha": "la",
    "mixup.label_power": "lpow",
    "mixup.label_value": "lv",
    "mixup.per_sample": "per_sample",
    "mixup.fold": "fold",
    # the feature-noise data model (mixup_core/data/feature_noise.py)
    "data.rare_fraction": "rare",
    "data.noise_std": "noise",
    "data.feature_noise": "fnoise",
    "data.feature_noise_kind": "fnoise_kind",
    "data.rare_strength": "rare_str",
    "data.common_strength": "common_str",
    "data.n_train": "n_train",
    "data.val_size": "val",
    "data.name": "data",
    "model.name": "model",
    "model.width": "width",
    "train.lr": "lr",
    "train.weight_decay": "wd",
    "train.batch_size": "bs",
    "train.epochs": "epochs",
    "train.momentum": "mom",
    SEED_KEY: "s",
}
# The keys whose labels lead, in this order; every other key follows in alphabetical order, seed last.
_LEADING = (STOP_EPOCH_KEY, "mixup.alpha", "mixup.label_policy", "mixup.label_alpha", "mixup.label_power",
            "mixup.label_value")


def format_value(key: str, value: Any) -> str:
    """A value as a label shows it (also the table cells of `best`)."""
    if value is None:
        return NEVER if key == STOP_EPOCH_KEY else "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e6:
            return f"{value:.1f}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value("", v) for v in value) + "]"
    return str(value)


def ordered_keys(keys: Iterable[str]) -> list[str]:
    """`keys` once each, in label order: stop epoch, alpha, label policy..., the rest sorted, seed last."""
    unique = list(dict.fromkeys(keys))
    leading = [k for k in _LEADING if k in unique]
    rest = sorted(k for k in unique if k not in _LEADING and k != SEED_KEY)
    return leading + rest + ([SEED_KEY] if SEED_KEY in unique else [])


def short_names(keys: Sequence[str]) -> dict[str, str]:
    """key -> its short name among `keys` (distinct names, so no two keys read alike)."""
    wanted = {k: ABBREVIATIONS.get(k, k.rsplit(".", 1)[-1]) for k in keys}
    counts: dict[str, int] = {}
    for name in wanted.values():
        counts[name] = counts.get(name, 0) + 1
    return {k: name if counts[name] == 1 else k for k, name in wanted.items()}


def trial_label(point: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The label of the trial at `point` (dotted key -> value) in a sweep varying `keys`. A key the point
    does not name (a sub-grid that leaves it out) is skipped. No key at all: `trial`."""
    present = [k for k in ordered_keys(keys) if k in point]
    names = short_names(present)
    parts = []
    for k in present:
        if k == SEED_KEY:
            parts.append(f"{names[k]}{format_value(k, point[k])}")
        else:
            parts.append(f"{names[k]}={format_value(k, point[k])}")
    return " ".join(parts) or "trial"


def group_label(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The label of a group of trials that differ only in their seed (what `best` and the plots show)."""
    label = trial_label(config, [k for k in keys if k != SEED_KEY])
    return "all trials" if label == "trial" else label


def varying_keys(values_per_key: Mapping[str, Sequence[Any]]) -> list[str]:
    """The keys that take more than one value (dotted key -> the values a sweep gives it), label order."""
    varying = []
    for key, values in values_per_key.items():
        distinct = {repr(v) for v in values}
        if len(distinct) > 1:
            varying.append(key)
    return ordered_keys(varying)


def sweep_label_keys(sweep) -> list[str]:
    """The keys the labels of `sweep` (a sweeps.spec.Sweep) show: every grid key with more than one
    value over all its grids, and every key of the Optuna space."""
    values: dict[str, list[Any]] = {}
    for key in sweep.grid_keys:
        values[key] = sweep.grid_values(key)
    keys = varying_keys(values)
    if sweep.spec.optuna is not None:
        keys += [k for k in sweep.spec.optuna.space if k not in keys]
    return ordered_keys(keys)


def ray_trial_name(config: Mapping[str, Any], keys: Sequence[str]) -> str:
    """What Ray's progress table shows in its "Trial name" column for the Ray trial of `config`: the
    trial's label; a prefix-sharing trunk that is no trial of the grid: `trunk: E=never s0` (as its MLflow
    run, branching.shared_run_name); a pack:
    its members' labels joined by ` | `."""
    if PACK_KEY in config:
        return " | ".join(trial_label(point, keys) for point in config[PACK_KEY])
    point = config.get(GRID_POINT, config)
    label = trial_label(point, keys)
    share = config.get(SHARE_KEY)
    if share and share.get("role") == "trunk" and not share.get("is_user_trial", True):
        return f"trunk: {label}"
    return label


def ray_trial_name_of(trial, keys: Sequence[str]) -> str:
    """`tune.TuneConfig(trial_name_creator=functools.partial(ray_trial_name_of, keys=...))`: Ray calls
    it with the Trial it creates and shows the result in its progress table's "Trial name" column."""
    return ray_trial_name(trial.config, keys)
