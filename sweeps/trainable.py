"""The Ray Tune function trainable: one trial = one `mixup_core.trial.run_trial` call (a pack of trials,
`resources.pack`: one `run_packed_trials` call, packed_trainable.py).

Ray hands the trainable only the values of the varying keys (e.g. {"mixup.stop_epoch": 5, "seed": 1},
under `grid_point` for grid sweeps); the rest of the trial configuration comes from the sweep context
bound with `tune.with_parameters`.
The trial reports to Ray (metrics + checkpoint, for the scheduler, the searcher and restarts) and
to its MLflow child run. On a GPU node Ray sets CUDA_VISIBLE_DEVICES, and `train.device: auto`
picks the GPU Ray assigned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ray import tune

from mixup_core import flatten

from .checkpoint_recovery import RestoreFromSurvivingCheckpoint
from .spec import Sweep, validate_sweep
from .tracking import TrialRun, error_line


GRID_POINT = "grid_point"  # grid sweeps: Ray's config is {"grid_point": {dotted key: value}}
PLANNED_EPOCHS = "planned_epochs"  # added to every result for Ray (the scheduler), not to MLflow


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The varying keys' values of this trial (grid point, or Optuna's flat suggestion)."""
    return dict(config[GRID_POINT]) if GRID_POINT in config else dict(config)


@dataclass(frozen=True)
class SweepContext:
    """What every trial needs from the driver (small and picklable)."""

    spec: dict[str, Any]  # the resolved spec (Sweep.to_dict())
    tracking_uri: str  # absolute
    experiment_id: str
    parent_run_id: str

    def sweep(self) -> Sweep:
        return validate_sweep(self.spec, source="sweep spec")


@dataclass(frozen=True)
class ReportPolicy:
    """Which epochs reach Ray. Every result costs the trial a blocking round trip and the driver CPU
    time (milliseconds each: more than a small model's epoch), so Ray gets at most one per
    `interval_s`, plus every epoch it needs: checkpoints (restarts, branch points), ASHA's rungs
    and the last epoch. MLflow gets every epoch either way."""

    interval_s: float = 0.0
    required_epochs: frozenset[int] = frozenset()

    def due(self, epoch: int, has_checkpoint: bool, seconds_since_last: float) -> bool:
        return has_checkpoint or epoch in self.required_epochs or seconds_since_last >= self.interval_s


class RayReporter:
    """mixup_core's Reporter for a Ray trial: restores from Ray's checkpoint; reports to Ray as its
    `ReportPolicy` says and, at each checkpoint (and each ASHA rung, where the trial may be stopped),
    first logs the epochs kept since the previous flush to MLflow in one batch (TrialRun.flush)."""

    def __init__(self, run: TrialRun, stack: contextlib.ExitStack, planned_epochs: int,
                 policy: ReportPolicy = ReportPolicy()):
        self.run = run
        self._stack = stack
        self.planned_epochs = planned_epochs
        self.policy = policy
        self.reports = 0
        self._last_report = float("-inf")

    def checkpoint_to_restore(self) -> Optional[Path]:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        # Local storage: the directory itself; remote storage: downloaded, kept until the trial ends.
        return Path(self._stack.enter_context(checkpoint.as_directory()))

    def report(self, metrics: dict[str, Any], checkpoint_dir: Optional[Path]) -> None:
        # MLflow before Ray's checkpoint: a crash before Ray persists it re-runs epochs that are already
        # logged (and skipped), whereas the other order would leave a hole in the history. Epochs after
        # the last checkpoint are re-trained after a crash, and logged then.
        self.run.add_epoch(metrics)
        epoch = int(metrics["epoch"])
        now = time.monotonic()
        if not self.policy.due(epoch, checkpoint_dir is not None, now - self._last_report):
            return
        if checkpoint_dir is not None or epoch in self.policy.required_epochs:
            self.run.flush()  # a rung is where a scheduler may stop the trial: its history is complete there
        result = {**metrics, PLANNED_EPOCHS: self.planned_epochs}
        if checkpoint_dir is None:
            tune.report(result)
        else:
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))
        self._last_report = now
        self.reports += 1


