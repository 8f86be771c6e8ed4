"""The training step as a CUDA graph: captured once, replayed for every step, no host sync per step.

Why: at batch 128 a ResNet-18 step is a few hundred small kernels. Launched one by one from Python the
H100 spends most of its time waiting for the CPU (the loop is launch-bound); replaying one captured
graph costs one launch per step.

What is captured is exactly `step.train_step` (augmentation, Mixup sampling, forward/backward under
autocast, the optimiser step), on buffers whose addresses never change:
  * `order` [steps, batch]: the epoch's permutation (drawn eagerly from the data generator, as the eager
    loop does), and `counter` [1]: the step index, read and incremented on the device;
  * `lr_table` [steps]: the epoch's learning rates (a pure function of progress, see schedule.py), copied
    into the optimiser's lr tensor on the device at each step;
  * the trial's own generators, registered with the graph so that each replay draws fresh numbers and
    advances their host-side state exactly as the eager ops would (a replay with generator offset o
    uses the offsets o, o + inc1, ... that eager ops would have used), so `get_state()` stays a valid
    checkpoint between replays and resume works on the graph path too.
Per epoch the host does one permutation, one small copy and one sync (the mean loss), as eager does.

The first steps after each (re)capture key are run eagerly on a side stream (cuDNN autotuning, the
optimiser's lazy momentum buffers, autograd's lazy setup must not happen during capture); they are real
training steps, the same function, so nothing is skipped or repeated. A graph is recaptured when Mixup
switches off, when the set of packed trials changes (packing.py), or when the tensors it baked in were
replaced (e.g. an optimiser state loaded after capture).

`capture=False` runs the same static-buffer program eagerly (CPU, tests): on CPU it reproduces
`train_one_epoch` bit for bit, which is how the graph logic is tested without a GPU.
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import torch

from .config import ConfigError, TrialConfig
from .data import TrialData
from .mixup import Mixup
from .schedule import lr_at
from .step import TrainingState, train_step

# Eager steps before a capture; the PyTorch docs use 3 (11 with DDP).
WARMUP_STEPS = 3


def use_cuda_graphs(cfg: TrialConfig, device: torch.device) -> bool:
    """train.cuda_graphs: off -> eager; on -> graphs (CUDA required); auto -> graphs on CUDA for the ResNets."""
    if device.type != "cuda":
        if cfg.train.cuda_graphs == "on":
            raise ConfigError(
                f"train.cuda_graphs=on needs a CUDA device, but the trial runs on {device.type} "
                f"(allowed: auto, on, off; auto falls back to eager off CUDA)"
            )
        return False
    return cfg.graphed_on_cuda


class StaticStep:
    """One trial's training step over fixed buffers: `begin_epoch()`, `steps` x `step()`, `end_epoch()`."""

    def __init__(self, cfg: TrialConfig, data: TrialData, state: TrainingState, mixup: Mixup):
        self.cfg, self.data, self.state, self.mixup = cfg, data, state, mixup
        device = data.train_x.device
        n = data.n_train
        self.batch = min(cfg.train.batch_size, n)
        self.steps = n // self.batch  # the ragged last batch is dropped, as in train_one_epoch
        # float32 is what the fused CUDA SGD reads; on CPU float64 keeps the lr identical to eager's float.
        lr_dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.order = torch.zeros(self.steps, self.batch, dtype=torch.long, device=device)
        self.lr_table = torch.zeros(self.steps, dtype=lr_dtype, device=device)
        self.lr = torch.zeros((), dtype=lr_dtype, device=device)
        self.counter = torch.zeros(1, dtype=torch.long, device=device)
        self.loss_sum = torch.zeros((), device=device)
        self.mixing = False
        self.first_lr = self.last_lr = float(cfg.train.lr)

    def begin_epoch(self) -> None:
        """Eager per-epoch work: the permutation, the lr table, counters; the optimiser reads `self.lr`."""
        t, st = self.cfg.train, self.state
        self.mixing = self.mixup.active_at(st.epoch)
        st.model.train()
        perm = torch.randperm(self.data.n_train, generator=st.data_gen, device=self.order.device)
        self.order.copy_(perm[: self.steps * self.batch].view(self.steps, self.batch))
        lrs = [lr_at(t, st.epoch + s / self.steps) for s in range(self.steps)]
        self.lr_table.copy_(torch.tensor(lrs, dtype=self.lr_table.dtype))
        self.first_lr, self.last_lr = lrs[0], lrs[-1]
        self.counter.zero_()
        self.loss_sum.zero_()
        for group in st.optimizer.param_groups:
            group["lr"] = self.lr

    def step(self) -> None:
        """One training step; only device work, fixed shapes (this is what a graph captures)."""
        idx = self.order.index_select(0, self.counter).view(-1)
        self.lr.copy_(self.lr_table.index_select(0, self.counter).view(()))
        loss = train_step(self.cfg, self.data, self.state, self.mixup, idx, self.mixing)
        self.loss_sum += loss.detach()
        self.counter += 1

    def end_epoch(self) -> tuple[float, float, int]:
        """(mean train loss, lr at the first step, images seen), like train_one_epoch; one host sync."""
        for group in self.state.optimizer.param_groups:
            group["lr"] = self.last_lr  # a float, as the eager loop leaves it (and as checkpoints hold it)
        return float(self.loss_sum / self.steps), self.first_lr, self.steps * self.batch

    def generators(self) -> tuple[torch.Generator, ...]:
        return (self.state.data_gen, self.state.mixup_gen)

    def baked_tensors(self) -> list[torch.Tensor]:
        """Tensors a captured step reads or writes in place; if any is replaced, the graph is stale."""
        st = self.state
        found = [self.data.train_x, self.data.train_y, *st.model.parameters(), *st.model.buffers()]
        for p in st.model.parameters():
            found.extend(v for v in st.optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor))
        return found


