"""A sweep specification: loaded from YAML plus `--set` overrides, and validated completely before
anything starts (no Ray, no MLflow, no files): every problem is one `ConfigError` line naming the key
and what is allowed.

`--set KEY=VALUE` (on `mixup-sweep run`) is resolved by the first part of KEY:
  * a spec key (`name`, `metric`, `mode`, `resources.cpu`, `max_concurrent`, `max_failures`,
    `share_prefix`, `scheduler`, `optuna.n_trials`, ...) sets that spec key;
    `grid.KEY=[...]` replaces (or adds) one grid entry, `optuna.space.KEY={...}` one search dimension;
  * `trial.KEY` or a bare trial key (`seed`, `data.*`, `model.*`, `train.*`, `mixup.*`) sets the trial
    value. If that key is swept (in `grid` or `optuna.space`), the sweep over it is dropped: the user
    pinned it (e.g. `--set seed=0` runs one seed instead of the spec's three).

`grid` is one mapping (a cartesian product) or a list of mappings: the union of their products, like
scikit-learn's ParameterGrid (e.g. standard training once, plus Mixup under every label policy, without
running standard training once per policy). Identical points run once.

Grid x Optuna: Ray Tune refuses `tune.grid_search` next to a searcher that owns its space, so with an
`optuna` section the grid keys become categorical dimensions of the Optuna space: Optuna chooses among
the grid values (it does not run the full product); `optuna.n_trials` is the total number of trials.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mixup_core import (
    ConfigError,
    TrialConfig,
    bundled_names,
    find_yaml,
    flatten,
    format_validation_error,
    parse_override,
    read_yaml,
    set_dotted,
    validate_trial_config,
    validation_count,
)

from .metrics import EPOCH_METRICS, metric_mode
from .trial.context import trial_config_at, trial_dict_at

SPEC_DIR = Path(__file__).parent / "specs"

# Validating the full grid product is exact but costs ~50 us per point; beyond this, values are
# validated one key at a time only.
_MAX_PRODUCT_CHECK = 20_000
# The largest grid a sweep runs unless its spec raises `max_trials`: its size is computed from the
# grid's lists before anything is expanded, so a 10-million-point typo is refused at once.
DEFAULT_MAX_TRIALS = 100_000


Grid = dict[str, Annotated[list[Any], Field(min_length=1)]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchDimension(_Strict):
    """One dimension of the Optuna space."""

    type: Literal["float", "int", "categorical"]
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    choices: Optional[Annotated[list[Any], Field(min_length=1)]] = None


class OptunaSpec(_Strict):
    n_trials: int = Field(ge=1)
    space: Annotated[dict[str, SearchDimension], Field(min_length=1)]
    seed: Optional[int] = Field(None, ge=0)  # seeds Optuna's TPE sampler; null = the trial's seed


class ResourcesSpec(_Strict):
    cpu: float = Field(1.0, gt=0)  # per trial
    gpu: float = Field(0.0, ge=0)  # per trial; a fraction shares a GPU
    # Trials trained together in one process, on one device (mixup_core/packing.py): one Ray trial
    # per pack, holding pack x (cpu, gpu). 1 = every trial its own process; auto = as many as share
    # one GPU when packing is the faster way to share it (see `_auto_pack`), else 1.
    pack: Union[int, Literal["auto"]] = "auto"

    @field_validator("pack", mode="before")
    @classmethod
    def _pack(cls, v: Any) -> Any:
        if v == "auto" or (type(v) is int and v >= 1):
            return v
        raise ValueError("must be auto or a whole number >= 1")


class AshaSpec(_Strict):
    type: Literal["asha"]
    grace_period: int = Field(1, ge=1)  # epochs every trial gets before it can be stopped
    reduction_factor: float = Field(4.0, gt=1)
    max_t: Optional[int] = Field(None, ge=1)  # null = train.epochs


class SweepSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # an MLflow experiment and a directory
    trial: dict[str, Any]
    grid: Union[Grid, Annotated[list[Grid], Field(min_length=1)]] = Field(default_factory=dict)
    optuna: Optional[OptunaSpec] = None
    metric: str = "val_acc"
    mode: Literal["max", "min"] = "max"
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    max_concurrent: int = Field(1, ge=1)
    max_failures: int = Field(1, ge=0)  # restarts of a failed trial from its last checkpoint
    share_prefix: bool = True  # trials differing only in mixup.stop_epoch branch from one Mixup trunk
    # Ray gets a trial's result at most this often (always at checkpoints, ASHA rungs and the last
    # epoch); MLflow records every epoch regardless. Per-epoch reports cost a small trial more time
    # than its training; 0 = every epoch.
    report_interval_s: float = Field(1.0, ge=0)
    scheduler: Optional[AshaSpec] = None
    max_trials: int = Field(DEFAULT_MAX_TRIALS, ge=1)  # a grid above this is refused before it is expanded
    # The paper claim this sweep tests; `best` prints its verdict and figure (sweeps/best/claims.py).
    claim: Optional[Literal["decoupling", "rare_feature", "early_stop", "map"]] = None


SPEC_KEYS = [k for k in SweepSpec.model_fields if k != "trial"]


# ---------------------------------------------------------------------------------------------
# The validated sweep


@dataclass
class Sweep:
    """A validated spec plus what follows from it: the resolved base trial and the trials' space."""

    spec: SweepSpec
    base_trial: dict[str, Any]  # fully resolved trial configuration (defaults filled in)
    source: str
    notes: list[str] = field(default_factory=list)
    pack_auto: bool = False  # resources.pack was auto (resolved by `_auto_pack`); preflight may lower it
    # (key, fingerprint of a grid value) -> the value as the trial sees it after validation (1 -> 1.0 for
    # a float key): what tells equal grid points apart. Filled by `_check_sweep`.
    canonical: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)
    _points: Optional[list[dict[str, Any]]] = field(default=None, init=False, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def grids(self) -> list[dict[str, list[Any]]]:
        grid = self.spec.grid
        return list(grid) if isinstance(grid, list) else [grid]

    @property
    def grid_keys(self) -> list[str]:
        return list(dict.fromkeys(k for g in self.grids for k in g))

    def grid_values(self, key: str) -> list[Any]:
        return [v for g in self.grids for v in g.get(key, [])]

    @property
    def varying_keys(self) -> list[str]:
        keys = self.grid_keys
        if self.spec.optuna:
            keys += [k for k in self.spec.optuna.space if k not in keys]
        return keys

    def grid_size(self) -> int:
        """The number of grid points, from the lists' lengths alone (nothing expanded): exact for one
        grid (its lists hold distinct values, `_check_sweep`), an upper bound for a list of grids."""
        return sum(math.prod(len(v) for v in g.values()) for g in self.grids if g)

    def first_grid_point(self) -> dict[str, Any]:
        base = flatten(self.base_trial)
        grid = next((g for g in self.grids if g), {})
        return {k: grid[k][0] if k in grid else base[k] for k in self.grid_keys}

    def grid_points(self) -> list[dict[str, Any]]:
        """Each grid's cartesian product (first key varying slowest), concatenated; duplicates once
        (equal as the trial sees them: 1 and 1.0 of a float key are one point). Every point names every
        grid key: one a sub-grid leaves out has the trial's base value. Computed once."""
        if self._points is not None:
            return self._points
        base = flatten(self.base_trial)
        all_keys = self.grid_keys
        grids = [g for g in self.grids if g]
        points: list[dict[str, Any]] = []
        seen: set[str] = set()
        for grid in grids:
            keys = list(grid)
            for combo in itertools.product(*(grid[k] for k in keys)):
                chosen = dict(zip(keys, combo))
                point = {k: chosen[k] if k in chosen else base[k] for k in all_keys}
                if len(grids) > 1:  # one grid's lists hold distinct values: no duplicates to find
                    fingerprint = json.dumps([self.canonical.get((k, _fingerprint(v)), v) for k, v in point.items()],
                                             default=str)
                    if fingerprint in seen:
                        continue
                    seen.add(fingerprint)
                points.append(point)
        self._points = points
        return points

    def epochs_of(self, point: dict[str, Any]) -> int:
        """train.epochs of the trial at this grid point (without validating it again)."""
        return int(point.get("train.epochs", self.base_trial["train"]["epochs"]))

    @property
    def n_trials(self) -> int:
        if self.spec.optuna:
            return self.spec.optuna.n_trials
        return len(self.grid_points())

    @property
    def search_seed(self) -> int:
        seed = self.spec.optuna.seed if self.spec.optuna else None
        return int(self.base_trial["seed"]) if seed is None else seed

    def max_epochs(self) -> int:
        values = [self.base_trial["train"]["epochs"], *self.grid_values("train.epochs")]
        if self.spec.optuna and "train.epochs" in self.spec.optuna.space:
            values += _dimension_values(self.spec.optuna.space["train.epochs"])
        return int(max(v for v in values if v is not None))

    def trial_config(self, params: dict[str, Any]) -> TrialConfig:
        """The validated configuration of the trial with these values of the varying keys."""
        return trial_config_at(self.base_trial, params)

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec (overrides applied, trial defaults filled): what `resume` reloads."""
        data = self.spec.model_dump(mode="json", exclude_none=False)
        data["trial"] = copy.deepcopy(self.base_trial)
        return data

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Loading


def bundled_spec_names() -> list[str]:
    return bundled_names(SPEC_DIR)


def resolve_spec_path(name_or_path: str) -> Path:
    return find_yaml(name_or_path, SPEC_DIR, "spec")


def load_sweep(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    path = resolve_spec_path(name_or_path)
    try:
        raw = read_yaml(path)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"save the spec as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    return validate_sweep(raw, str(path), overrides)


def validate_sweep(raw: Any, source: str, overrides: list[str] | tuple[str, ...] = ()) -> Sweep:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with keys: trial, {', '.join(SPEC_KEYS)}")
    raw = copy.deepcopy(raw)
    notes = apply_overrides(raw, overrides)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {_format_error(err, raw)}") from None
    try:
        base = validate_trial_config(spec.trial, source="trial").to_dict()
        sweep = Sweep(spec=spec, base_trial=base, source=source, notes=notes)
        _check_sweep(sweep)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return sweep


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> list[str]:
    """Apply `--set` items to the raw spec (see the module docstring); returns notes for the user."""
    notes: list[str] = []
    given: dict[str, str] = {}
    for item in overrides:
        key, value = parse_override(item)
        head = key.split(".", 1)[0]
        same = key[len("trial."):] if head == "trial" else key
        if same in given:
            raise ConfigError(f"--set {same} is given twice ({given[same]!r} and {item!r}); give each key once")
        given[same] = item
        if key.startswith("grid."):
            if isinstance(raw.get("grid"), list):
                raise ConfigError(f"--set {item!r}: this spec's grid is a list of grids; "
                                  f"--set grid.KEY works on a single grid mapping (or replace it: --set 'grid=[...]')")
            grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
            grid[key[len("grid."):]] = value
            raw["grid"] = grid
        elif key.startswith("optuna.space."):
            optuna = raw.get("optuna") if isinstance(raw.get("optuna"), dict) else {}
            space = optuna.get("space") if isinstance(optuna.get("space"), dict) else {}
            space[key[len("optuna.space."):]] = value
            optuna["space"] = space
            raw["optuna"] = optuna
        elif head in SPEC_KEYS:
            _set_spec_key(raw, key, value)
        elif head == "trial" or head in TrialConfig.model_fields:
            trial_key = key[len("trial."):] if head == "trial" else key
            if not trial_key or trial_key == "trial":
                raise ConfigError(f"--set {item!r}: name a trial key, e.g. --set trial.mixup.alpha=0.5")
            if not isinstance(raw.get("trial"), dict):
                raw["trial"] = {}
            set_dotted(raw["trial"], trial_key, value)
            notes += _pin(raw, trial_key)
        else:
            raise ConfigError(
                f"--set {item!r}: '{head}' is neither a spec key ({', '.join(SPEC_KEYS)}) "
                f"nor a trial key ({', '.join(TrialConfig.model_fields)})"
            )
    return list(dict.fromkeys(notes))


def _set_spec_key(raw: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) > 1 and raw.get(parts[0]) is None:
        raw[parts[0]] = {}  # e.g. --set scheduler.type=asha on a spec with scheduler: null
    set_dotted(raw, key, value)


def _pin(raw: dict[str, Any], trial_key: str) -> list[str]:
    """A trial key set with --set is no longer swept."""
    notes = []
    grid = raw.get("grid")
    for sub in grid if isinstance(grid, list) else [grid]:
        if isinstance(sub, dict) and trial_key in sub:
            del sub[trial_key]
            notes.append(f"--set {trial_key} pins it: removed from grid")
    optuna = raw.get("optuna")
    space = optuna.get("space") if isinstance(optuna, dict) else None
    if isinstance(space, dict) and trial_key in space:
        del space[trial_key]
        notes.append(f"--set {trial_key} pins it: removed from optuna.space")
    return notes


# ---------------------------------------------------------------------------------------------
# Checks that need the trial configuration


def _check_sweep(sweep: Sweep) -> None:
    spec = sweep.spec
    if isinstance(spec.grid, list) and spec.optuna:
        raise ConfigError("grid: a list of grids cannot be combined with optuna; use one grid mapping")
    for key in sweep.grid_keys:
        _check_trial_key(key, f"grid.{key}")
    if spec.optuna:
        for key, dim in spec.optuna.space.items():
            _check_trial_key(key, f"optuna.space.{key}")
            if key in sweep.grid_keys:
                raise ConfigError(f"optuna.space.{key}: '{key}' is also in grid; sweep each key in one of them")
            _check_dimension(key, dim)

    # The grid's size from its lists, before anything is expanded.
    size = sweep.grid_size()
    if not spec.optuna and size > spec.max_trials:
        shape = " + ".join(" x ".join(str(len(v)) for v in g.values()) for g in sweep.grids if g)
        raise ConfigError(f"grid: {size:,} trials ({shape} values) is above max_trials ({spec.max_trials:,}); "
                          f"sweep fewer values, or raise max_trials (--set max_trials={size}) if you mean it")

    # Every value alone (each list's values distinct as the trial sees them), then every combination
    # (cross-field rules such as stop_epoch <= epochs).
    for grid in sweep.grids:
        for key, values in grid.items():
            seen: dict[str, tuple[int, Any]] = {}
            for i, value in enumerate(values, 1):
                cfg = _validate_point(sweep, {key: value}, f"grid.{key}")
                canonical = _value_at(cfg, key)
                same = seen.get(_fingerprint(canonical), _MISSING)
                if same is not _MISSING:
                    raise ConfigError(
                        f"grid.{key}: values #{same[0]} ({same[1]!r}) and #{i} ({value!r}) are the same value "
                        f"({canonical!r}) for the trial; list each value once (they would run as two trials of "
                        f"one configuration, and `best` would count their seeds twice)")
                seen[_fingerprint(canonical)] = (i, value)
                sweep.canonical[(key, _fingerprint(value))] = canonical
    if spec.optuna:
        points = [sweep.first_grid_point()]
        configs = [_validate_point(sweep, points[0], "grid")]
    else:
        points = sweep.grid_points()
        configs = [_validate_point(sweep, p, "grid") for p in (points if len(points) <= _MAX_PRODUCT_CHECK else points[:1])]
    if spec.optuna:
        # The space's corners and choices, each combined with the first grid point.
        extra = []
        for key, dim in spec.optuna.space.items():
            for value in _dimension_values(dim):
                extra.append(_validate_point(sweep, {**points[0], key: value}, f"optuna.space.{key}"))
        configs += extra

    for point, cfg in data_configs(sweep):
        n = train_examples(cfg)
        if n is not None:
            check_validation_split(cfg, n, point)
    _check_metric(spec, configs)
    _check_resources(spec, configs)
    if spec.resources.pack == "auto":
        sweep.pack_auto = True
        spec.resources.pack, note = _auto_pack(sweep, configs)
        if note:
            sweep.notes.append(note)
    refusal = _pack_refusal(sweep, spec.resources.pack) if spec.resources.pack > 1 else None
    if refusal:
        raise ConfigError(refusal)
    if spec.scheduler is not None:
        _check_asha(sweep, spec.scheduler, configs)


_MISSING = object()

# Training images of the torchvision datasets (before the validation split).
CIFAR_TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000}


def held_out_count(val_size: Union[int, float], n: int) -> Optional[int]:
    """Examples a trial holds out for validation from n (the trial's own rule, mixup_core's
    validation_count); None when that leaves no training example (the trial would refuse to start)."""
    try:
        return validation_count(val_size, n)
    except ConfigError:
        return None


def train_examples(cfg: TrialConfig) -> Optional[int]:
    """Training examples before the split, when the configuration alone says (npz: the file does)."""
    if cfg.data.name == "feature_noise":
        return cfg.data.n_train
    return CIFAR_TRAIN_IMAGES.get(cfg.data.name)


def check_validation_split(cfg: TrialConfig, n: int, point: dict[str, Any], where: str = "") -> None:
    if held_out_count(cfg.data.val_size, n) is None:
        shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
        trial = f" (the trial with {shown})" if shown else ""
        raise ConfigError(f"{where or 'data.val_size'}: {cfg.data.val_size!r} leaves no training examples out of "
                          f"{n}{trial}; use a fraction below 1 or a count below {n}")


def data_configs(sweep: "Sweep") -> list[tuple[dict[str, Any], TrialConfig]]:
    """One trial configuration for each distinct `data` section the sweep can produce (its data.* grid
    values combined, the rest of the trial as in the first grid point): what the data checks need,
    without expanding the whole grid."""
    out: dict[str, tuple[dict[str, Any], TrialConfig]] = {}
    first = sweep.first_grid_point()
    choices: list[dict[str, list[Any]]] = [{k: v for k, v in g.items() if k.startswith("data.")} for g in sweep.grids]
    if sweep.spec.optuna:
        extra = {k: _dimension_values(d) for k, d in sweep.spec.optuna.space.items() if k.startswith("data.")}
        choices = [{**c, **extra} for c in choices]
    for grid in choices or [{}]:
        keys = list(grid)
        for combo in itertools.product(*(grid[k] for k in keys)):
            point = {**first, **dict(zip(keys, combo))}
            try:
                cfg = sweep.trial_config(point)
            except ConfigError:
                continue  # not a point of the sweep (the grid's own points are validated elsewhere)
            out.setdefault(json.dumps(cfg.data.model_dump(mode="json"), sort_keys=True),
                           (dict(zip(keys, combo)), cfg))
    return list(out.values())


def _fingerprint(value: Any) -> str:
    """Equal for values the trial sees as equal (after validation); the type stays in it, so the bool
    True and the int 1 differ."""
    return f"{type(value).__name__}:{json.dumps(value, sort_keys=True, default=str)}"


def _value_at(cfg: TrialConfig, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node.model_dump(mode="python") if isinstance(node, BaseModel) else node


def _trial_field(key: str):
    """The pydantic field of a dotted trial key, or a ConfigError naming what is allowed."""
    cls: Any = TrialConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        fields = cls.model_fields
        if part not in fields:
            scope = f" in '{where}'" if where else ""
            raise ConfigError(f"unknown trial key '{key}' (allowed{scope}: {', '.join(fields)})")
        info = fields[part]
        ann = info.annotation
        is_section = isinstance(ann, type) and issubclass(ann, BaseModel)
        if i == len(parts) - 1:
            if is_section:
                raise ConfigError(f"'{key}' is a section, not a value (sweep one of: "
                                  f"{', '.join(key + '.' + k for k in ann.model_fields)})")
            return info
        if not is_section:
            raise ConfigError(f"unknown trial key '{key}': '{'.'.join(parts[:i + 1])}' is a value, not a section")
        cls = ann
    raise AssertionError("unreachable")


def _check_trial_key(key: str, where: str) -> None:
    try:
        _trial_field(key)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def _is_int_field(key: str) -> bool:
    ann = _trial_field(key).annotation
    args = typing.get_args(ann) if typing.get_origin(ann) is Union else (ann,)
    return {_unwrap(a) for a in args if a is not type(None)} == {int}  # Int is Annotated[int, ...]


def _check_dimension(key: str, dim: SearchDimension) -> None:
    where = f"optuna.space.{key}"
    if dim.type == "categorical":
        if dim.choices is None:
            raise ConfigError(f"{where}: type categorical needs 'choices' (a non-empty list)")
        if dim.low is not None or dim.high is not None or dim.log:
            raise ConfigError(f"{where}: type categorical takes only 'choices' (not low/high/log)")
        bad = [c for c in dim.choices if not (c is None or isinstance(c, (bool, int, float, str)))]
        if bad:
            raise ConfigError(f"{where}: choices must be numbers, strings, booleans or null (got {bad[0]!r})")
        return
    if dim.choices is not None:
        raise ConfigError(f"{where}: 'choices' is for type categorical; type {dim.type} takes low, high, log")
    if dim.low is None or dim.high is None:
        raise ConfigError(f"{where}: type {dim.type} needs 'low' and 'high'")
    if not dim.low < dim.high:
        raise ConfigError(f"{where}: low ({dim.low:g}) must be below high ({dim.high:g})")
    if dim.log and dim.low <= 0:
        raise ConfigError(f"{where}: log: true needs low > 0 (got {dim.low:g})")
    if dim.type == "int" and not (float(dim.low).is_integer() and float(dim.high).is_integer()):
        raise ConfigError(f"{where}: type int needs whole-number low and high (got {dim.low:g}, {dim.high:g})")
    if dim.type == "float" and _is_int_field(key):
        raise ConfigError(f"{where}: '{key}' is an integer key; use type: int (or categorical)")


def _dimension_values(dim: SearchDimension) -> list[Any]:
    if dim.type == "categorical":
        return list(dim.choices or [])
    if dim.type == "int":
        return [int(dim.low), int(dim.high)]
    return [float(dim.low), float(dim.high)]


def _validate_point(sweep: Sweep, point: dict[str, Any], where: str) -> TrialConfig:
    try:
        return TrialConfig.model_validate(trial_dict_at(sweep.base_trial, point))
    except ValidationError as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in point.items())
        detail = format_validation_error(err, TrialConfig)
        raise ConfigError(f"{where}: the trial with {shown} is invalid: {detail}") from None


def metric_available(metric: str, cfg: TrialConfig) -> Optional[str]:
    """None when trials with this config report `metric`, else why not."""
    need = EPOCH_METRICS[metric]
    if need == "validation" and cfg.data.val_size == 0:
        return f"{metric} needs a validation split, but data.val_size=0 (set data.val_size > 0, or use a test_/train_ metric)"
    if need == "feature_noise" and cfg.data.name != "feature_noise":
        return f"{metric} exists only on data.name=feature_noise (this sweep uses {cfg.data.name})"
    return None


def _check_metric(spec: SweepSpec, configs: list[TrialConfig]) -> None:
    if spec.metric not in EPOCH_METRICS:
        raise ConfigError(f"metric: {spec.metric!r} is not a metric trials report (allowed: {', '.join(EPOCH_METRICS)})")
    for cfg in configs:
        problem = metric_available(spec.metric, cfg)
        if problem:
            raise ConfigError(f"metric: {problem}")
    wanted = metric_mode(spec.metric)
    if spec.mode != wanted:
        raise ConfigError(f"mode: {spec.mode} would select the worst {spec.metric}; use mode: {wanted}")


def _check_resources(spec: SweepSpec, configs: list[TrialConfig]) -> None:
    gpu = spec.resources.gpu
    if gpu > 1 and not float(gpu).is_integer():
        raise ConfigError(f"resources.gpu: above 1 it must be a whole number of GPUs (got {gpu:g}); fractions only below 1")
    if gpu == 0 and any(c.train.device == "cuda" for c in configs):
        raise ConfigError("resources.gpu: 0, but trial train.device=cuda; give trials a GPU (resources.gpu > 0) or use train.device: auto")


def _auto_pack(sweep: Sweep, configs: list[TrialConfig]) -> tuple[int, Optional[str]]:
    """`resources.pack: auto`: N when trials take 1/N of a GPU and their steps are CUDA graphs, else 1.

    Why: N processes on one GPU are time-sliced (no MPS), so they only fill each other's gaps. An
    eager step is launch-bound and leaves the GPU idle most of the time: N processes, N host threads,
    fill it (two eager ResNet-18 trials sharing an H100: 21.4k images/s against 10-11k alone), while
    one packed process launches N models' kernels from one thread. A graphed step leaves no gaps to
    fill, but one graph replay can run N models side by side on N streams (mixup_core/packing.py).
    Where packing is refused (`_pack_refusal`) auto means 1: it never turns a valid spec into an
    invalid one. The resolved number is what the sweep stores, so `resume` keeps it."""
    spec = sweep.spec
    gpu = spec.resources.gpu
    share = int(1 / gpu + 1e-9) if 0 < gpu < 1 else 1  # trials per GPU
    size = min(share, spec.max_concurrent, sweep.n_trials)
    if (size < 2 or _pack_refusal(sweep, size) is not None
            or not all(c.train.device in ("auto", "cuda") and c.graphed_on_cuda for c in configs)):
        return 1, None
    return size, (f"resources.pack: auto trains {size} trials per process: CUDA-graphed trials at resources.gpu: "
                  f"{gpu:g} run side by side in one process, while {size} processes on a GPU take turns; "
                  f"set resources.pack: 1 for one process per trial")


def _pack_refusal(sweep: Sweep, pack: int) -> Optional[str]:
    """Why this sweep cannot train its trials in packs of `pack` (one Ray trial, one process each), or None."""
    spec = sweep.spec
    gpu = spec.resources.gpu
    where = f"resources.pack: {pack}"
    if spec.optuna is not None:
        return f"{where} needs a grid sweep: Optuna suggests one trial at a time (allowed with optuna: pack 1)"
    if spec.scheduler is not None:
        return (f"{where}: ASHA stops trials one by one, but a pack is one Ray trial "
                f"(allowed with a scheduler: pack 1; or drop the scheduler)")
    if spec.share_prefix and "mixup.stop_epoch" in sweep.grid_keys:
        return (f"{where}: packed trials do not share Mixup prefixes; set share_prefix: false "
                f"(prefix sharing saves epochs, packing fills a GPU: pick one)")
    if gpu * pack > 1:
        return (f"{where} trials at resources.gpu: {gpu:g} each need {gpu * pack:g} GPUs, but a pack "
                f"trains on one device (allowed: pack x gpu <= 1, e.g. gpu: {1 / pack:g})")
    if spec.max_concurrent < pack:
        return (f"max_concurrent: {spec.max_concurrent} is below {where} (a pack trains {pack} trials at "
                f"once); allowed: max_concurrent >= {pack}")
    return None


def _stop_epochs(sweep: Sweep) -> list[int]:
    """Every integer mixup.stop_epoch the sweep can produce (null = Mixup throughout, never switches)."""
    values: list[Any] = [sweep.base_trial["mixup"]["stop_epoch"]]
    values += sweep.grid_values("mixup.stop_epoch")
    if sweep.spec.optuna and "mixup.stop_epoch" in sweep.spec.optuna.space:
        values += _dimension_values(sweep.spec.optuna.space["mixup.stop_epoch"])
    return [int(v) for v in values if v is not None]


def _check_asha(sweep: Sweep, asha: AshaSpec, configs: list[TrialConfig]) -> None:
    epochs = max(c.train.epochs for c in configs)
    max_t = asha.max_t if asha.max_t is not None else epochs
    if max_t > epochs:
        raise ConfigError(f"scheduler.max_t: {max_t} is beyond train.epochs={epochs} (allowed: 1..{epochs})")
    if asha.grace_period > max_t:
        raise ConfigError(f"scheduler.grace_period: {asha.grace_period} is beyond max_t={max_t} (allowed: 1..{max_t})")
    stops = _stop_epochs(sweep)
    if stops and asha.grace_period < max(stops):
        raise ConfigError(
            f"scheduler.grace_period: {asha.grace_period} is shorter than the largest mixup.stop_epoch "
            f"({max(stops)}): ASHA would compare trials while some still train with Mixup; "
            f"allowed: grace_period >= {max(stops)}"
        )


# ---------------------------------------------------------------------------------------------
# Error formatting for the spec's own keys


def _unwrap(ann: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X."""
    while typing.get_origin(ann) in (Union, Annotated):
        ann = [a for a in typing.get_args(ann) if a is not type(None)][0]
    return ann


def _model_at(loc: tuple) -> Any:
    """The pydantic model that holds the key at `loc[-1]`, or None when it is not a model."""
    cls: Any = SweepSpec
    dict_value: Any = None
    for part in loc[:-1]:
        if dict_value is not None:  # this part is a key of grid / optuna.space
            cls, dict_value = dict_value, None
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        ann = _unwrap(cls.model_fields[part].annotation)
        if typing.get_origin(ann) is dict:
            dict_value = _unwrap(typing.get_args(ann)[1])
            cls = None
        else:
            cls = ann
    return cls


def _format_error(err: ValidationError, raw: dict[str, Any]) -> str:
    errors = err.errors()
    # `grid` is a mapping or a list of mappings: report the errors of the form the user wrote.
    branch = "list[" if isinstance(raw.get("grid"), list) else "dict["
    errors = [e for e in errors if not (e["loc"][:1] == ("grid",) and len(e["loc"]) > 1
                                        and isinstance(e["loc"][1], str) and e["loc"][1].startswith(("list[", "dict["))
                                        and not e["loc"][1].startswith(branch))] or errors
    e = errors[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and "[" in p))
    # Dict keys of grid / optuna.space are dotted trial keys: keep them whole.
    key = ".".join(str(p) for p in loc)
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    if e["type"] == "extra_forbidden":
        owner = _model_at(loc)
        allowed = ", ".join(owner.model_fields) if isinstance(owner, type) and issubclass(owner, BaseModel) else "?"
        return f"unknown key '{key}' (allowed here: {allowed}){more}"
    if e["type"] == "missing":
        return f"{key}: required key is missing{more}"
    if e["type"] == "literal_error":
        expected = e.get("ctx", {}).get("expected", "")
        return f"{key}: {e.get('input')!r} is not allowed (allowed: {expected}){more}"
    if e["type"] == "string_pattern_mismatch" and loc == ("name",):
        return f"name: {e.get('input')!r} is not allowed (letters, digits, '_', '.', '-'; up to 100 characters){more}"
    msg = str(e["msg"]).removeprefix("Value error, ")
    got = e.get("input")
    got_s = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{key}: {msg}{got_s}{more}"
