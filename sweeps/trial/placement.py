"""Tags that say where a trial attempt ran: the node, the GPUs Ray assigned (Ray sets
CUDA_VISIBLE_DEVICES to them) and the device the trial trains on (`train.device: auto` picks the
assigned GPU)."""

from __future__ import annotations

from ..keys import DEVICE_TAG, GPU_IDS_TAG, NODE_ID_TAG, NODE_TAG


def placement_tags(device_choice: str) -> dict[str, str]:
    import ray

    from mixup_core import resolve_device  # torch: imported in the trial process only

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU", [])
    return {
        NODE_TAG: ray.util.get_node_ip_address(),
        NODE_ID_TAG: context.get_node_id(),
        DEVICE_TAG: str(resolve_device(device_choice)),
        GPU_IDS_TAG: ",".join(map(str, gpus)) or "none",
    }
