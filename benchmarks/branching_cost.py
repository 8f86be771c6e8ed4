"""What prefix sharing saves: one stop-epoch grid run with `share_prefix: true` and `false`, in one
process on one embedded Ray (so Ray's start-up is paid once and timed for neither).

Grid: mixup.stop_epoch in {0, T/8, T/4, T/2, 3T/4, null} x seeds {0, 1}; tiny feature-noise trials on
CPU. Prints epochs trained (counted from Ray's results, one row per trained epoch) and wall time for
each way, and their ratios; checks the shared count is exactly T + sum over branches (T - E) + T for
E = 0, per seed.

  python benchmarks/branching_cost.py [--epochs 32] [--concurrent 2] [--workdir DIR] [--plain-first]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def trial(epochs: int) -> dict:
    # ~0.4 s per epoch on one core: long enough that per-trial start-up does not dominate.
    return {
        "seed": 0,
        "data": {"name": "feature_noise", "n_train": 8000, "n_test": 400, "val_size": 0.1},
        "model": {"name": "two_layer_cnn", "width": 128},
        "train": {"epochs": epochs, "batch_size": 10, "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0,
                  "device": "cpu"},
        "mixup": {"alpha": 1.0, "stop_epoch": None},
    }


def spec(name: str, epochs: int, share: bool, concurrent: int) -> dict:
    stops = [0, epochs // 8, epochs // 4, epochs // 2, 3 * epochs // 4, None]
    return {"name": name, "trial": trial(epochs), "grid": {"mixup.stop_epoch": stops, "seed": [0, 1]},
            "metric": "val_acc", "mode": "max", "resources": {"cpu": 1, "gpu": 0},
            "max_concurrent": concurrent, "max_failures": 0, "share_prefix": share,
            "report_interval_s": 0}  # Ray records every trained epoch: result.json lines count them


def epochs_trained(experiment: Path) -> int:
    total = 0
    for result in experiment.glob("trial_*/result.json"):
        total += sum(1 for line in result.read_text().splitlines() if line.strip())
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=32)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--workdir", help="default: a temporary directory, removed afterwards")
    parser.add_argument("--plain-first", action="store_true", help="run the independent sweep first")
    args = parser.parse_args()
    T = args.epochs

    work = Path(args.workdir or tempfile.mkdtemp(prefix="branching_cost_"))
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # embedded Ray on loopback
    import ray

    from sweeps.runner import run_sweep
    from sweeps.spec import validate_sweep

    ray.init(address="local", include_dashboard=False, num_cpus=args.concurrent, log_to_driver=False)
    results = {}
    try:
        # Warm-up (worker processes, imports, the MLflow store), timed for neither way.
        warm = spec("cost_warmup", 2, False, args.concurrent)
        warm["grid"] = {"seed": list(range(args.concurrent))}
        run_sweep(validate_sweep(warm, "warm-up"), tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
                  storage_path=str(work / "ray_results"))
        for share in ((False, True) if args.plain_first else (True, False)):
            name = f"cost_{'shared' if share else 'plain'}"
            sweep = validate_sweep(spec(name, T, share, args.concurrent), "benchmark")
            started = time.perf_counter()
            outcome = run_sweep(sweep, tracking_uri=f"sqlite:///{work / 'mlflow.db'}", storage_path=str(work / "ray_results"))
            wall = time.perf_counter() - started
            assert outcome.exit_code == 0, outcome
            results[share] = (epochs_trained(work / "ray_results" / name), wall)
    finally:
        ray.shutdown()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)

    stops = [T // 8, T // 4, T // 2, 3 * T // 4]
    expected_shared = 2 * (T + sum(T - e for e in stops) + T)
    expected_plain = 2 * 6 * T
    (shared_epochs, shared_wall), (plain_epochs, plain_wall) = results[True], results[False]
    epoch_ratio = shared_epochs / plain_epochs
    wall_ratio = shared_wall / plain_wall
    saving_ratio = (1 - wall_ratio) / (1 - epoch_ratio)
    print(f"grid: stop_epoch {{0, {', '.join(map(str, stops))}, null}} x 2 seeds, T={T}, "
          f"{args.concurrent} trials at a time, {os.cpu_count()} CPUs")
    print(f"{'':16}{'epochs':>8}{'wall s':>10}")
    print(f"{'share_prefix':16}{shared_epochs:>8}{shared_wall:>10.1f}")
    print(f"{'independent':16}{plain_epochs:>8}{plain_wall:>10.1f}")
    print(f"ratio shared/independent: epochs {epoch_ratio:.3f}, wall {wall_ratio:.3f}; "
          f"wall saving = {saving_ratio:.2f}x the epoch saving")
    print(json.dumps({"T": T, "shared_epochs": shared_epochs, "plain_epochs": plain_epochs,
                      "shared_wall_s": round(shared_wall, 1), "plain_wall_s": round(plain_wall, 1),
                      "epoch_ratio": round(epoch_ratio, 4), "wall_ratio": round(wall_ratio, 4),
                      "wall_saving_over_epoch_saving": round(saving_ratio, 3)}))
    ok = shared_epochs == expected_shared and plain_epochs == expected_plain
    if not ok:
        print(f"MISMATCH: expected {expected_shared} shared and {expected_plain} independent epochs", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
