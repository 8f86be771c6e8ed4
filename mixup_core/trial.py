"""One trial, read top to bottom: data and model on the device, Mixup for epochs [0, E), standard
training after, evaluation and a full checkpoint every epoch.

`run_trial(cfg, out_dir, reporter)` is the whole API the sweep layer needs (see reporting.py).
On CPU a trial resumed from any checkpoint reproduces the uninterrupted metrics exactly: the state
holds the model, the optimiser, the epoch and every generator, and the schedule is a pure function
of progress.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

from .config import TrialConfig
from .data import TrialData, build_dataset
from .device import resolve_device
from .graphed_step import GraphedEpochs, use_cuda_graphs
from .mixup import Mixup
from .outputs import TrialOutputs
from .reporting import Reporter
from .step import new_state, train_one_epoch


def select_epoch_trainer(cfg: TrialConfig, device: torch.device):
    """`train_one_epoch` (eager), or on CUDA a trainer with the same signature that replays the step as
    a CUDA graph (train.cuda_graphs; see graphed_step.py)."""
    return GraphedEpochs() if use_cuda_graphs(cfg, device) else train_one_epoch


def run_trial(cfg: TrialConfig, out_dir: Path, reporter: Optional[Reporter] = None,
              progress: bool = False) -> dict[str, Any]:
    """Train one trial to the end (or resume it), writing config.yaml, metrics.jsonl, summary.json
    and checkpoints/ under out_dir. Returns the summary."""
    device = resolve_device(cfg.train.device)
    train_epoch = select_epoch_trainer(cfg, device)  # eager or CUDA graphs; a bad choice fails here
    data = build_dataset(cfg.data, cfg.seed, device)  # bad data fails here, before anything is written
    state = new_state(cfg, data, device)
    outputs = TrialOutputs(cfg, out_dir, reporter, state, data)  # restores `state` if the reporter says so
    mixup = Mixup(cfg.mixup)
    bars = _progress_bars(progress, cfg.train.epochs, state.epoch, data, cfg)
    last_checkpoint = time.perf_counter()
    try:
        while outputs.running:
            epoch_start = time.perf_counter()
            inner = bars.inner(state.epoch) if bars else None
            mixing = mixup.active_at(state.epoch)
            train_loss, lr, seen = train_epoch(cfg, data, state, mixup, inner)
            if inner is not None:
                inner.close()
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_s = time.perf_counter() - epoch_start
            save = outputs.checkpoint_due(state.epoch + 1, time.perf_counter() - last_checkpoint)
            row = outputs.end_epoch(data, train_loss, lr, seen, train_s, mixing, save)
            if save:
                last_checkpoint = time.perf_counter()
            if bars and row is not None:
                bars.epoch_done(row)
    finally:
        outputs.abandon()
        if bars:
            bars.close()
    return outputs.close()


class _ProgressBars:
    """An outer bar over epochs and, when an epoch has many steps, an inner bar over its batches."""

    def __init__(self, epochs: int, done: int, steps: int):
        from tqdm import tqdm

        self._tqdm = tqdm
        self.steps = steps
        self.outer = tqdm(total=epochs, initial=done, desc="epochs", unit="ep", file=sys.stderr,
                          dynamic_ncols=True)

    def inner(self, epoch: int):
        if self.steps < 20:
            return None
        return self._tqdm(total=self.steps, desc=f"epoch {epoch + 1}", unit="step", leave=False,
                          file=sys.stderr, dynamic_ncols=True)

    def epoch_done(self, row: dict[str, Any]) -> None:
        shown = {k: row[k] for k in ("train_loss", "val_acc", "test_acc", "test_acc_rare") if k in row}
        self.outer.set_postfix({k: f"{v:.4f}" for k, v in shown.items()}, refresh=False)
        self.outer.update(1)

    def close(self) -> None:
        self.outer.close()


def _progress_bars(progress: bool, epochs: int, done: int, data: TrialData, cfg: TrialConfig):
    if not progress:
        return None
    return _ProgressBars(epochs, done, data.n_train // min(cfg.train.batch_size, data.n_train))
