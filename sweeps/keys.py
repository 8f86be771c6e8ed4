"""Every name that two parts of the service must agree on, in one place: the keys of a Ray trial's
config (written by the driver's searcher, read by the trial) and the MLflow tags, artifacts and metric
names of the layout design.md fixes (written by the driver and the trials, read by `best`, `status`,
`resume` and the UI)."""

from __future__ import annotations

# -- Ray trial config ------------------------------------------------------------------------------
GRID_POINT = "grid_point"  # grid sweeps: {"grid_point": {dotted key: value}, ...}; Optuna's is flat
SLOT_KEY = "plan_slot"  # the trial's index in the plan (stable for a spec): what `resume` reconciles
SHARE_KEY = "share"  # prefix sharing: {"role": trunk|branch, "group", ...} (plan/sharing.py)
PACK_KEY = "pack"  # a packed trial: its members' grid points, in member order (plan/packs.py)
PACK_MEMBER_DIR = "member_{}"  # a pack's Ray checkpoint: one directory per member's checkpoint
PLANNED_EPOCHS = "planned_epochs"  # added to every result for Ray's scheduler, never to MLflow

# -- trial configuration keys the service itself reads ---------------------------------------------
SEED_KEY = "seed"
STOP_EPOCH_KEY = "mixup.stop_epoch"
TEST_ACC = "test_acc"

# -- MLflow tags -------------------------------------------------------------------------------------
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# On the experiment: what kind MLflow's UI should take it for (training runs, not GenAI traces).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
ROLE_TAG = "mixup_sweep.role"  # sweep | trial | trunk
STORAGE_TAG = "mixup_sweep.storage"  # parent: the Ray experiment path (how `resume` finds the run)
TRIAL_ID_TAG = "mixup_sweep.trial_id"  # child: Ray's trial id ("<id>-<k>" for member k of a pack)
RAY_TRIAL_TAG = "mixup_sweep.ray_trial_id"  # child: the Ray trial that trains it (its pack's)
ERROR_TAG = "mixup_sweep.error"
STOPPED_EARLY_TAG = "mixup_sweep.stopped_early"
TRIALS_FAILED_TAG = "mixup_sweep.trials_failed"
PACK_MEMBER_TAG = "mixup_sweep.pack_member"  # "k/N": member k of a pack of N
SHARE_GROUP_TAG = "mixup_sweep.share_group"
BRANCHED_FROM_TAG = "mixup_sweep.branched_from"  # a branch: its trunk's run id
BRANCH_EPOCH_TAG = "mixup_sweep.branch_epoch"
NODE_TAG = "mixup_sweep.node"
NODE_ID_TAG = "mixup_sweep.node_id"
# child: every attempt of the trial, a JSON list of {"attempt", "node_id", "from_epoch", "from"}: where it
# ran and what it started from ("start", a Ray "checkpoint", or its trunk's "branch_point").
ATTEMPTS_TAG = "mixup_sweep.attempts"
DEVICE_TAG = "mixup_sweep.device"
CPU_THREADS_TAG = "mixup_sweep.cpu_threads"  # torch's CPU threads in the trial (OMP_NUM_THREADS: its CPUs)
GPU_IDS_TAG = "mixup_sweep.gpu_ids"
METRIC_TAG = "mixup_sweep.metric"  # older parent runs: the selection metric and mode as tags
MODE_TAG = "mixup_sweep.mode"
# written by `best` onto the parent run
BEST_STOP_EPOCH_TAG = "mixup_sweep.best_stop_epoch"
BEST_CONFIG_TAG = "mixup_sweep.best_config"
SELECTION_METRIC_TAG = "mixup_sweep.selection_metric"
SELECTION_MODE_TAG = "mixup_sweep.selection_mode"
SELECTION_WITHIN_NOISE_TAG = "mixup_sweep.selection_within_noise"
SELECTION_EXCLUDED_TAG = "mixup_sweep.selection_excluded"

ROLE_SWEEP, ROLE_TRIAL, ROLE_TRUNK = "sweep", "trial", "trunk"
# a submitted sweep's parent run: the Ray job that drives it, and where it was submitted
JOB_ID_TAG = "mixup_sweep.job_id"
JOB_ADDRESS_TAG = "mixup_sweep.job_address"
DRIVER_HOST_TAG = "mixup_sweep.driver_host"

# -- live progress on the parent run (metrics; sweeps/monitor/progress.py writes, status reads) -----
TRIALS_TOTAL = "trials_total"
TRIALS_FINISHED = "trials_finished"
TRIALS_RUNNING = "trials_running"
TRIALS_FAILED = "trials_failed"
EPOCHS_DONE = "epochs_done"
EPOCHS_TOTAL = "epochs_total"
PROGRESS = "progress"  # epochs_done / epochs_total, 0..1
HEARTBEAT = "driver_heartbeat"  # unix time of the driver's last progress update

# -- environment of a submitted driver (sweeps/jobs/submit.py sets, runner.py records) ---------------
JOB_ID_ENV = "MIXUP_SWEEP_JOB_ID"
JOB_ADDRESS_ENV = "MIXUP_SWEEP_JOB_ADDRESS"

# -- artifacts -------------------------------------------------------------------------------------
SPEC_ARTIFACT = "spec.yaml"  # parent run: the resolved spec, what `resume` reloads
