"""The Ray Tune function trainable: one trial = one `mixup_core.run_trial` call (a pack of trials,
`resources.pack`: one `run_packed_trials` call, packed.py).

Ray hands the trainable only the values of the varying keys (e.g. {"mixup.stop_epoch": 5, "seed": 1},
under `grid_point` for grid sweeps); the rest of the trial configuration comes from the
`TrialContext` the driver resolved and bound with `tune.with_parameters` (context.py).
The trial reports to Ray (metrics + checkpoint, for the scheduler, the searcher and restarts) and
to its MLflow child run. On a GPU node Ray sets CUDA_VISIBLE_DEVICES, and `train.device: auto`
picks the GPU Ray assigned.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from ray import tune

from mixup_core import flatten

from ..keys import BRANCH_EPOCH_TAG, BRANCHED_FROM_TAG, GRID_POINT, PACK_KEY, PLANNED_EPOCHS, ROLE_TAG, ROLE_TRUNK
from ..keys import SHARE_GROUP_TAG, SHARE_KEY
from ..ray_compat.quiet_output import quiet_trial_output
from ..ray_compat.surviving_checkpoint import restores_from_surviving_checkpoint
from ..tracking import TrialRun, error_line, find_trial_run
from .context import TrialContext
from .packed import train_pack
from .placement import placement_tags, use_assigned_cpus
from .reporters import ReportPolicy, make_reporter


def trial_params(config: dict[str, Any]) -> dict[str, Any]:
    """The varying keys' values of this trial (grid point, or Optuna's flat suggestion)."""
    return dict(config[GRID_POINT]) if GRID_POINT in config else dict(config)


def _shared_run_name(config: dict[str, Any], name: str) -> str:
    share = config.get(SHARE_KEY)
    if share and share["role"] == "trunk" and not share["is_user_trial"]:
        return f"trunk: {name}"
    return name


def _tag_shared_run(run: TrialRun, config: dict[str, Any], context: TrialContext) -> None:
    """Trunks and branches of prefix sharing (plan/sharing.py) say what they are."""
    share = config.get(SHARE_KEY)
    if not share:
        return
    tags = {SHARE_GROUP_TAG: share["group"]}
    if share["role"] == "trunk" and not share["is_user_trial"]:
        tags[ROLE_TAG] = ROLE_TRUNK  # not a trial of the grid: `best` ignores it
    if share["role"] == "branch":
        trunk = find_trial_run(run.client, context.experiment_id, context.parent_run_id, share["trunk_trial_id"])
        tags[BRANCHED_FROM_TAG] = trunk.info.run_id if trunk is not None else "unknown"
        tags[BRANCH_EPOCH_TAG] = str(share["epoch"])
    run.set_tags(tags)


def _quiet_sigterm_in_finalizers() -> None:
    """When Ray shuts down it SIGTERMs idle trial workers, and Ray's handler raises SystemExit in whatever
    runs at that moment. In a finalizer (a weakref callback, a __del__) Python ignores that exception
    anyway, but prints "Exception ignored in ..." with a traceback, which Ray forwards into the user's
    terminal after the sweep has ended (seen in CI). Nothing is lost; don't print it."""
    default = sys.unraisablehook
    if getattr(default, "mixup_sweep_quiets_sigterm", False):
        return

    def hook(unraisable):
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, SystemExit):
            return
        default(unraisable)

    hook.mixup_sweep_quiets_sigterm = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


# A trial whose checkpoint Ray deleted just before a driver crash resumes from the newest surviving one.
@restores_from_surviving_checkpoint
def train_trial(config: dict[str, Any], context: TrialContext) -> None:
    _quiet_sigterm_in_finalizers()
    quiet_trial_output()
    # torch is imported in the trial process only (the driver imports this module too).
    from mixup_core import latest_checkpoint, read_history, run_trial

    use_assigned_cpus()  # before a pack's trials too
    trial_id = tune.get_context().get_trial_id()
    if PACK_KEY in config:  # several trials in this process
        return train_pack(config, context, trial_id)
    params = trial_params(config)
    cfg = context.trial_config(params)
    run = TrialRun.open(
        context.tracking_uri,
        context.experiment_id,
        context.parent_run_id,
        trial_id,
        _shared_run_name(config, context.run_name(params)),
        flatten(cfg.to_dict()),
    )
    run.set_tags(placement_tags(cfg.train.device))
    _tag_shared_run(run, config, context)
    # Scratch space on the trial's node; what must survive goes to Ray's storage (checkpoints) and
    # MLflow (metrics, artifacts). Named by trial id: with reused actors the working directory is shared.
    out_dir = Path(os.getcwd()) / f"trial_{trial_id}"
    try:
        with contextlib.ExitStack() as stack:
            policy = ReportPolicy(context.report_interval_s, context.rung_epochs | {cfg.train.epochs})
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
        # The searcher (Optuna) and the scheduler must see the worst value, not the last good epoch's.
        tune.report({"epoch": rows[-1]["epoch"] if rows else 0, context.metric: context.worst_value,
                     PLANNED_EPOCHS: cfg.train.epochs})
    elif reporter.reports == 0:
        # Ray requires the sweep's metric in a trial's results: a trial restored at its last epoch
        # (nothing left to train) repeats its final result.
        tune.report({**rows[-1], PLANNED_EPOCHS: cfg.train.epochs})