def _register_generator(graph: Any, generator: torch.Generator) -> None:
    """Custom generators must be registered before capture in torch 2.4-2.12; later versions register
    them lazily and deprecate this call (then a no-op)."""
    register = getattr(graph, "register_generator_state", None)
    if register is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        register(generator)


class StepGraphs:
    """Runs the steps of one epoch for one or more trials (StaticSteps with equal step counts).

    capture=True (CUDA): warm-up steps eagerly, then one graph that steps every trial once per replay;
    with several trials each runs on its own stream inside the graph so their kernels overlap.
    capture=False: the same steps eagerly, trial after trial (CPU, tests).
    """

    def __init__(self, capture: bool, warmup_steps: int = WARMUP_STEPS, cudnn_benchmark: bool = True):
        if warmup_steps < 1:
            raise ValueError("warmup_steps must be >= 1: the optimiser creates its momentum buffers on the first step")
        self.capture = capture
        self.warmup_steps = warmup_steps
        self.cudnn_benchmark = cudnn_benchmark
        self.captures = 0  # how many graphs were captured (tests, benchmark)
        self._graph: Optional[Any] = None
        self._key: Optional[tuple] = None
        self._held: list[torch.Tensor] = []  # strong refs: the graph's tensors stay alive and comparable
        self._warm = 0
        self._streams: list[Any] = []  # one per packed trial inside the graph
        self._side: Optional[Any] = None  # warm-up stream

    def run(self, programs: Sequence[StaticStep], progress_bar=None) -> None:
        steps = programs[0].steps
        if any(p.steps != steps for p in programs):
            raise ValueError(f"packed trials need equal steps per epoch, got {[p.steps for p in programs]}")
        if not self.capture:
            for _ in range(steps):
                for p in programs:
                    p.step()
                if progress_bar is not None:
                    progress_bar.update(1)
            return
        self._check_key(programs)
        for _ in range(steps):
            if self._graph is None and self._warm < self.warmup_steps:
                self._eager_step(programs)
                self._warm += 1
            else:
                if self._graph is None:
                    self._graph = self._capture(programs)
                self._graph.replay()
            if progress_bar is not None:
                progress_bar.update(1)

    def reset(self) -> None:
        """Drop the graph (and its memory pool); the next run warms up and captures again."""
        self._graph, self._key, self._held, self._warm = None, None, [], 0

    def _check_key(self, programs: Sequence[StaticStep]) -> None:
        key = tuple((id(p), p.mixing) for p in programs)
        stale = key != self._key
        if not stale and self._graph is not None:
            held = [t for p in programs for t in p.baked_tensors()]
            stale = len(held) != len(self._held) or any(a is not b for a, b in zip(held, self._held))
        if stale:
            self.reset()
            self._key = key

    def _eager_step(self, programs: Sequence[StaticStep]) -> None:
        if self.cudnn_benchmark:
            torch.backends.cudnn.benchmark = True  # autotuned here, outside capture; the graph keeps the choice
        if self._side is None:
            self._side = torch.cuda.Stream()
        side = self._side
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for p in programs:
                p.step()
        torch.cuda.current_stream().wait_stream(side)

    def _capture(self, programs: Sequence[StaticStep]) -> Any:
        graph = torch.cuda.CUDAGraph()
        for p in programs:
            for gen in p.generators():
                _register_generator(graph, gen)
        for p in programs:  # free the warm-up gradients outside the capture; the graph allocates its own
            p.state.optimizer.zero_grad(set_to_none=True)
        if len(programs) > 1 and len(self._streams) < len(programs):
            self._streams += [torch.cuda.Stream() for _ in range(len(programs) - len(self._streams))]
        with torch.cuda.graph(graph):
            if len(programs) == 1:
                programs[0].step()
            else:  # fork one stream per trial, join before the capture ends
                main = torch.cuda.current_stream()
                for p, stream in zip(programs, self._streams):
                    stream.wait_stream(main)
                    with torch.cuda.stream(stream):
                        p.step()
                for stream in self._streams[: len(programs)]:
                    main.wait_stream(stream)
        self.captures += 1
        # After warm-up every lazily created tensor (momentum buffers) exists: these are what the graph baked in.
        self._held = [t for p in programs for t in p.baked_tensors()]
        return graph


class GraphedEpochs:
    """A drop-in for `step.train_one_epoch` that keeps its graph across epochs (see the module doc)."""

    def __init__(self, capture: Optional[bool] = None, warmup_steps: int = WARMUP_STEPS):
        self._capture = capture  # None: capture on CUDA, run the static program eagerly elsewhere
        self._warmup_steps = warmup_steps
        self.program: Optional[StaticStep] = None
        self.graphs: Optional[StepGraphs] = None

    def __call__(self, cfg: TrialConfig, data: TrialData, state: TrainingState, mixup: Mixup,
                 progress_bar=None) -> tuple[float, float, int]:
        p = self.program
        if p is None or p.state is not state or p.data is not data or p.mixup is not mixup or p.cfg is not cfg:
            self.program = p = StaticStep(cfg, data, state, mixup)
            capture = data.train_x.is_cuda if self._capture is None else self._capture
            self.graphs = StepGraphs(capture, self._warmup_steps)
        p.begin_epoch()
        self.graphs.run([p], progress_bar)
        return p.end_epoch()
