"""One trial, read top to bottom: data and model on the device, Mixup for epochs [0, E), standard
training after, evaluation and a full checkpoint every epoch.

`run_trial(cfg, out_dir, reporter)` is the whole API the sweep layer needs (see reporting.py).
On CPU a trial resumed from any checkpoint reproduces the uninterrupted metrics exactly: the state
holds the model, the optimiser, the epoch and every generator, and the schedule is a pure function
of progress.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from .checkpoint import (
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    write_history,
)
from .config import TrialConfig, dump_yaml
from .datasets import TrialData, build_dataset
from .metrics import classification_metrics
from .mixup import Mixup, mixup_cross_entropy
from .models import build_model
from .reporting import LocalReporter, Reporter
from .schedule import lr_at

# Distinct, fixed offsets so each stream is independent of the others for the same seed.
_STREAMS = {"init": 0, "data": 1, "mixup": 2}


def stream_seed(seed: int, stream: str) -> int:
    return seed * 1_000_003 + 101 * _STREAMS[stream] + 17


def resolve_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from .config import ConfigError

            raise ConfigError("train.device=cuda but no CUDA device is available (use auto or cpu)")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def autocast_context(precision: str, device: torch.device):
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        # No cast cache: every weight is cast once per step anyway (used once in the forward), and the
        # cache's tensors outliving a step are what PyTorch warns about under CUDA-graph capture.
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False)
    return nullcontext()


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


def select_epoch_trainer(cfg: TrialConfig, device: torch.device):
    """`train_one_epoch` (eager), or on CUDA a trainer with the same signature that replays the step as
    a CUDA graph (train.cuda_graphs; see graphed_step.py)."""
    from .graphed_step import GraphedEpochs, use_cuda_graphs

    return GraphedEpochs() if use_cuda_graphs(cfg, device) else train_one_epoch


@torch.no_grad()
def predict(cfg: TrialConfig, data: TrialData, model: nn.Module, x_all: torch.Tensor) -> torch.Tensor:
    model.eval()
    device = x_all.device
    outs = []
    for start in range(0, x_all.shape[0], cfg.train.eval_batch_size):
        x = data.prepare_eval(x_all[start:start + cfg.train.eval_batch_size], None)
        if device.type == "cuda" and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast_context(cfg.train.precision, device):
            outs.append(model(x).float())
    return torch.cat(outs)


def evaluate(cfg: TrialConfig, data: TrialData, model: nn.Module) -> dict[str, float]:
    results: dict[str, torch.Tensor] = {}
    if data.val_x is not None:
        for k, v in classification_metrics(predict(cfg, data, model, data.val_x), data.val_y).items():
            results[f"val_{k}"] = v
    logits = predict(cfg, data, model, data.test_x)
    for k, v in classification_metrics(logits, data.test_y).items():
        results[f"test_{k}"] = v
    correct = (logits.argmax(dim=1) == data.test_y).float()
    for name, mask in data.test_groups.items():
        results[f"test_acc_{name}"] = correct[mask].mean() if bool(mask.any()) else torch.tensor(float("nan"))
    keys = list(results)
    values = torch.stack([results[k].float().to(logits.device) for k in keys]).tolist()  # one sync
    return dict(zip(keys, values))


def feature_learning(data: TrialData, model: nn.Module) -> dict[str, float]:
    if not data.features:
        return {}
    from .feature_noise import feature_measures

    return feature_measures(model, data.features)


def summarize(history: list[dict[str, Any]], epochs: int, wall_s: float, status: str = "finished",
              error: Optional[str] = None) -> dict[str, Any]:
    has_val = bool(history) and "val_acc" in history[0]
    best = max(history, key=lambda r: (r["val_acc"], -r["epoch"])) if has_val else (history[-1] if history else None)
    return {
        "best_epoch": best["epoch"] if best else None,
        "best_val_acc": best["val_acc"] if (best and has_val) else None,
        "test_acc_at_best": best["test_acc"] if best else None,
        "final_test_acc": history[-1]["test_acc"] if history else None,
        "epochs": len(history),
        "planned_epochs": epochs,
        "wall_s": round(wall_s, 3),
        "status": status,
        "error": error,
    }


def checkpoint_due(cfg: TrialConfig, reporter: Reporter, epoch: int, since_last_s: float) -> bool:
    """Checkpoint after `epoch` (1-based)? Which epochs get one never changes the metrics."""
    t = cfg.train
    if epoch >= t.epochs or epoch in t.keep_epochs or since_last_s >= t.checkpoint_interval_s:
        return True
    needs = getattr(reporter, "needs_checkpoint", None)
    return bool(needs and needs(epoch))


def run_trial(cfg: TrialConfig, out_dir: Path, reporter: Optional[Reporter] = None,
              progress: bool = False) -> dict[str, Any]:
    """Train one trial to the end (or resume it), writing config.yaml, metrics.jsonl, summary.json
    and checkpoints/ under out_dir. Returns the summary."""
    out_dir = Path(out_dir)
    device = resolve_device(cfg.train.device)
    train_epoch = select_epoch_trainer(cfg, device)  # eager or CUDA graphs; a bad choice fails here
    data = build_dataset(cfg.data, cfg.seed, device)  # bad data fails here, before anything is written
    out_dir.mkdir(parents=True, exist_ok=True)
    reporter = reporter or LocalReporter(out_dir)
    config_yaml = dump_yaml(cfg)
    (out_dir / "config.yaml").write_text(config_yaml)
    ckpt_root = out_dir / "checkpoints"

    state = new_state(cfg, data, device)
    mixup = Mixup(cfg.mixup)
    history: list[dict[str, Any]] = []

    restore = reporter.checkpoint_to_restore()
    if restore is not None:
        saved, history = load_checkpoint(restore)
        state.load_dict(saved)
        history = history[: state.epoch]
    write_history(out_dir / "metrics.jsonl", history)  # drop epochs after the checkpoint, if any
    (out_dir / "summary.json").unlink(missing_ok=True)

    epochs = cfg.train.epochs
    bars = _progress_bars(progress, epochs, state.epoch, data, cfg)
    status, error = "finished", None
    started = time.perf_counter() - state.elapsed_s
    last_checkpoint = time.perf_counter()
    with (out_dir / "metrics.jsonl").open("a") as log:
        while state.epoch < epochs:
            epoch_start = time.perf_counter()
            inner = bars.inner(state.epoch) if bars else None
            mixing = mixup.active_at(state.epoch)
            train_loss, lr, seen = train_epoch(cfg, data, state, mixup, inner)
            if inner is not None:
                inner.close()
            if device.type == "cuda":
                torch.cuda.synchronize()
            train_s = time.perf_counter() - epoch_start
            if not math.isfinite(train_loss):
                status, error = "diverged", f"diverged at epoch {state.epoch + 1} (train loss {train_loss})"
                break
            row: dict[str, Any] = {"epoch": state.epoch + 1, "mixup_active": int(mixing), "lr": lr,
                                   "train_loss": train_loss}
            row.update(evaluate(cfg, data, state.model))
            row.update(feature_learning(data, state.model))
            state.epoch += 1
            state.elapsed_s = time.perf_counter() - started
            row["images_per_s"] = seen / max(train_s, 1e-9)
            row["elapsed_s"] = state.elapsed_s
            history.append(row)
            ckpt = None
            if checkpoint_due(cfg, reporter, state.epoch, time.perf_counter() - last_checkpoint):
                ckpt = save_checkpoint(ckpt_root, state.epoch, state.to_dict(), history, config_yaml)
                last_checkpoint = time.perf_counter()
            log.write(json.dumps(row) + "\n")
            log.flush()
            reporter.report(row, ckpt)
            if ckpt is not None:
                prune_checkpoints(ckpt_root, cfg.train.keep_checkpoints, cfg.train.keep_epochs)
            if bars:
                bars.epoch_done(row)
    if bars:
        bars.close()
    summary = summarize(history, epochs, time.perf_counter() - started, status, error)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


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
