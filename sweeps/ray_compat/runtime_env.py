"""Trial actors on an embedded Ray get no runtime_env of their own: credentials stay out of Ray's logs,
and the trials start in the worker processes Ray has already started.

Ray Tune gives every trial actor a runtime_env with `env_vars`: its defaults (`PL_DISABLE_FORK=1`) plus a
fixed set of variables copied from the driver's environment (cloud credentials among them, for remote
storage on other nodes). On an embedded Ray that costs twice and buys nothing:
- Ray's runtime-env agent writes those variables into its session log (credentials included);
- an actor with a runtime_env cannot use the worker processes the raylet prestarts when the driver
  connects (they have none): the raylet starts new ones for the trials (Python and `import ray` on the
  critical path of the first trial) and kills the prestarted ones.
An embedded Ray's workers inherit the driver's environment, so nothing needs copying: the defaults go
into the driver's environment before `ray.init` (the raylet and every worker inherit them), and Tune
copies nothing. A cluster (`--address`) keeps Tune's behaviour.

Internals used: `ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE` (a set of variable names) and
`DEFAULT_ENV_VARS` (a dict), both read by `_ActorClassCache.get` when it registers the trainable.
"""

from __future__ import annotations

import os

CREDENTIAL_VARS = frozenset({"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN"})


def _class_cache():
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # a Ray without this module: nothing is copied (the canary test says so)
        return None
    return class_cache


def inherit_environment_before_ray_init() -> None:
    """Before an embedded ray.init: Tune's default trial variables into this environment (unless set),
    so that the raylet and its workers have them without a runtime_env."""
    class_cache = _class_cache()
    defaults = getattr(class_cache, "DEFAULT_ENV_VARS", None) if class_cache else None
    if isinstance(defaults, dict):
        for key, value in defaults.items():
            os.environ.setdefault(key, value)


def no_runtime_env_for_trial_actors() -> None:
    """After an embedded ray.init: Tune copies no variable into trial actors' runtime_env (the workers
    inherited the driver's environment at ray.init, credentials included, without any log of it)."""
    class_cache = _class_cache()
    if class_cache is None:
        return
    if isinstance(getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None), (set, frozenset)):
        class_cache.ENV_VARS_TO_PROPAGATE = set()
    if isinstance(getattr(class_cache, "DEFAULT_ENV_VARS", None), dict):
        class_cache.DEFAULT_ENV_VARS = {}
