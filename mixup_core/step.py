"""The training state and one step / one epoch of training, eager.

`train_step` is the unit the CUDA-graph path (graphed_step.py) captures, so it uses fixed shapes and
device-side randomness only. Randomness is explicit: the model's initialisation, the data order and
augmentation, and Mixup's coefficients each come from a generator seeded from the trial seed, all of
them part of the state a checkpoint saves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from .config import TrialConfig
from .data import TrialData
from .device import autocast_context
from .mixup import Mixup, mixup_cross_entropy
from .models import build_model
from .schedule import lr_at

# Distinct, fixed offsets so each stream is independent of the others for the same seed.
_STREAMS = {"init": 0, "data": 1, "mixup": 2}


def stream_seed(seed: int, stream: str) -> int:
    return seed * 1_000_003 + 101 * _STREAMS[stream] + 17


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    mixup_gen: torch.Generator
    epoch: int = 0  # epochs completed
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "mixup_gen": self.mixup_gen.get_state(),
            "epoch": self.epoch,
            "elapsed_s": self.elapsed_s,
        }

    def load_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.data_gen.set_state(state["data_gen"])
        self.mixup_gen.set_state(state["mixup_gen"])
        self.epoch = int(state["epoch"])
        self.elapsed_s = float(state["elapsed_s"])


def build_model_seeded(cfg: TrialConfig, data: TrialData, device: torch.device) -> nn.Module:
    """Construct with a private RNG seeded from the trial seed: same init on every device and run."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(cfg.seed, "init"))
        model = build_model(cfg.model, data.num_classes, data.input_shape)
    model = model.to(device)
    if device.type == "cuda" and len(data.input_shape) == 3:
        model = model.to(memory_format=torch.channels_last)
    return model


def build_optimizer(cfg: TrialConfig, model: nn.Module, device: torch.device) -> torch.optim.Optimizer:
    t = cfg.train
    return torch.optim.SGD(
        model.parameters(),
        lr=t.lr,
        momentum=t.momentum,
        nesterov=t.nesterov and t.momentum > 0,
        weight_decay=t.weight_decay,
        fused=device.type == "cuda",
    )


def new_state(cfg: TrialConfig, data: TrialData, device: torch.device) -> TrainingState:
    model = build_model_seeded(cfg, data, device)
    return TrainingState(
        model=model,
        optimizer=build_optimizer(cfg, model, device),
        data_gen=torch.Generator(device=device).manual_seed(stream_seed(cfg.seed, "data")),
        mixup_gen=torch.Generator(device=device).manual_seed(stream_seed(cfg.seed, "mixup")),
    )


def train_step(cfg: TrialConfig, data: TrialData, state: TrainingState, mixup: Mixup, idx: torch.Tensor,
               mixing: bool) -> torch.Tensor:
    """One optimiser step on the examples `idx` (device tensor); returns the loss (no host sync).
    Fixed shapes and device-side randomness only, so the CUDA-graph path captures this same function."""
    model, opt = state.model, state.optimizer
    device = data.train_x.device
    x = data.prepare_train(data.train_x[idx], state.data_gen)
    y = data.train_y[idx]
    if device.type == "cuda" and data.train_x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast_context(cfg.train.precision, device):
        if mixing:
            x, y_a, y_b, mu = mixup.mix(x, y, state.mixup_gen)
            loss = mixup_cross_entropy(model(x), y_a, y_b, mu)
        else:
            loss = nn.functional.cross_entropy(model(x).float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def train_one_epoch(cfg: TrialConfig, data: TrialData, state: TrainingState, mixup: Mixup,
                    progress_bar=None) -> tuple[float, float, int]:
    """One pass over the training set. Returns (mean train loss, lr at the first step, images seen).
    The only host sync is the final loss read."""
    t = cfg.train
    model, opt = state.model, state.optimizer
    device = data.train_x.device
    n = data.n_train
    batch = min(t.batch_size, n)
    steps = n // batch  # drop the ragged last batch: fixed shapes, and every batch mixes full-size
    mixing = mixup.active_at(state.epoch)
    model.train()
    perm = torch.randperm(n, generator=state.data_gen, device=device)
    loss_sum = torch.zeros((), device=device)
    first_lr = lr_at(t, state.epoch)
    for step in range(steps):
        lr = lr_at(t, state.epoch + step / steps)
        for group in opt.param_groups:
            group["lr"] = lr
        idx = perm[step * batch:(step + 1) * batch]
        loss = train_step(cfg, data, state, mixup, idx, mixing)
        loss_sum += loss.detach()
        if progress_bar is not None:
            progress_bar.update(1)
    return float(loss_sum / steps), first_lr, steps * batch
