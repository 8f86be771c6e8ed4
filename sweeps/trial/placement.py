"""Where a trial attempt runs, and the tags that say so: the node, the GPUs Ray assigned (Ray sets
CUDA_VISIBLE_DEVICES to them), the device the trial trains on (`train.device: auto` picks the
assigned GPU) and the CPU threads its torch uses (as many as the CPUs Ray assigned)."""

from __future__ import annotations

import os

from ..keys import CPU_THREADS_TAG, DEVICE_TAG, GPU_IDS_TAG, NODE_ID_TAG, NODE_TAG


def use_assigned_cpus() -> None:
    """torch's CPU threads = OMP_NUM_THREADS as Ray set it for this trial (the CPUs it assigned, unless
    the user set the variable, which Ray then leaves alone), whatever the worker process imported
    before the trial reached it: a preloaded worker loaded torch with a pool of every core."""
    import ray

    from mixup_core import limit_cpu_threads

    wanted = os.environ.get("OMP_NUM_THREADS", "")
    limit_cpu_threads(int(wanted) if wanted.isdigit() else
                      ray.get_runtime_context().get_assigned_resources().get("CPU") or 1)


def placement_tags(device_choice: str) -> dict[str, str]:
    import ray

    import torch

    from mixup_core import resolve_device  # torch: imported in the trial process only

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU", [])
    return {
        NODE_TAG: ray.util.get_node_ip_address(),
        NODE_ID_TAG: context.get_node_id(),
        DEVICE_TAG: str(resolve_device(device_choice)),
        GPU_IDS_TAG: ",".join(map(str, gpus)) or "none",
        CPU_THREADS_TAG: str(torch.get_num_threads()),
    }
