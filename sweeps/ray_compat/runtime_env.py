"""Keeping cloud credentials out of trial actors' runtime_env on an embedded Ray.

Ray Tune copies a fixed set of variables from the driver's environment into every trial actor's
runtime_env (for remote storage on other nodes); Ray's runtime-env agent then writes them into its
session log. An embedded Ray's workers inherit the driver's environment anyway, so nothing needs
copying there.

Internal used: `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE` (a set of variable names).
"""

from __future__ import annotations

CREDENTIAL_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"})


def keep_credentials_out_of_runtime_env() -> None:
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # a Ray without this module: nothing is copied (the canary test says so)
        return
    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if isinstance(propagated, (set, frozenset)):
        class_cache.ENV_VARS_TO_PROPAGATE = set(propagated) - CREDENTIAL_VARS
