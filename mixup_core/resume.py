"""What `mixup-train --resume` continues from, decided before anything is written.

* The newest checkpoint that verifies and loads; damaged newer ones are skipped with one warning
  (and replaced as the trial trains again). None intact while some exist: refused, since starting
  over would silently throw away a trial the user may want to repair or copy.
* No checkpoint at all (the trial was stopped before its first one): it starts from epoch 0, and
  replaces the partial history, with one note. Without config.yaml or metrics.jsonl there is no
  trial to resume: refused.
* The requested configuration must train what the checkpoint trained: keys that change it
  (config.changes_refused_on_resume) are refused by name, all of them in one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .checkpoint import CONFIG_FILE, HISTORY_FILE, latest_intact_checkpoint, verify_checkpoint
from .config import (
    AugmentConfig,
    ConfigError,
    TrialConfig,
    changes_refused_on_resume,
    read_yaml,
    resolve_augment,
    validate_trial_config,
)


@dataclass
class ResumePlan:
    checkpoint: Optional[Path]  # None: start from epoch 0
    messages: list[str] = field(default_factory=list)  # one line each, for stderr


def plan_resume(cfg: TrialConfig, out: Path) -> ResumePlan:
    root = out / "checkpoints"
    damaged: list[tuple[Path, str]] = []
    checkpoint = latest_intact_checkpoint(root, lambda path, why: damaged.append((path, why)))
    if checkpoint is None:
        if damaged:
            more = f" (and {len(damaged) - 1} older checkpoint(s), damaged too)" if len(damaged) > 1 else ""
            raise ConfigError(f"--resume: no intact checkpoint under {root}: {damaged[0][1]}{more}")
        return _start_over(out, root)
    messages = []
    if damaged:
        names = ", ".join(p.name for p, _ in damaged)
        messages.append(f"warning: skipping damaged checkpoint(s) {names} ({damaged[0][1]}); "
                        f"resuming from {checkpoint.name}")
    _refuse_changed_training(cfg, checkpoint, out)
    if not verify_checkpoint(checkpoint):
        messages.append(f"note: {checkpoint} has no checksums (written by an older version); loaded unverified")
    return ResumePlan(checkpoint, messages)


def _start_over(out: Path, root: Path) -> ResumePlan:
    history = out / HISTORY_FILE
    if not (out / CONFIG_FILE).exists() and not history.exists():
        raise ConfigError(f"--resume: {out} holds no trial (no checkpoint, no {CONFIG_FILE}); run without --resume")
    try:
        epochs = sum(1 for line in history.read_text(errors="replace").splitlines() if line.strip())
    except OSError:
        epochs = 0
    replaced = f", replacing the {epochs} epoch(s) in {HISTORY_FILE}" if epochs else ""
    return ResumePlan(None, [f"note: no checkpoint under {root} yet (the trial stopped before its first "
                             f"one): starting from epoch 0{replaced}"])


def _refuse_changed_training(cfg: TrialConfig, checkpoint: Path, out: Path) -> None:
    source = checkpoint / CONFIG_FILE if (checkpoint / CONFIG_FILE).exists() else out / CONFIG_FILE
    if not source.exists():
        return  # nothing to compare with (not written by mixup-train)
    saved = validate_trial_config(read_yaml(source), source=f"--resume: {source}")
    saved = _with_augment(saved, legacy=True)
    requested = _with_augment(cfg, legacy=False)
    changed = changes_refused_on_resume(saved, requested)
    if changed:
        shown = ", ".join(f"{key} ({_show(old)} -> {_show(new)})" for key, old, new in changed)
        raise ConfigError(
            f"--resume: {shown}: changing {'this key' if len(changed) == 1 else 'these keys'} changes what is "
            f"trained, not only how; resume with the configuration in {source} or start a new trial in "
            f"another --out"
        )


def _with_augment(cfg: TrialConfig, legacy: bool) -> TrialConfig:
    """cfg with data.augment resolved as the data source resolves it (config.resolve_augment).
    A saved `true` comes from a version that wrote the request, not its resolution, and meant a crop
    with pad 4 + flip on images of at least 8x8 (CIFAR always)."""
    choice, name = cfg.data.augment, cfg.data.name
    if isinstance(choice, AugmentConfig) or choice is False or (choice == "auto" and name == "npz"):
        size: Optional[tuple[int, int]] = None  # not needed
    elif name == "npz":
        from .data.npz import npz_image_size

        size = npz_image_size(cfg.data.root)
        if size is None:
            return cfg  # an unreadable file: loading the data says what is wrong with it
    else:
        size = (32, 32)  # CIFAR
    if legacy and choice is True:
        old_rule = name != "feature_noise" and min(size or (32, 32)) >= 8
        resolved: Any = AugmentConfig(crop_pad=4, flip=True) if old_rule else False
    else:
        resolved = resolve_augment(choice, name, size)
    return cfg.model_copy(update={"data": cfg.data.model_copy(update={"augment": resolved})})


def _show(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return str(value)
