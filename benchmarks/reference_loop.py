"""The REFERENCE training loop for the throughput benchmark: Mixup on CIFAR written the common way.

This is how the public Mixup / CIFAR code trains (facebookresearch/mixup-cifar10, kuangliu/pytorch-cifar):
a torchvision-style dataset that hands out one PIL image at a time, CPU transforms
RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize in DataLoader workers, pinned
host batches copied to the device, fp32, standard Mixup (one lambda per batch from numpy, a random
permutation as partner), SGD, and `loss.item()` every step for the running loss. Nothing here is tuned:
it is the baseline that `mixup_core`'s device-resident loop is measured against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class CifarLikeDataset(Dataset):
    """uint8 HWC images + labels, served exactly like torchvision.datasets.CIFAR10.__getitem__."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, transform):
        self.images = images_hwc
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), self.labels[i]


def standard_transform(size: int = 32, padding: int = 4):
    return transforms.Compose(
        [
            transforms.RandomCrop(size, padding=padding),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )


@dataclass
class ReferenceResult:
    images_per_s: float
    timed_steps: int
    timed_images: int
    seconds: float
    warmup_steps: int
    workers: int
    batch_size: int
    final_loss: float


def run_reference(
    model: nn.Module,
    images_hwc: np.ndarray,
    labels: np.ndarray,
    device: torch.device,
    batch_size: int = 128,
    workers: int = 8,
    warmup_steps: int = 20,
    timed_steps: int = 200,
    alpha: float = 1.0,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
) -> ReferenceResult:
    """Train `model` (already built, any device) for warmup + timed steps; time the timed ones."""
    if timed_steps < 1 or warmup_steps < 0:
        raise ValueError("need timed_steps >= 1 and warmup_steps >= 0")
    dataset = CifarLikeDataset(images_hwc, labels, standard_transform(images_hwc.shape[1]))
    loader_gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=loader_gen,
    )
    if len(loader) == 0:
        raise ValueError(f"{len(dataset)} images make no batch of {batch_size}")
    model = model.to(device).train()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    rng = np.random.default_rng(seed)
    cudnn_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # as the common CIFAR scripts do

    def batches():
        while True:  # as many epochs as the step count needs
            yield from loader

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step, loss_value, start = 0, float("nan"), None
    try:
        for x, y in batches():
            if step == warmup_steps:
                sync()
                start = time.perf_counter()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lam = float(rng.beta(alpha, alpha))
            index = torch.randperm(x.size(0), device=device)
            mixed = lam * x + (1 - lam) * x[index]
            out = model(mixed)
            loss = lam * criterion(out, y) + (1 - lam) * criterion(out, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_value = loss.item()  # the running-loss read of the common scripts (a sync per step)
            step += 1
            if step == warmup_steps + timed_steps:
                break
        sync()
        seconds = time.perf_counter() - start
    finally:
        torch.backends.cudnn.benchmark = cudnn_benchmark
        del loader  # stops the persistent workers
    return ReferenceResult(
        images_per_s=timed_steps * batch_size / seconds,
        timed_steps=timed_steps,
        timed_images=timed_steps * batch_size,
        seconds=seconds,
        warmup_steps=warmup_steps,
        workers=workers,
        batch_size=batch_size,
        final_loss=loss_value,
    )