def run_name(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "trial"


def placement_tags(device_choice: str) -> dict[str, str]:
    """Where this attempt runs: the node, the GPUs Ray assigned (it sets CUDA_VISIBLE_DEVICES to them)
    and the device the trial will train on (`train.device: auto` picks the assigned GPU)."""
    import ray

    from mixup_core import resolve_device

    context = ray.get_runtime_context()
    gpus = context.get_accelerator_ids().get("GPU", [])
    return {
        "mixup_sweep.node": ray.util.get_node_ip_address(),
        "mixup_sweep.node_id": context.get_node_id(),
        "mixup_sweep.device": str(resolve_device(device_choice)),
        "mixup_sweep.gpu_ids": ",".join(map(str, gpus)) or "none",
    }


def _quiet_sigterm_in_finalizers() -> None:
    """When Ray shuts down it SIGTERMs idle trial workers, and Ray's handler raises SystemExit in whatever
    runs at that moment. In a finalizer (a weakref callback, a __del__) Python ignores that exception
    anyway, but prints "Exception ignored in ..." with a traceback, which Ray forwards into the user's
    terminal after the sweep has ended (seen in CI). Nothing is lost; don't print it."""
    import sys

    default = sys.unraisablehook
    if getattr(default, "_mixup_sweep", False):
        return

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
            return
        default(unraisable)

    hook._mixup_sweep = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def train_trial(config: dict[str, Any], context: SweepContext) -> None:
    _quiet_sigterm_in_finalizers()
    from mixup_core import latest_checkpoint, read_history
    from mixup_core import run_trial

    from .branching import make_reporter, shared_run_name, tag_shared_run
    from .packed_trainable import train_pack
    from .packs import PACK_KEY
    from .search import asha_rung_epochs

    trial_id = tune.get_context().get_trial_id()
    if PACK_KEY in config:  # several trials in this process
        return train_pack(config, context, trial_id)
    params = trial_params(config)
    sweep = context.sweep()
    cfg = sweep.trial_config(params)
    run = TrialRun.open(
        context.tracking_uri,
        context.experiment_id,
        context.parent_run_id,
        trial_id,
        shared_run_name(config, run_name(params)),
        flatten(cfg.to_dict()),
    )
    run.set_tags(placement_tags(cfg.train.device))
    tag_shared_run(run, config, context.experiment_id, context.parent_run_id)  # trunks and branches
    # Scratch space on the trial's node; what must survive goes to Ray's storage (checkpoints) and
    # MLflow (metrics, artifacts). Named by trial id: with reused actors the working directory is shared.
    out_dir = Path(os.getcwd()) / f"trial_{trial_id}"
    try:
        with contextlib.ExitStack() as stack:
            policy = ReportPolicy(sweep.spec.report_interval_s, asha_rung_epochs(sweep) | {cfg.train.epochs})
            reporter = make_reporter(config, run, stack, cfg.train.epochs, policy)
            summary = run_trial(cfg, out_dir, reporter)
            run.flush()  # a diverged trial stops between checkpoints
    except Exception as e:  # recorded, then re-raised for Ray's retry logic
        run.finish("FAILED", error_line(e))
        raise
    # SystemExit / KeyboardInterrupt: Ray stopping the trial (Ctrl-C, a scheduler): not a failure; the
    # driver marks the run KILLED, or FINISHED with mixup_sweep.stopped_early.
    rows = read_history(out_dir / "metrics.jsonl")
    diverged = run.end(summary, out_dir, latest_checkpoint(out_dir / "checkpoints"))
    shutil.rmtree(out_dir, ignore_errors=True)  # all of it is in Ray's storage and MLflow now

    # Final results for Ray only, after MLflow is complete (a scheduler may stop a trial at any report).
    if diverged:
        # The searcher (Optuna) and the scheduler must see the worst value, not the last good epoch's;
        # and not NaN, which Optuna refuses (its trial would stay RUNNING for ever).
        worst = float("-inf") if context.spec["mode"] == "max" else float("inf")
        tune.report({"epoch": rows[-1]["epoch"] if rows else 0, context.spec["metric"]: worst,
                     PLANNED_EPOCHS: cfg.train.epochs})
    elif reporter.reports == 0:
        # Ray requires the sweep's metric in a trial's results: a trial restored at its last epoch
        # (nothing left to train) repeats its final result.
        tune.report({**rows[-1], PLANNED_EPOCHS: cfg.train.epochs})


# Ray builds the trial's actor class from the function; this mixin lets a trial whose checkpoint Ray
# deleted just before a driver crash resume from the newest surviving one (checkpoint_recovery.py).
train_trial.__mixins__ = (RestoreFromSurvivingCheckpoint,)
