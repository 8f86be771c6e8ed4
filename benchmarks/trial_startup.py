"""What a trial spends on the sweep's configuration before it trains, on a large grid.

Before the re-layout every trial re-validated the whole spec it was handed (`SweepContext.sweep()`:
pydantic model, every grid value, the grid product up to 20,000 points) to build its own trial config.
Now the driver resolves a `TrialContext` once (sweeps/runner.py: trial_context) and a trial only
validates its own configuration. Both paths are timed here, in one run, on the same grid:

    python benchmarks/trial_startup.py [--seeds 5000]      # quickstart x 5000 seeds = 25,000 trials

Prints one JSON object: grid size, the per-trial cost of each path (median of --repeats), and the
driver's one-off cost of resolving the context.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import statistics
import time

from sweeps.runner import trial_context
from sweeps.spec import load_sweep, validate_sweep


def _median_s(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5000, help="grid.seed values (x 5 stop epochs)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    sweep = load_sweep("quickstart", [f"grid.seed={list(range(args.seeds))}"])
    point = sweep.grid_points()[len(sweep.grid_points()) // 2]
    spec_dict = sweep.to_dict()

    def before() -> None:  # what each trial did: re-validate the spec, then build its config
        validate_sweep(spec_dict, source="sweep spec").trial_config(point)

    start = time.perf_counter()
    context = trial_context(sweep, "sqlite:////tmp/unused.db", "1", "parent")
    resolve_s = time.perf_counter() - start
    print(json.dumps({
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "grid_points": sweep.n_trials,
        "per_trial_before_s": round(_median_s(before, args.repeats), 4),
        "per_trial_after_s": round(_median_s(lambda: context.trial_config(point), args.repeats), 6),
        "driver_resolves_context_once_s": round(resolve_s, 6),
        "context_pickle_bytes": len(pickle.dumps(context)),
    }, indent=2))


if __name__ == "__main__":
    main()
