"""The trial configuration: one validated pydantic model, loaded from YAML plus `--set` overrides.

Validation happens here, at the edge, so that everything downstream can trust its inputs. Every error
becomes a `ConfigError` with a one-line message that names the dotted key and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .named_yaml import find_yaml

CONFIG_DIR = Path(__file__).parent / "configs"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    name: Literal["feature_noise", "cifar10", "cifar100", "npz"] = "feature_noise"
    root: str = "./data"
    download: bool = False
    # Fraction of train (0 <= f < 1) or a count (int >= 1) held out for selection; 0 = no validation.
    val_size: Union[int, float] = 0.1
    augment: bool = True  # cifar/npz images: random crop (pad 4) + horizontal flip, batched on device
    # feature_noise data-model parameters (see mixup_core/data/feature_noise.py for the model).
    num_classes: int = Field(2, ge=2)
    # Defaults: the regime where the paper's effect appears (docs/science.md); val_size 0.5 in the
    # bundled config gives 300 train / 300 validation examples.
    n_train: int = Field(600, ge=2)  # before the validation split
    n_test: int = Field(2000, ge=2)
    dim: int = Field(400, ge=2)
    patches: int = Field(3, ge=2)
    rare_fraction: float = Field(0.05, ge=0.0, le=1.0)
    noise_std: float = Field(0.2, ge=0.0)
    feature_noise: float = Field(0.05, ge=0.0)
    feature_noise_kind: Literal["common", "rare", "same"] = "common"  # which feature of another class
    shuffle_patches: bool = False  # False: feature, feature noise, noise patches in that order
    rare_strength: float = Field(1.0, gt=0.0)
    common_strength: float = Field(1.0, gt=0.0)

    @field_validator("val_size")
    @classmethod
    def _val_size(cls, v: Union[int, float]) -> Union[int, float]:
        if isinstance(v, bool):
            raise ValueError("must be a fraction in [0, 1) or a count >= 0")
        if isinstance(v, float) and not (0.0 <= v < 1.0):
            raise ValueError("a fraction must be in [0, 1); use an integer for a count")
        if isinstance(v, int) and v < 0:
            raise ValueError("a count must be >= 0")
        return v


class ModelConfig(_Strict):
    name: Literal["two_layer_cnn", "resnet18", "preact_resnet18"] = "two_layer_cnn"
    # two_layer_cnn: filters per class (second layer fixed to 1/width) and the smoothed ReLU
    # sigma(z) = 0 for z <= 0, z^q / (q rho^(q-1)) for 0 < z <= rho, z - rho (1 - 1/q) beyond.
    width: int = Field(30, ge=1)
    activation_power: float = Field(3.0, ge=1.0)  # q
    activation_threshold: float = Field(1.0, gt=0.0)  # rho
    init_std: float = Field(0.05, gt=0.0)


class TrainConfig(_Strict):
    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    lr: float = Field(0.1, gt=0.0, lt=3.0e38)  # must fit in float32
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5.0e-4, ge=0.0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])  # step: epochs, or fractions of epochs if < 1
    gamma: float = Field(0.1, gt=0.0, le=1.0)  # step: lr multiplier at each milestone
    warmup_epochs: int = Field(0, ge=0)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Replay each training step as one CUDA graph (auto: on CUDA for the ResNets; see graphed_step.py).
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    # Seconds between checkpoints (0 = every epoch). The last epoch, keep_epochs and epochs a runner
    # asks for always get one; a resume replays at most this much work, with identical metrics.
    checkpoint_interval_s: float = Field(10.0, ge=0.0)
    keep_checkpoints: int = Field(1, ge=1)  # most recent checkpoints kept (plus keep_epochs)
    keep_epochs: list[int] = Field(default_factory=list)  # epochs whose checkpoint is always kept

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
    alpha: float = Field(1.0, gt=0.0)
    stop_epoch: Union[int, None] = Field(None, ge=0)
    label_policy: Literal["same", "independent", "threshold", "power", "constant"] = "same"
    label_alpha: float = Field(1.0, gt=0.0)
    label_power: float = Field(2.0, gt=0.0)
    label_value: float = Field(0.5, ge=0.0, le=1.0)
    per_sample: bool = False
    # The paper writes lambda in [0.5, 1] (the larger weight on the first example): fold = max(l, 1-l).
    fold: bool = False


# Models whose step is worth graphing by default (launch-bound on a GPU); `on` graphs any model.
GRAPHED_MODELS = frozenset({"resnet18", "preact_resnet18"})


class TrialConfig(_Strict):
    seed: int = Field(0, ge=0)
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
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


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


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError) as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None


def resolve_config_path(name_or_path: str) -> Path:
    """A path to a YAML file, or the name of a bundled config (see `bundled_config_names()`)."""
    return find_yaml(name_or_path, CONFIG_DIR, "config")


def load_trial_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> TrialConfig:
    path = resolve_config_path(name_or_path)
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (seed, data, model, train, mixup)")
    for item in overrides:
        key, value = parse_override(item)
        set_dotted(raw, key, value)
    return validate_trial_config(raw, source=str(path))


def dump_yaml(cfg: TrialConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
