"""The fixed cost of a sweep on the embedded default (local Ray, a new SQLite MLflow store): everything a
`mixup-sweep run` spends that is not its trials' span, part by part, for one or several source trees
measured alternately in one run.

The sweep: the quickstart's trial, 2 epochs, seeds 0 and 1 (2 trials, 2 at a time). Each round runs
`python fixed_cost.py --probe -- run spec.yaml` in a fresh directory with PYTHONPATH=<tree>: the probe
is `mixup-sweep` itself (sweeps.cli.main) with a timestamp taken at a few functions of the driver, so
that the parts are measured, not inferred:

  interpreter + CLI imports   process start (Popen) -> sweeps.cli imported
  to ray.init / MLflow        CLI imported -> the driver calls start_ray (spec, preflight, lease, imports)
  ray.init                    start_ray's duration (MLflow's set-up runs beside it in a thread)
  MLflow set-up               client_for (the mlflow import, the new store) -> the parent run's metrics
  to first trial              Tuner.fit called -> the first trial's MLflow run starts (Ray Tune set-up,
                              the first trial worker process, its imports, its MLflow run)
  trials' span                first trial run start -> last trial run end (MLflow's times): not fixed cost
  to fit's return             last trial run end -> Tuner.fit returns
  selection                   print_selection_after_sweep (selection, report, plots, written to MLflow)
  exit                        cli.main returns -> the driver process has exited, in three: threads still running
                              (joined by the interpreter), atexit handlers (Ray's shutdown, unless it ran
                              already: after the trials, before the selection), the interpreter's own exit

Fixed cost = wall - the trials' own work (training_s: each trial's run_trial timed warm in the
benchmark's own process, one thread, the longer of the two, since they run side by side): the same
subtraction for every tree. (wall - trials' span is printed too; it moves with where a tree does its
imports: torch imports torch._dynamo at the first optimizer step, inside the span unless preloaded.)
Prints one JSON object (medians over --rounds per tree); never asserts.

    python benchmarks/fixed_cost.py --tree before=/work/old --tree after=. --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

MARKS = Path(os.environ.get("FIXED_COST_MARKS", "/dev/null"))


def _mark(name: str) -> None:
    with MARKS.open("a") as f:
        f.write(f"{name} {time.time():.6f}\n")


def _wrap(owner, attr: str, before: str | None, after: str | None, once: bool = False) -> None:
    original = getattr(owner, attr)
    seen = []

    def wrapper(*args, **kwargs):
        if before and not (once and seen):
            _mark(before)
        try:
            return original(*args, **kwargs)
        finally:
            if after and not (once and seen):
                _mark(after)
            seen.append(1)

    setattr(owner, attr, wrapper)


def probe(argv: list[str]) -> int:
    """mixup-sweep's main, timestamps taken around the driver's phases (nothing else changed)."""
    import importlib
    import sys as _sys

    import atexit

    atexit.register(_mark, "atexit_last")  # registered first: runs last
    cli = importlib.import_module("sweeps.cli")
    _mark("cli_imported")
    if hasattr(cli, "_exit_after_sweep"):  # where main would return, in a tree that leaves from there
        _wrap(cli, "_exit_after_sweep", "main_returned", None)

    hooks = {  # wrap a module's functions once it is imported (if ever)
        "sweeps.runner": lambda m: _wrap(m, "start_ray", "ray_init_start", "ray_init_end", once=True),
        "sweeps.tracking": lambda m: (_wrap(m, "client_for", "mlflow_start", None, once=True),
                                      _wrap(m, "start_sweep_run", None, "parent_run_created", once=True)),
        "sweeps.monitor.progress": lambda m: _wrap(m, "record_driver", None, "mlflow_ready", once=True),
        "sweeps.best.command": lambda m: _wrap(m, "print_selection_after_sweep", "selection_start", "selection_end"),
        "ray.tune": lambda m: _wrap(m.Tuner, "fit", "fit_start", "fit_end"),
        # after Ray's own atexit shutdown is registered, so this one runs before it
        "ray._private.worker": lambda m: atexit.register(_mark, "atexit_first"),
    }

    def ready(name: str) -> bool:
        module = _sys.modules.get(name)
        return module is not None and not getattr(module.__spec__, "_initializing", False)

    import builtins

    real_import = builtins.__import__

    def importing(name, *args, **kwargs):
        module = real_import(name, *args, **kwargs)
        for n in [n for n in hooks if ready(n)]:
            hooks.pop(n)(_sys.modules[n])
        return module

    for n in [n for n in hooks if ready(n)]:
        hooks.pop(n)(_sys.modules[n])
    builtins.__import__ = importing
    _sys.argv = ["mixup-sweep", *argv]
    try:
        return cli.main()
    finally:
        _mark("main_returned")



def sweep_spec(repo: Path) -> dict:
    spec = yaml.safe_load((repo / "sweeps" / "specs" / "quickstart.yaml").read_text())
    spec["name"] = "fixed_cost"
    spec["trial"]["train"]["epochs"] = 2
    spec["grid"] = {"seed": [0, 1]}
    return spec


def training_time(spec: dict) -> float:
    """The trials' own work, the same for every tree: each trial's run_trial in this process, warm
    (imports, torch's lazy modules and the data path done by a first run), one thread as Ray gives a
    1-CPU trial; the two run side by side in the sweep, so the longer of the two counts."""
    import torch

    from mixup_core import run_trial, validate_trial_config

    torch.set_num_threads(1)
    times = []
    for seed in [0, *spec["grid"]["seed"]]:  # the first one warms up
        cfg = validate_trial_config({**spec["trial"], "seed": seed}, source="fixed_cost")
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            run_trial(cfg, Path(out))
            times.append(time.perf_counter() - start)
    return max(times[1:])


def one_round(tree: Path, spec: dict, training_s: float) -> dict:
    work = Path(tempfile.mkdtemp(prefix="fixed-cost-"))
    (work / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    marks = work / "marks.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(tree), FIXED_COST_MARKS=str(marks))
    # Output to files, not pipes: Ray's processes inherit them and may outlive the driver by a moment,
    # which a pipe's reader would wait for; a user's shell waits for the driver alone.
    with (work / "out.txt").open("w") as out, (work / "err.txt").open("w") as err:
        start = time.time()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--probe", "--", "run", "spec.yaml"],
                                cwd=work, env=env, stdout=out, stderr=err)
        rc = proc.wait()
        end = time.time()
    if rc != 0:
        sys.exit(f"the sweep in {work} failed ({rc}):\n{(work / 'err.txt').read_text()[-3000:]}")
    t = {}
    for line in marks.read_text().splitlines():
        name, at = line.split()
        t.setdefault(name, float(at))
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("fixed_cost")
    runs = client.search_runs([exp.experiment_id], "tags.`mixup_sweep.role` = 'trial'")
    first = min(r.info.start_time for r in runs) / 1000
    last = max(r.info.end_time for r in runs) / 1000
    wall = end - start
    parts = {
        "interpreter + CLI imports": t["cli_imported"] - start,
        "to ray.init / MLflow": t["ray_init_start"] - t["cli_imported"],
        "ray.init": t["ray_init_end"] - t["ray_init_start"],
        "MLflow set-up (beside ray.init)": t["mlflow_ready"] - t["mlflow_start"],
        "ray.init end -> fit": t["fit_start"] - t["ray_init_end"],
        "to first trial": first - t["fit_start"],
        "trials' span": last - first,
        "to fit's return": t["fit_end"] - last,
        "fit -> selection (Ray's shutdown, where it runs there)": t["selection_start"] - t["fit_end"],
        "selection": t["selection_end"] - t["selection_start"],
        "selection -> main returns": t["main_returned"] - t["selection_end"],
        "exit: threads still running": t["atexit_first"] - t["main_returned"],
        "exit: atexit (Ray's shutdown, where it runs there)": t["atexit_last"] - t["atexit_first"],
        "exit: interpreter": end - t["atexit_last"],
    }
    parts = {k: round(v, 2) for k, v in parts.items()}
    return {"wall_s": round(wall, 2), "fixed_cost_s": round(wall - training_s, 2),
            "wall_minus_span_s": round(wall - (last - first), 2), "parts_s": parts,
            "trials": len(runs), "work": str(work)}


def main() -> None:
    if "--probe" in sys.argv:
        argv = sys.argv[sys.argv.index("--") + 1:]
        sys.exit(probe(argv))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="a source tree to time (PYTHONPATH); several: measured alternately (default: this one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--wait-load", type=float, default=None, metavar="L",
                        help="before each sweep, wait (up to 10 min) until the 1-minute load average is below L")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this", str(here))]
    spec = sweep_spec(here)
    training_s = training_time(spec)
    results: dict[str, list[dict]] = {label: [] for label, _ in trees}
    for _ in range(args.rounds):
        for label, path in trees:
            if args.wait_load is not None:
                deadline = time.time() + 600
                while os.getloadavg()[0] >= args.wait_load and time.time() < deadline:
                    time.sleep(5)
            load = round(os.getloadavg()[0], 2)
            results[label].append({**one_round(Path(path).resolve(), spec, training_s), "load_at_start": load})
            print(label, json.dumps(results[label][-1]), file=sys.stderr, flush=True)
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "rounds": args.rounds,
               "training_s": round(training_s, 2), "trees": {}}
    for label, rounds in results.items():
        parts = {k: round(statistics.median(r["parts_s"][k] for r in rounds), 2) for k in rounds[0]["parts_s"]}
        summary["trees"][label] = {
            "wall_s": round(statistics.median(r["wall_s"] for r in rounds), 2),
            "fixed_cost_s": round(statistics.median(r["fixed_cost_s"] for r in rounds), 2),
            "fixed_cost_rounds_s": [r["fixed_cost_s"] for r in rounds],
            "wall_minus_span_s": round(statistics.median(r["wall_minus_span_s"] for r in rounds), 2),
            "load_at_start": [r["load_at_start"] for r in rounds],
            "parts_s (medians)": parts,
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
