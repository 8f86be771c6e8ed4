"""The BARE loop: the smallest Mixup training step, eager or captured whole in one CUDA graph.

This is the ceiling the issue measured with a 60-line script: one fixed batch resident on the device
(no data pipeline, no augmentation, no schedule, no evaluation), Mixup with lambda from a device
generator, bf16 autocast forward/backward (channels_last), fused SGD. Eager and graphed run the same
step function, so their ratio is the launch overhead alone; mixup_core's loop against this ceiling is
the cost of everything a real trial adds (sampling batches, augmentation, the lr schedule, the loss sum).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from mixup_core.mixup import sample_beta


@dataclass
class BareResult:
    images_per_s: float
    graphed: bool
    timed_steps: int
    seconds: float
    batch_size: int
    final_loss: float


def run_bare(
    model: nn.Module,
    device: torch.device,
    batch_size: int,
    graphed: bool,
    image_size: int = 32,
    num_classes: int = 10,
    warmup_steps: int = 5,
    timed_steps: int = 200,
    seed: int = 0,
) -> BareResult:
    if graphed and device.type != "cuda":
        raise ValueError("a CUDA graph needs a CUDA device")
    gen = torch.Generator(device=device).manual_seed(seed)
    cuda = device.type == "cuda"
    model = model.to(device).train()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device, generator=gen)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, num_classes, (batch_size,), device=device, generator=gen)
    lr = torch.tensor(0.1, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=lr if cuda else 0.1, momentum=0.9, weight_decay=5e-4, fused=cuda)
    loss_out = torch.zeros((), device=device)

    def step():
        lam = sample_beta(1.0, 1, gen, device)
        perm = torch.randperm(batch_size, generator=gen, device=device)
        mixed = lam.view(1, 1, 1, 1) * x + (1 - lam.view(1, 1, 1, 1)) * x[perm]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            out = model(mixed).float()
        loss = (lam * F.cross_entropy(out, y, reduction="none")
                + (1 - lam) * F.cross_entropy(out, y[perm], reduction="none")).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_out.copy_(loss.detach())

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    run = step
    if cuda:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(warmup_steps):
                step()
        torch.cuda.current_stream().wait_stream(side)
        if graphed:
            graph = torch.cuda.CUDAGraph()
            register = getattr(graph, "register_generator_state", None)
            if register is not None:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    register(gen)
            with torch.cuda.graph(graph):
                step()
            run = graph.replay
    else:
        for _ in range(warmup_steps):
            step()
    for _ in range(3):  # a few untimed runs of what is timed
        run()
    sync()
    start = time.perf_counter()
    for _ in range(timed_steps):
        run()
    sync()
    seconds = time.perf_counter() - start
    return BareResult(
        images_per_s=timed_steps * batch_size / seconds,
        graphed=graphed,
        timed_steps=timed_steps,
        seconds=seconds,
        batch_size=batch_size,
        final_loss=float(loss_out),
    )
