"""Each Ray internal that sweeps relies on (sweeps/ray_compat) is still what the code expects in the
installed Ray: a failure names the internal and the module that uses it, so an upgrade that breaks
resume or recovery fails here, with a reason, instead of in a user's interrupted sweep."""

from __future__ import annotations

import importlib

import pytest

from sweeps.ray_compat import INTERNALS


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda i: i.used_by + ":" + i.name.split()[0])
def test_ray_internal_is_what_ray_compat_relies_on(internal):
    importlib.import_module(f"sweeps.ray_compat.{internal.used_by}")  # the user exists
    try:
        internal.probe()
    except Exception as e:  # ImportError, AttributeError, a changed signature or value
        pytest.fail(f"Ray internal {internal.name} (used by sweeps/ray_compat/{internal.used_by}.py) changed "
                    f"in ray {__import__('ray').__version__}: {type(e).__name__}: {e}")


def test_every_ray_compat_module_declares_its_internals():
    import pkgutil

    import sweeps.ray_compat as compat

    modules = {m.name for m in pkgutil.iter_modules(compat.__path__)}
    assert modules == {i.used_by for i in INTERNALS}
