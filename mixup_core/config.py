"""The trial configuration: one validated pydantic model, loaded from YAML plus `--set` overrides.

Validation happens here, at the edge, so that everything downstream can trust its inputs. Every error
becomes a `ConfigError` with a one-line message that names the dotted key and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .named_yaml import find_yaml

CONFIG_DIR = Path(__file__).parent / "configs"


def _not_a_bool(v: Any) -> Any:
    # pydantic reads True as 1 (and 1.0): `seed: true` or `train.epochs: yes` would train something
    # nobody asked for.
    if isinstance(v, bool):
        raise ValueError("must be a number, not a boolean")
    return v


# Numbers that refuse booleans. Floats also refuse inf and nan, through `allow_inf_nan` below.
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]

# The largest seed: stream seeds (step.stream_seed) multiply it by ~1e6 and must fit torch's 64-bit seed.
MAX_SEED = 2**32 - 1


def validation_count(val_size: int | float, n: int) -> int:
    """Examples `data.val_size` (a fraction, or a count) holds out of n for validation; a split that
    leaves no training example is refused. Here, torch-free, so the driver checks it with the trial's rule."""
    count = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if count >= n:
        raise ConfigError(f"data.val_size={val_size} leaves no training examples out of {n}; "
                          f"use a fraction below 1 or a count below {n}")
    return count


class _Strict(BaseModel):
    # allow_inf_nan=False: an infinite or NaN float (`mixup.alpha=inf`, `train.lr=nan`) passes every
    # range check (`gt=0` holds for inf) and only shows up as a diverged or silently broken trial.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class AugmentConfig(_Strict):
    """Random crop with `crop_pad` pixels of zero padding, and random horizontal flips (augment.py)."""

    crop_pad: Int = Field(0, ge=0)
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.crop_pad > 0 or self.flip


IMAGE_DATA = ("cifar10", "cifar100", "npz")
_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off"}  # what YAML 1.1 and pydantic read as booleans


def default_crop_pad(height: int, width: int) -> int:
    """The crop padding `data.augment: true` picks: 1/8 of the image side, rounded half up (CIFAR's
    4 pixels at 32x32, 1 at 8x8): a fixed 4 pixels shifts an 8x8 digit half off its canvas."""
    return int(min(height, width) / 8 + 0.5)


def resolve_augment(choice: Union[bool, str, AugmentConfig], data_name: str,
                    image_size: Optional[tuple[int, int]]) -> Union[bool, AugmentConfig]:
    """What `data.augment` means for this data: False (none) or the AugmentConfig applied.

    auto (the default): CIFAR's standard crop (pad 4) + flip; none on npz data (a user's images may
    be digits, medical scans, text, where flips or shifts change the label); none on feature_noise.
    true: a crop scaled to the image size (`default_crop_pad`) + flip, on any image data.
    false: none. {crop_pad: N, flip: bool}: exactly that. `image_size` (H, W) is needed for true and
    to check an explicit crop_pad; None when not known (the choice is then returned unchecked).
    """
    if choice is False or data_name not in IMAGE_DATA or (choice == "auto" and data_name == "npz"):
        return False
    if isinstance(choice, AugmentConfig):
        if image_size is not None and choice.crop_pad >= min(image_size):
            raise ConfigError(f"data.augment.crop_pad={choice.crop_pad} must be below the image size "
                              f"{image_size[0]}x{image_size[1]}")
        return choice if choice.active else False
    if image_size is None:
        raise ConfigError("data.augment: the image size is needed to resolve it")  # a caller's bug
    if choice == "auto":  # CIFAR
        return AugmentConfig(crop_pad=4, flip=True)
    return AugmentConfig(crop_pad=default_crop_pad(*image_size), flip=True)


