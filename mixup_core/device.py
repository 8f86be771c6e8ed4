"""Where a trial trains and in which precision."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from .config import ConfigError


def resolve_device(choice: str) -> torch.device:
    """train.device: auto (the GPU Ray assigned, else CPU) | cuda | cpu."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("train.device=cuda but no CUDA device is available (use auto or cpu)")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def limit_cpu_threads(cpus: float) -> None:
    """Let torch's CPU kernels use as many threads as the trial has CPUs (at least one). torch otherwise sizes its pool from the machine or from OMP_NUM_THREADS as it was
    when torch loaded, and a runner may load torch before it knows a trial's share (two trials each
    with a pool of every core spin against each other: ten times slower on 2 cores)."""
    torch.set_num_threads(max(1, int(cpus)))


def autocast_context(precision: str, device: torch.device):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        # No cast cache: every weight is cast once per step anyway (used once in the forward), and the
        # cache's tensors outliving a step are what PyTorch warns about under CUDA-graph capture.
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()
