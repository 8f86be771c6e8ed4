"""Ray Tune's TensorBoard logger, without torch in the driver.

Tune adds a `TBXLoggerCallback` to every run unless one is given. Its `__init__` imports tensorboardX,
whose writer module imports torch for one thing, naming `torch.Tensor` in its type hints (it falls back
to numpy when torch is missing): 1.5 s on the driver's critical path on 2 cores, between `fit()` and the
first trial, and a process that holds torch for nothing. `tensorboard_logger()` imports tensorboardX
while `import torch` raises ImportError (`sys.modules["torch"] = None`, unless torch is imported
already) and returns Tune's own callback: the same event files (Tune logs floats and numpy arrays, and
tensorboardX imports torch inside the functions that take a tensor).

Internals used: tensorboardX's optional `import torch` at module level in `tensorboardX.writer`, and
that Tune adds no second TensorBoard logger when one is among the run's callbacks.
"""

from __future__ import annotations

import importlib.util
import sys


def tensorboard_logger():
    """Tune's TBXLoggerCallback, or None where tensorboardX is not installed (Tune writes no
    TensorBoard files then either)."""
    if importlib.util.find_spec("tensorboardX") is None:
        return None
    if "tensorboardX.writer" not in sys.modules and "torch" not in sys.modules:
        sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
        try:
            import tensorboardX.writer  # noqa: F401
        finally:
            if sys.modules.get("torch", 0) is None:
                del sys.modules["torch"]
    from ray.tune.logger import TBXLoggerCallback

    return TBXLoggerCallback()