class DataConfig(_Strict):
    name: Literal["feature_noise", "cifar10", "cifar100", "npz"] = "feature_noise"
    root: str = "./data"
    download: bool = False
    # Fraction of train (0 <= f < 1) or a count (int >= 1) held out for selection; 0 = no validation.
    val_size: Union[int, float] = 0.1
    # Image data: auto | true | false | {crop_pad: N, flip: bool}, see resolve_augment. The trial's
    # config.yaml holds what was applied (false or the mapping).
    augment: Union[bool, Literal["auto"], AugmentConfig] = "auto"
    # feature_noise data-model parameters (see mixup_core/data/feature_noise.py for the model).
    num_classes: Int = Field(2, ge=2)
    # Defaults: the regime where the paper's effect appears (docs/science.md); val_size 0.5 in the
    # bundled config gives 300 train / 300 validation examples.
    n_train: Int = Field(600, ge=2)  # before the validation split
    n_test: Int = Field(2000, ge=2)
    dim: Int = Field(400, ge=2)
    patches: Int = Field(3, ge=2)
    rare_fraction: Float = Field(0.05, ge=0.0, le=1.0)
    noise_std: Float = Field(0.2, ge=0.0)
    feature_noise: Float = Field(0.05, ge=0.0)
    feature_noise_kind: Literal["common", "rare", "same"] = "common"  # which feature of another class
    shuffle_patches: bool = False  # False: feature, feature noise, noise patches in that order
    rare_strength: Float = Field(1.0, gt=0.0)
    common_strength: Float = Field(1.0, gt=0.0)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment(cls, v: Any) -> Any:
        # One error for one mistake: left to the bool | "auto" | mapping union, a bad mapping would
        # also be reported as "not a valid boolean" and "not 'auto'".
        if isinstance(v, dict):
            try:
                return AugmentConfig.model_validate(v)
            except ValidationError as err:
                raise ValueError(format_validation_error(err, AugmentConfig)) from None
        if isinstance(v, (bool, AugmentConfig)) or v == "auto" or str(v).lower() in _BOOL_WORDS:
            return v
        raise ValueError("allowed: auto, true, false, or {crop_pad: N, flip: true | false}")

    @field_validator("val_size", mode="before")
    @classmethod
    def _val_size_is_a_number(cls, v: Any) -> Any:
        # Before the int | float union, which would report each of its branches.
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError("must be a fraction in [0, 1) or a count >= 0")
        return v

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: Union[int, float]) -> Union[int, float]:
        if isinstance(v, float) and not (0.0 <= v < 1.0):
            raise ValueError("a fraction must be in [0, 1); use an integer for a count")
        if isinstance(v, int) and v < 0:
            raise ValueError("a count must be >= 0")
        return v


class ModelConfig(_Strict):
    name: Literal["two_layer_cnn", "resnet18", "preact_resnet18"] = "two_layer_cnn"
    # two_layer_cnn: filters per class (second layer fixed to 1/width) and the smoothed ReLU
    # sigma(z) = 0 for z <= 0, z^q / (q rho^(q-1)) for 0 < z <= rho, z - rho (1 - 1/q) beyond.
    width: Int = Field(30, ge=1)
    activation_power: Float = Field(3.0, ge=1.0)  # q
    activation_threshold: Float = Field(1.0, gt=0.0)  # rho
    init_std: Float = Field(0.05, gt=0.0)


