"""The driver's overhead per trial on a sweep of many short trials: N trials of about one second each
(the feature-noise model, epochs calibrated here with one `run_trial`), 2 at a time on the embedded
default (local Ray, SQLite MLflow), as one `mixup-sweep run`:

    python benchmarks/trial_overhead.py                 # 500 trials, ~5 minutes on 2 cores
    python benchmarks/trial_overhead.py --trials 40     # a quick look

Overhead per trial per slot = (span x slots - sum of the trials' own training time) / trials, where
span = first trial run's start -> last trial run's end (MLflow's run times: the sweep's fixed start-up
and its tail are excluded, they are `sweep_overhead.py`'s business) and a trial's own time is its
`wall_s` (run_trial's clock: training, evaluation and checkpoints). Everything else a slot spends per
trial is the driver's: Ray scheduling, the trial's MLflow run, reports, checkpoint persistence.
Ray's scalability guide measures about 0.14 s per trial. Prints JSON; never asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
TRIAL = {
    "seed": 0,
    "data": {"name": "feature_noise", "n_train": 2000, "n_test": 400, "val_size": 0.1},
    "model": {"name": "two_layer_cnn"},
    "train": {"epochs": 10, "batch_size": 50, "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0, "device": "cpu"},
    "mixup": {"alpha": 1.0, "stop_epoch": None},
}


def calibrate_epochs(target_s: float) -> int:
    """Epochs for one trial of about `target_s` of run_trial's own time (measured, one thread)."""
    from mixup_core import run_trial, validate_trial_config

    cfg = validate_trial_config({**TRIAL, "train": {**TRIAL["train"], "epochs": 5}}, source="calibration")
    with tempfile.TemporaryDirectory() as out:
        wall = run_trial(cfg, Path(out))["wall_s"]
    return max(1, round(target_s / (wall / 5)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--trial-s", type=float, default=1.0, help="target training time of one trial")
    parser.add_argument("--slots", type=int, default=2, help="max_concurrent (1 CPU each)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"  # as each Ray trial gets (1 CPU)
    epochs = calibrate_epochs(args.trial_s)
    work = Path(tempfile.mkdtemp(prefix="trial-overhead-"))
    spec = {"name": "overhead", "trial": {**TRIAL, "train": {**TRIAL["train"], "epochs": epochs}},
            "grid": {"seed": list(range(args.trials))}, "resources": {"cpu": 1, "gpu": 0},
            "max_concurrent": args.slots, "max_failures": 0, "report_interval_s": 1.0}
    (work / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    start = time.time()
    proc = subprocess.run([str(BIN / "mixup-sweep"), "run", "spec.yaml"], cwd=work, env=env,
                          capture_output=True, text=True)
    wall = time.time() - start
    if proc.returncode != 0:
        sys.exit(f"the sweep failed ({proc.returncode}):\n{proc.stderr[-3000:]}")

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("overhead")
    runs = client.search_runs([exp.experiment_id], "tags.`mixup_sweep.role` = 'trial'", max_results=50_000)
    first = min(r.info.start_time for r in runs) / 1000
    last = max(r.info.end_time for r in runs) / 1000
    own = sum(r.data.metrics.get("wall_s", 0.0) for r in runs)
    span = last - first
    print(json.dumps({
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "trials": len(runs), "slots": args.slots, "epochs_per_trial": epochs,
        "trial_own_s_mean": round(own / len(runs), 3),
        "span_s": round(span, 1), "sweep_wall_s": round(wall, 1),
        "overhead_per_trial_per_slot_s": round((span * args.slots - own) / len(runs), 3),
        "work_dir": str(work),
    }, indent=2))


if __name__ == "__main__":
    main()
