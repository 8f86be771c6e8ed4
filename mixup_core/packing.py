"""Trial packing: several trials trained together in one process, on one device.

Why: one ResNet-18 trial at batch 128 cannot fill an H100 even as a CUDA graph (its kernels are too
small). Packing N trials (other seeds, other Mixup settings, other stop epochs) into one process lets
one graph step all N models per replay, each on its own CUDA stream, so their kernels run side by side
(N processes sharing a GPU are time-sliced instead, unless MPS is on).

Each trial keeps everything of its own: data (the validation split depends on the seed), model with its
BatchNorm statistics, optimiser, generators, schedule, outputs. The models are not fused (no vmap, no
grouped kernels), so each trial computes exactly what `run_trial` computes: on CPU the packed run
reproduces N separate runs bit for bit, and every trial writes the same files as `run_trial`
(config.yaml, metrics.jsonl, summary.json, checkpoints/) through the same `outputs.TrialOutputs` and
reports to its own Reporter.

Trials must have the same number of steps per epoch (same training-set size and batch size) and run on
the same device; anything else may differ. Trials advance in lockstep; a trial restored from an earlier
checkpoint than the others trains alone (in a smaller pack) until it has caught up, and a trial that
diverges or finishes leaves the pack. `images_per_s` in a trial's metrics is its own images over the
pack's training time, so the pack's throughput is the sum over its trials.

Checkpoints are taken jointly: after an epoch, every trial that trained it saves one when any of them is
due (`outputs.checkpoint_due`: its interval, keep_epochs, its last epoch, its reporter's needs), so the
newest checkpoints of a pack's trials always form one consistent restart point (a runner can persist
the pack as a whole, see `on_epoch`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from .config import ConfigError, TrialConfig
from .data import TrialData, build_dataset
from .device import resolve_device
from .graphed_step import StaticStep, StepGraphs, use_cuda_graphs
from .mixup import Mixup
from .outputs import TrialOutputs
from .reporting import Reporter
from .step import new_state


class _PackedTrial:
    """One trial inside a pack: its static-buffer step program and its outputs."""

    def __init__(self, cfg: TrialConfig, data: TrialData, out_dir: Path, reporter: Optional[Reporter],
                 device: torch.device):
        self.cfg, self.data = cfg, data
        self.state = new_state(cfg, data, device)
        self.outputs = TrialOutputs(cfg, out_dir, reporter, self.state, data)  # restores `state`
        self.program = StaticStep(cfg, data, self.state, Mixup(cfg.mixup))

    @property
    def diverged(self) -> bool:
        return self.outputs.status == "diverged"


def packing_device(cfgs: Sequence[TrialConfig]) -> torch.device:
    devices = {str(resolve_device(c.train.device)) for c in cfgs}
    if len(devices) != 1:
        raise ConfigError(f"packed trials must share one device, got train.device resolving to {sorted(devices)}")
    return torch.device(devices.pop())


def run_packed_trials(
    cfgs: Sequence[TrialConfig],
    out_dirs: Sequence[Path],
    reporters: Optional[Sequence[Optional[Reporter]]] = None,
    capture: Optional[bool] = None,
    on_epoch: Optional[Callable[[int, list[int]], None]] = None,
) -> list[dict[str, Any]]:
    """Train `cfgs` together, trial i writing into out_dirs[i] and reporting to reporters[i] (None: a
    LocalReporter, no resume). Returns the summaries in order. capture: graph the packed step (default:
    on CUDA when every trial's train.cuda_graphs allows it, see graphed_step.use_cuda_graphs).
    on_epoch(epoch, indices): called once per lockstep epoch, after the trials `indices` trained and
    reported it (a diverged one is not among them)."""
    if not cfgs:
        return []
    reporters = list(reporters) if reporters is not None else [None] * len(cfgs)
    if not (len(cfgs) == len(out_dirs) == len(reporters)):
        raise ValueError(f"got {len(cfgs)} configs, {len(out_dirs)} out_dirs and {len(reporters)} reporters")
    if len({str(Path(d).resolve()) for d in out_dirs}) != len(out_dirs):
        raise ConfigError("packed trials need distinct output directories")
    device = packing_device(cfgs)
    choices = [use_cuda_graphs(c, device) for c in cfgs]  # every trial's choice is checked
    if capture is None:
        capture = all(choices)
    # Everything that can fail on bad input fails here, before anything is written.
    datas = [build_dataset(c.data, c.seed, device) for c in cfgs]
    steps = {d.n_train // min(c.train.batch_size, d.n_train) for c, d in zip(cfgs, datas)}
    if len(steps) != 1:
        raise ConfigError(
            f"packed trials need the same steps per epoch (training-set size // train.batch_size), got {sorted(steps)}"
        )
    trials = [_PackedTrial(c, d, Path(o), r, device) for c, d, o, r in zip(cfgs, datas, out_dirs, reporters)]
    graphs = StepGraphs(capture)
    last_checkpoint = time.perf_counter()
    try:
        while True:
            running = [t for t in trials if t.outputs.running]
            if not running:
                break
            epoch = min(t.state.epoch for t in running)  # laggards (resumed earlier) catch up first
            group = [t for t in running if t.state.epoch == epoch]
            start = time.perf_counter()
            for t in group:
                t.program.begin_epoch()
            mixing = [t.program.mixing for t in group]
            graphs.run([t.program for t in group])
            results = [t.program.end_epoch() for t in group]  # syncs
            train_s = time.perf_counter() - start
            since = time.perf_counter() - last_checkpoint
            save = any(t.outputs.checkpoint_due(epoch + 1, since) for t in group)
            for t, (loss, lr, seen), mix in zip(group, results, mixing):
                t.outputs.end_epoch(t.data, loss, lr, seen, train_s, mix, save)
            if save:
                last_checkpoint = time.perf_counter()
            if on_epoch is not None:
                on_epoch(epoch + 1, [i for i, t in enumerate(trials) if t in group and not t.diverged])
    finally:
        for t in trials:
            t.outputs.abandon()
    return [t.outputs.close() for t in trials]