class TrainConfig(_Strict):
    epochs: Int = Field(200, ge=1)
    batch_size: Int = Field(128, ge=1)
    eval_batch_size: Int = Field(1024, ge=1)
    lr: Float = Field(0.1, gt=0.0, lt=3.0e38)  # must fit in float32
    momentum: Float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: Float = Field(5.0e-4, ge=0.0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[Float] = Field(default_factory=lambda: [0.5, 0.75])  # step: epochs, or fractions of epochs if < 1
    gamma: Float = Field(0.1, gt=0.0, le=1.0)  # step: lr multiplier at each milestone
    warmup_epochs: Int = Field(0, ge=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Replay each training step as one CUDA graph (auto: on CUDA for the ResNets; see graphed_step.py).
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    # Seconds between checkpoints (0 = every epoch). The last epoch, keep_epochs and epochs a runner
    # asks for always get one; a resume replays at most this much work, with identical metrics.
    checkpoint_interval_s: Float = Field(10.0, ge=0.0)
    keep_checkpoints: Int = Field(1, ge=1)  # most recent checkpoints kept (plus keep_epochs)
    keep_epochs: list[Int] = Field(default_factory=list)  # epochs whose checkpoint is always kept

    @field_validator("cuda_graphs", mode="before")
    @classmethod
    def _cuda_graphs(cls, v: Any) -> Any:
        # YAML reads a bare on/off as true/false; take them as the words they were.
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, v: list[float]) -> list[float]:
        if any((not math.isfinite(m)) or m <= 0 for m in v):
            raise ValueError("milestones must be positive epochs (or fractions < 1 of the epochs)")
        return v


class MixupConfig(_Strict):
    alpha: Float = Field(1.0, gt=0.0)
    stop_epoch: Union[Int, None] = Field(None, ge=0)
    label_policy: Literal["same", "independent", "threshold", "power", "constant"] = "same"
    label_alpha: Float = Field(1.0, gt=0.0)
    label_power: Float = Field(2.0, gt=0.0)
    label_value: Float = Field(0.5, ge=0.0, le=1.0)
    per_sample: bool = False
    # The paper writes lambda in [0.5, 1] (the larger weight on the first example): fold = max(l, 1-l).
    fold: bool = False


# Models whose step is worth graphing by default (launch-bound on a GPU); `on` graphs any model.
GRAPHED_MODELS = frozenset({"resnet18", "preact_resnet18"})


class TrialConfig(_Strict):
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    mixup: MixupConfig = Field(default_factory=MixupConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "TrialConfig":
        if self.mixup.stop_epoch is not None and self.mixup.stop_epoch > self.train.epochs:
            raise ValueError(
                f"mixup.stop_epoch={self.mixup.stop_epoch} is beyond train.epochs={self.train.epochs}: "
                f"allowed are 0..{self.train.epochs} or null (Mixup for the whole run)"
            )
        if self.model.name == "two_layer_cnn" and self.data.name != "feature_noise":
            raise ValueError("model.name=two_layer_cnn needs data.name=feature_noise (it takes patch inputs)")
        if self.model.name != "two_layer_cnn" and self.data.name == "feature_noise":
            raise ValueError(
                f"data.name=feature_noise needs model.name=two_layer_cnn, not {self.model.name!r}"
            )
        augment = self.data.augment
        if self.data.name == "feature_noise" and isinstance(augment, AugmentConfig) and augment.active:
            raise ValueError("data.augment crops and flips images; data.name=feature_noise has none "
                             "(allowed: false, or image data: cifar10, cifar100, npz)")
        bad = [e for e in self.train.keep_epochs if not (1 <= e <= self.train.epochs)]
        if bad:
            raise ValueError(f"train.keep_epochs {bad} outside 1..{self.train.epochs}")
        return self

    @property
    def graphed_on_cuda(self) -> bool:
        """Whether this trial's step is a CUDA graph when it runs on CUDA (graphed_step.py). Here, not
        there, so that a planner that never imports torch (the sweep driver) can decide by it."""
        choice = self.train.cuda_graphs
        return choice == "on" or (choice == "auto" and self.model.name in GRAPHED_MODELS)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ---------------------------------------------------------------------------------------------
# What a resumed trial may change

# The keys `mixup-train --resume` accepts with a new value: where and how the same computation runs
# and what is kept of it. Every other key (seed, data.*, model.*, mixup.*, the optimiser, schedule
# and precision, train.epochs, which the schedule depends on) changes what is trained: continuing a
# checkpoint under it would give a trial that no configuration describes. An allowlist, so that a
# key added later is refused until someone decides otherwise.
#   data.download: only whether missing files may be fetched
#   train.device, train.cuda_graphs: the same computation elsewhere (a graph replays the eager step)
#   train.eval_batch_size: evaluation only (batches of the model in eval mode)
#   train.checkpoint_interval_s, keep_checkpoints, keep_epochs: which checkpoints exist (never the metrics)
RESUME_MAY_CHANGE = frozenset({
    "data.download",
    "train.device",
    "train.cuda_graphs",
    "train.eval_batch_size",
    "train.checkpoint_interval_s",
    "train.keep_checkpoints",
    "train.keep_epochs",
})


def changes_refused_on_resume(saved: TrialConfig, requested: TrialConfig) -> list[tuple[str, Any, Any]]:
    """(key, saved value, requested value) for every key that differs and is not RESUME_MAY_CHANGE.
    Both configurations should have data.augment resolved (resolve_augment) to compare what is applied."""

    def flat(cfg: TrialConfig) -> dict[str, Any]:
        tree = cfg.to_dict()
        tree["data"]["augment"] = _augment_text(cfg.data.augment)  # one key, not one per field
        return flatten(tree)

    old, new = flat(saved), flat(requested)
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if key not in RESUME_MAY_CHANGE and old.get(key) != new.get(key)]


def _augment_text(augment: Union[bool, str, AugmentConfig]) -> Any:
    if isinstance(augment, AugmentConfig):
        return f"{{crop_pad: {augment.crop_pad}, flip: {str(augment.flip).lower()}}}"
    return augment


# ---------------------------------------------------------------------------------------------
# Loading, overrides and error formatting


def bundled_config_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names allowed at `loc` (the location of an unknown key), for the error message."""
    cls: Any = model
    for part in loc[:-1]:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return []
        cls = field.annotation
    return list(cls.model_fields)


def format_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """One line per problem (normally one): 'key: what is wrong (what is allowed)'."""
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = prefix + ".".join(str(p) for p in loc)
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc)
            lines.append(f"unknown key '{key}' (allowed here: {', '.join(allowed)})")
        elif e["type"] == "value_error" and not loc:
            lines.append(str(e["msg"]).removeprefix("Value error, "))
        else:
            msg = str(e["msg"]).removeprefix("Value error, ")
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"{key}: {msg}{got_s}" if key else f"{msg}{got_s}")
    return "; ".join(lines[:3]) + (f"; and {len(lines) - 3} more" if len(lines) > 3 else "")


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', value parsed as YAML, so numbers, null and lists work)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set mixup.alpha=0.4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty; expected KEY=VALUE")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""
    except _DuplicateKey as e:
        raise ConfigError(f"--set {key}: duplicate key '{e.key}' in the value; each key may appear once") from None
    except yaml.YAMLError:
        value = raw
    return key, value


def parse_overrides(items: list[str] | tuple[str, ...]) -> list[tuple[str, Any]]:
    """Every `--set` item parsed; a key given twice is refused (which one should win is a guess)."""
    parsed: list[tuple[str, Any]] = []
    first: dict[str, str] = {}
    for item in items:
        key, value = parse_override(item)
        if key in first:
            raise ConfigError(f"--set {key} is given twice ({first[key]!r} and {item!r}); give each key once")
        first[key] = item
        parsed.append((key, value))
    return parsed


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set tree['a']['b'] = value for key 'a.b', creating sections as needed (validation comes later)."""
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists stay values."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def validate_trial_config(raw: dict[str, Any], source: str = "config") -> TrialConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (seed, data, model, train, mixup)")
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {format_validation_error(err, TrialConfig)}") from None


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first_line: int):
        super().__init__(key)
        self.key, self.line, self.first_line = key, line, first_line


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated within one mapping: plain PyYAML keeps the last
    value silently, so `lr: 0.1` ... `lr: 0.01` would train with whichever came second."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by design
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in seen:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
                seen[key] = key_node.start_mark.line + 1
            except TypeError:  # an unhashable key: SafeLoader reports it
                break
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> Any:
    """The one YAML document in `path`, or a one-line ConfigError: missing, unreadable, a folder, not
    UTF-8 text, empty, not valid YAML, or a key repeated within a mapping."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a YAML file")
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          f"a config must be a YAML text file") from None
    except OSError as e:  # permission denied, an I/O error, ...
        raise ConfigError(f"{path}: cannot read it ({e.strerror or type(e).__name__})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ConfigError(f"{path}: duplicate key '{e.key}' at line {e.line} (first at line {e.first_line}); "
                          f"each key may appear once in a mapping") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if data is None:
        raise ConfigError(f"{path}: is empty (no YAML document, or only comments); it must hold a mapping")
    return data


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a bundled config (see `bundled_config_names()`)."""
    return find_yaml(name_or_path, CONFIG_DIR, "config")


def load_trial_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> TrialConfig:
    path = resolve_config_path(name_or_path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (seed, data, model, train, mixup)")
    for key, value in parse_overrides(overrides):
        set_dotted(raw, key, value)
    return validate_trial_config(raw, source=str(path))


def dump_yaml(cfg: TrialConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
