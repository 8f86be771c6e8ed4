"""A YAML file named by path or by the name of a bundled one: the lookup `mixup-train CONFIG` and
`mixup-sweep run SPEC` share."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError


def bundled_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def find_yaml(name_or_path: str, directory: Path, kind: str) -> Path:
    """`name_or_path` as a file when it looks like one (a .yaml/.yml suffix, a slash, or an existing
    path), else `directory/NAME.yaml`. `kind` names what it is in errors ("config", "spec")."""
    path = Path(name_or_path)
    bundled = ", ".join(bundled_names(directory))
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in name_or_path:
        if path.is_dir():
            raise ConfigError(f"{name_or_path}: is a directory, not a {kind} file (bundled {kind}s: {bundled})")
        if not path.is_file():
            raise ConfigError(f"{name_or_path}: no such file (bundled {kind}s: {bundled})")
        return path
    found = directory / f"{name_or_path}.yaml"
    if not found.is_file():
        raise ConfigError(f"{name_or_path!r} is neither a {kind} file nor a bundled {kind} (bundled: {bundled})")
    return found
