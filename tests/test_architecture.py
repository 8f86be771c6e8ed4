"""The architecture the code promises (pyproject.toml [tool.importlinter], sweeps/ray_compat):
no import cycles; mixup_core trains with torch alone; sweeps reaches mixup_core through its package
API; what runs in trial processes imports no driver-side module; and Ray's internals are touched only
in sweeps/ray_compat, each with a canary (test_ray_compat.py)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWEEPS = REPO / "sweeps"
COMPAT = SWEEPS / "ray_compat"
EXTERNAL = ("ray", "mlflow", "optuna")  # libraries whose internals must stay behind one door


def test_import_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(lint), "--config", str(REPO / "pyproject.toml")], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def _own_private_names(tree: ast.Module) -> set[str]:
    """Underscore names a class of this file defines itself: methods and class attributes, and
    `self._x = ...` in its __init__. Anything else reached through self is a base class's."""
    names: set[str] = set()
    for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
        for item in cls.body:
            if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names.add(item.name)
                if item.name == "__init__":
                    for node in ast.walk(item):
                        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                            names.add(node.attr)
            elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def _private_uses(path: Path) -> list[str]:
    """Imports of a private module or name of ray/mlflow/optuna, and `obj._name` on anything but a
    name this file's own classes define: the ways code reaches a library's internals."""
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _own_private_names(tree)
    found = []

    def private(parts) -> bool:
        return any(p.startswith("_") and not (p.startswith("__") and p.endswith("__")) for p in parts)

    for node in ast.walk(tree):
        where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in EXTERNAL and private(parts):
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] in EXTERNAL and (private(parts) or any(private([a.name]) for a in node.names)):
                found.append(f"{where}: from {node.module} import {', '.join(a.name for a in node.names)}")
        elif isinstance(node, ast.Attribute):
            owner = node.value.id if isinstance(node.value, ast.Name) else None
            if node.attr == "__mixins__" or (private([node.attr]) and not (owner in ("self", "cls") and node.attr in own)):
                found.append(f"{where}: .{node.attr}")
    return found


def test_library_internals_are_used_only_in_ray_compat():
    files = [p for p in SWEEPS.rglob("*.py") if COMPAT not in p.parents]
    found = [use for p in sorted(files) for use in _private_uses(p)]
    assert not found, "move these into sweeps/ray_compat (with a probe in INTERNALS):\n" + "\n".join(found)


def test_the_check_sees_what_ray_compat_does():
    """The scan above is not vacuous: it finds every internal that ray_compat itself uses."""
    found = [use for p in sorted(COMPAT.glob("*.py")) if p.name != "__init__.py" for use in _private_uses(p)]
    modules = {use.split(":")[0] for use in found}
    assert {f"sweeps/ray_compat/{m}.py" for m in ("experiment_state", "optuna_search", "asha", "resources",
                                                     "search_state", "loopback_node")} <= modules, found
