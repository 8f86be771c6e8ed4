"""What a sweep costs on top of its trials: the same N small trials run back to back with `mixup-train`
(one process each, the way a user would) and as one `mixup-sweep run` with 2 concurrent trials, in one run.

Target (the issue): on 2 cores, the sweep's wall time <= 0.75 x the back-to-back total, i.e. Ray and
MLflow must not eat the parallelism of running 2 trials at once.

The trials: the bundled feature_noise configuration (--config) with mixup.stop_epoch in {0, 30%, null,
60%} of the epochs x seeds 0, 1, ... (the first --trials of that list), --epochs each (default: the
config's). Both halves run exactly these configurations:

  back to back  `mixup-train CONFIG --out DIR --quiet --set ...` per trial, one after another, timed
                from outside (process start-up, imports and data generation included, as a user sees it).
                run_trial's own `wall_s` (summary.json) is the trial's training time (training +
                evaluation + checkpoint of every epoch).
  sweep         `mixup-sweep run SPEC` on a spec written to a temp dir: a grid of the same points,
                max_concurrent 2, resources cpu 1, a fresh SQLite MLflow store and Ray storage path
                in the temp dir, embedded local Ray (RAY_ADDRESS and MLFLOW_TRACKING_URI are dropped).
                Timed from outside; the MLflow run start/end times split it into driver start-up
                (imports, MLflow store creation), Ray start-up (parent run created -> first trial run
                created: ray.init, the Tuner, the first trial worker and its imports), the trials' span
                (first trial run start -> last trial run end) and the tail (selection table, Ray shutdown).

While the sweep runs, a sampler reads /proc every 0.5 s for the sweep's process tree: CPU seconds of the
driver, of Ray's own processes and of the trial workers (ray::ImplicitFunc.train), and the workers'
peak CPU use (above 100% of a core = more than one busy thread: oversubscription).

    python benchmarks/sweep_overhead.py                                  # 8 trials, ~1.5 minutes on 2 cores
    python benchmarks/sweep_overhead.py --wait-load 1.0 --repeat 3 --json /tmp/sweep_overhead.json
    python benchmarks/sweep_overhead.py --sweep-cmd "python patched_sweep.py"   # a modified sweep, same baseline

The printed "training speedup" is back-to-back training / (sweep training / 2), both in run_trial's own
clock: 2 at best, 1.0 when per-epoch costs eat all the parallelism.

It measures and prints; it never asserts. A shared machine makes timings noisy: it prints the load
average and the CPU other users' processes took during each half (/proc/stat minus ours); --wait-load
waits for a quiet machine and --repeat alternates the halves and reports the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # mixup_core, when the project is not installed

from mixup_core.config import load_trial_config  # noqa: E402

TARGET_RATIO = 0.75
STOP_FRACTIONS = (0.0, 0.3, None, 0.6)  # mixup.stop_epoch as a fraction of the epochs; None = Mixup throughout
TRIAL_ACTOR_MARK = "ImplicitFunc"  # the process title of a function trainable's actor (ray::ImplicitFunc.train)


# ---------------------------------------------------------------------------------------------
# The trials


def trial_points(n: int, epochs: int) -> list[dict[str, Any]]:
    """stop_epoch in {0, 30%, null, 60%} x seeds 0, 1, ...: the first n, seed varying slowest."""
    points = []
    seed = 0
    while len(points) < n:
        for frac in STOP_FRACTIONS:
            stop = None if frac is None else int(round(frac * epochs))
            points.append({"mixup.stop_epoch": stop, "seed": seed})
            if len(points) == n:
                break
        seed += 1
    return points


def override_text(key: str, value: Any) -> str:
    return f"{key}={'null' if value is None else json.dumps(value)}"


def yaml_value(value: Any) -> str:
    return "null" if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# Back to back: one mixup-train process per trial


def run_back_to_back(config: str, points: list[dict[str, Any]], overrides: list[str], work: Path,
                     env: dict[str, str]) -> dict[str, Any]:
    trials = []
    started = time.perf_counter()
    for i, point in enumerate(points):
        out = work / f"trial_{i}"
        cmd = ["mixup-train", config, "--out", str(out), "--quiet",
               *[a for o in overrides for a in ("--set", o)],
               *[a for k, v in point.items() for a in ("--set", override_text(k, v))]]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"mixup-train failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
        summary = json.loads((out / "summary.json").read_text())
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        trials.append({
            "params": point,
            "process_wall_s": round(wall, 3),
            "train_wall_s": summary["wall_s"],  # run_trial's own clock: training + eval + checkpoints
            "startup_s": round(wall - summary["wall_s"], 3),  # process start, imports, data, model
            "epochs": summary["epochs"],
            "median_images_per_s": statistics.median(r["images_per_s"] for r in rows),
            "final_test_acc": summary["final_test_acc"],
        })
        print(f"  back to back {i + 1}/{len(points)}  {label(point)}: {wall:5.2f} s "
              f"(training {summary['wall_s']:.2f} s)", flush=True)
    total = time.perf_counter() - started
    return {"wall_s": round(total, 3), "trials": trials}


def label(point: dict[str, Any]) -> str:
    return ", ".join(f"{k}={yaml_value(v)}" for k, v in point.items())


# ---------------------------------------------------------------------------------------------
# The sweep


def write_spec(path: Path, name: str, config: str, overrides: list[str], points: list[dict[str, Any]],
               max_concurrent: int, cpus: float, share_prefix: bool = False) -> None:
    trial = load_trial_config(config, overrides).to_dict()
    spec = {
        "name": name,
        "trial": trial,
        # One single-point grid per trial: exactly these points, in this order (their union).
        "grid": [{k: [v] for k, v in point.items()} for point in points],
        "metric": "val_acc",
        "mode": "max",
        "resources": {"cpu": cpus, "gpu": 0},
        "max_concurrent": max_concurrent,
        "max_failures": 0,
        # Off by default: branching from a shared Mixup trunk trains fewer epochs than back to back, which
        # is a saving of its own (benchmarks/branching_cost.py), not the overhead measured here.
        "share_prefix": share_prefix,
        "scheduler": None,
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


class ProcessTreeSampler:
    """Samples, every `period_s`, the CPU time of the sweep's process tree from /proc: the driver
    (`mixup-sweep`), Ray's own processes (gcs_server, raylet, dashboard, agents, log monitor, idle
    workers) and the trial workers (ray::ImplicitFunc.train), whose thread count it also records.
    Thread oversubscription shows as > 100% of a core per trial worker. (OMP_NUM_THREADS is not
    readable from outside: Ray sets it inside the worker, after exec, so /proc/PID/environ lacks it.)"""

    def __init__(self, root_pid: int, period_s: float = 0.5):
        self.root_pid = root_pid
        self.period_s = period_s
        self.procs: dict[int, dict[str, Any]] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._tick = os.sysconf("SC_CLK_TCK")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _read_stat(pid: str) -> Optional[tuple[int, str, list[str]]]:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2:].split()
        if len(fields) < 18:
            return None
        return int(fields[1]), stat[stat.index("(") + 1:stat.rindex(")")], fields

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception as e:  # a process vanished mid-read, or an odd /proc entry: skip this tick
                self.errors.append(f"{type(e).__name__}: {e}")
            self._stop.wait(self.period_s)

    def _sample(self) -> None:
        now = time.perf_counter()
        stats = {}
        for pid_dir in Path("/proc").iterdir():
            if pid_dir.name.isdigit():
                st = self._read_stat(pid_dir.name)
                if st is not None:
                    stats[int(pid_dir.name)] = st
        tree = {self.root_pid}
        changed = True
        while changed:  # descendants of the driver (Ray's processes are its children and grandchildren)
            changed = False
            for pid, (ppid, _, _) in stats.items():
                if ppid in tree and pid not in tree:
                    tree.add(pid)
                    changed = True
        for pid in tree:
            if pid not in stats:
                continue
            _, comm, fields = stats[pid]
            cpu_s = (int(fields[11]) + int(fields[12])) / self._tick  # utime + stime, since it started
            entry = self.procs.get(pid)
            if entry is None:
                entry = self.procs[pid] = {"name": self._name(pid, comm), "samples": []}
            if entry["name"] != "trial worker":
                # A worker process sets its title late (python3 -> ray::IDLE -> ray::ImplicitFunc.train).
                entry["name"] = self._name(pid, comm)
            entry["samples"].append((now, cpu_s, int(fields[17])))

    def _name(self, pid: int, comm: str) -> str:
        if pid == self.root_pid:
            return "driver (mixup-sweep)"
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = comm
        if cmdline.startswith("ray::"):
            title = cmdline.split()[0]
            if TRIAL_ACTOR_MARK in title:
                return "trial worker"
            return "ray idle worker" if title == "ray::IDLE" else title
        words = [os.path.basename(w) for w in cmdline.split()[:2]]
        for known in ("gcs_server", "raylet", "dashboard.py", "log_monitor.py", "monitor.py", "agent"):
            if known in words:
                return known
        return comm

    def summary(self) -> dict[str, Any]:
        by_name: dict[str, float] = {}
        workers = []
        for pid, entry in sorted(self.procs.items()):
            samples = entry["samples"]
            cpu_s = samples[-1][1]
            by_name[entry["name"]] = by_name.get(entry["name"], 0.0) + cpu_s
            if entry["name"] != "trial worker":
                continue
            rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[4:]) if b[0] > a[0]]
            workers.append({
                "pid": pid,
                "threads_max": max(s[2] for s in samples),
                "cpu_s": round(cpu_s, 2),
                "max_cpu_pct_2s": round(100 * max(rates), 1) if rates else None,
            })
        return {"cpu_s_by_process": {k: round(v, 2) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])},
                "trial_workers": workers}


def point_key(values: dict[str, Any], keys: list[str], as_params: bool = True) -> str:
    """Matches a back-to-back point with its MLflow child run (params hold JSON text: null, 60, 0)."""
    return ", ".join(f"{k}={values.get(k) if as_params else json.dumps(values[k])}" for k in keys)


def ray_started_ms(log: str) -> Optional[float]:
    """The time of Ray's "Started a local Ray instance." log line (local time, millisecond precision)."""
    match = re.search(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\s+INFO worker\.py:\d+ -- Started a local Ray instance",
                      log, re.MULTILINE)
    if match is None:
        return None
    seconds = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
    return seconds * 1000.0 + int(match.group(2))


def read_sweep_runs(tracking_uri: str, name: str, keys: list[str]) -> dict[str, Any]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    parent = next(r for r in runs if r.data.tags.get("mixup_sweep.role") == "sweep")
    children = [r for r in runs if r.data.tags.get("mixup_sweep.role") == "trial"]
    trials = []
    for run in children:
        history = client.get_metric_history(run.info.run_id, "images_per_s")
        elapsed = client.get_metric_history(run.info.run_id, "elapsed_s")
        trials.append({
            "run_name": run.info.run_name,
            "key": point_key(run.data.params, keys),
            "status": run.info.status,
            "start_ms": run.info.start_time,
            "end_ms": run.info.end_time,
            "run_s": (run.info.end_time - run.info.start_time) / 1000.0,
            "train_wall_s": run.data.metrics.get("wall_s"),
            "epochs": len(elapsed),
            "median_images_per_s": statistics.median(m.value for m in history) if history else None,
            "final_test_acc": run.data.metrics.get("final_test_acc"),
        })
    trials.sort(key=lambda t: t["start_ms"])
    return {"parent_start_ms": parent.info.start_time, "parent_end_ms": parent.info.end_time,
            "parent_status": parent.info.status, "trials": trials}


def run_sweep(config: str, points: list[dict[str, Any]], overrides: list[str], sweep_overrides: list[str],
              work: Path, env: dict[str, str], max_concurrent: int, cpus: float,
              share_prefix: bool = False, sweep_cmd: tuple[str, ...] = ("mixup-sweep",)) -> dict[str, Any]:
    name = "sweep_overhead"
    spec_path = work / "spec.yaml"
    write_spec(spec_path, name, config, overrides, points, max_concurrent, cpus, share_prefix)
    tracking_uri = f"sqlite:///{work / 'mlflow.db'}"
    cmd = [*sweep_cmd, "run", str(spec_path), "--tracking-uri", tracking_uri,
           "--storage-path", str(work / "ray_results"), *[a for o in sweep_overrides for a in ("--set", o)]]
    log_path = work / "sweep.log"
    start_wall_ms = time.time() * 1000.0
    t0 = time.perf_counter()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=work, stdout=log, stderr=subprocess.STDOUT)
        sampler = ProcessTreeSampler(proc.pid)
        sampler.start()
        proc.wait()
    wall = time.perf_counter() - t0
    end_wall_ms = time.time() * 1000.0
    sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"mixup-sweep failed (exit {proc.returncode}); its output:\n{log_path.read_text()[-4000:]}")

    runs = read_sweep_runs(tracking_uri, name, list(points[0]))
    ray_ready_ms = ray_started_ms(log_path.read_text())
    trials = runs["trials"]
    first_start = min(t["start_ms"] for t in trials)
    last_end = max(t["end_ms"] for t in trials)
    return {
        "wall_s": round(wall, 3),
        "driver_startup_s": round((runs["parent_start_ms"] - start_wall_ms) / 1000.0, 3),
        "ray_startup_s": round((first_start - runs["parent_start_ms"]) / 1000.0, 3),
        # ray.init() alone (parent run created -> Ray's "Started a local Ray instance" log line), and the
        # rest: the Tuner, the first trial worker process, its imports and its MLflow run.
        "ray_init_s": None if ray_ready_ms is None else round((ray_ready_ms - runs["parent_start_ms"]) / 1000.0, 3),
        "first_trial_start_s": None if ray_ready_ms is None else round((first_start - ray_ready_ms) / 1000.0, 3),
        "trials_span_s": round((last_end - first_start) / 1000.0, 3),
        "tail_s": round((end_wall_ms - last_end) / 1000.0, 3),
        "trials": trials,
        "processes": {**sampler.summary(), "sampler_errors": sampler.errors[:5]},
        "log": str(log_path),
    }


# ---------------------------------------------------------------------------------------------
# Report


def analyse(b2b: dict[str, Any], sweep: dict[str, Any], concurrency: int) -> dict[str, Any]:
    n = len(b2b["trials"])
    b2b_train = sum(t["train_wall_s"] for t in b2b["trials"])
    sweep_train = sum(t["train_wall_s"] or 0.0 for t in sweep["trials"])
    sweep_run = sum(t["run_s"] for t in sweep["trials"])
    ratio = sweep["wall_s"] / b2b["wall_s"]
    ideal = b2b_train / concurrency  # the trials' compute, perfectly parallel, nothing else
    return {
        "ratio": round(ratio, 3),
        "target": TARGET_RATIO,
        "met": ratio <= TARGET_RATIO,
        "b2b_train_s": round(b2b_train, 3),
        "b2b_startup_s_per_trial": round(statistics.mean(t["startup_s"] for t in b2b["trials"]), 3),
        "ideal_sweep_s": round(ideal, 3),
        "sweep_overhead_s": round(sweep["wall_s"] - ideal, 3),  # sweep wall - compute / concurrency
        "sweep_overhead_s_per_trial": round((sweep["wall_s"] - ideal) / (n / concurrency), 3),
        "sweep_train_s": round(sweep_train, 3),
        # How much faster the sweep trains than back to back, in the trials' own clocks (run_trial's
        # wall_s): `concurrency` at best; 1.0 = the parallelism is all eaten by per-epoch costs.
        "training_speedup": round(b2b_train / (sweep_train / concurrency), 3) if sweep_train else None,
        # In a trial's own clock, the sweep's extra per epoch (per-epoch MLflow + Ray report + checkpoint
        # persistence, and 1 thread instead of all): (sweep train - back-to-back train) / epochs.
        "in_trial_extra_ms_per_epoch": round(
            1000 * (sweep_train - b2b_train) / max(1, sum(t["epochs"] for t in b2b["trials"])), 2),
        # Outside run_trial but inside the trial's MLflow run: params, data, final artifacts, run close.
        "trial_run_extra_s_per_trial": round((sweep_run - sweep_train) / n, 3),
    }


def print_report(args, b2b, sweep, result, load_before) -> None:
    n = len(b2b["trials"])
    c = args.max_concurrent
    print()
    print("# per trial (training = run_trial's wall_s: training + eval + checkpoint every epoch)")
    print(f"  {'trial':<36} {'b2b process':>11} {'b2b train':>9} {'b2b img/s':>9} | {'sweep run':>9} "
          f"{'sweep train':>11} {'sweep img/s':>11}")
    by_key = {t["key"]: t for t in sweep["trials"]}
    for t in b2b["trials"]:
        s = by_key.get(point_key(t["params"], list(t["params"]), as_params=False), {})
        print(f"  {label(t['params']):<36} {t['process_wall_s']:>10.2f}s {t['train_wall_s']:>8.2f}s "
              f"{t['median_images_per_s']:>9.0f} | {s.get('run_s', float('nan')):>8.2f}s "
              f"{s.get('train_wall_s') or float('nan'):>10.2f}s {s.get('median_images_per_s') or float('nan'):>11.0f}")
    procs = sweep["processes"]
    print(f"# CPU seconds of the sweep's processes ({os.cpu_count()} cores x {sweep['wall_s']:.1f} s = "
          f"{os.cpu_count() * sweep['wall_s']:.1f} core-s available; back-to-back training used "
          f"{result['b2b_train_s']:.1f} s of wall time)")
    print("  " + ", ".join(f"{k} {v:.1f}" for k, v in procs["cpu_s_by_process"].items()))
    for p in procs["trial_workers"]:
        print(f"  trial worker pid {p['pid']}: {p['cpu_s']} CPU-s, peak {p['max_cpu_pct_2s']}% of a core over 2 s "
              f"(> 100% = more than one busy thread), up to {p['threads_max']} threads (most are Ray's)")
    print()
    print(f"# {n} trials x {b2b['trials'][0]['epochs']} epochs ({args.config}); sweep: max_concurrent {c}, "
          f"cpu {args.cpus_per_trial} per trial; {os.cpu_count()} cores; 1-min load average "
          f"{load_before[0]:.2f} at start, {b2b['load_after']:.2f} after back-to-back, {sweep['load_after']:.2f} after "
          f"the sweep")
    print(f"# other users' CPU meanwhile: {b2b['others_core_s']:.1f} core-s during back-to-back "
          f"({100 * b2b['others_core_s'] / (os.cpu_count() * b2b['wall_s']):.0f}% of the machine), "
          f"{sweep['others_core_s']:.1f} core-s during the sweep "
          f"({100 * sweep['others_core_s'] / (os.cpu_count() * sweep['wall_s']):.0f}%)")
    rows = [
        ("back-to-back total (mixup-train x N)", b2b["wall_s"]),
        ("  of which training (sum of wall_s)", result["b2b_train_s"]),
        ("  process start-up per trial", result["b2b_startup_s_per_trial"]),
        ("sweep total (mixup-sweep run)", sweep["wall_s"]),
        ("  driver start-up (imports, MLflow store)", sweep["driver_startup_s"]),
        ("  Ray start-up (-> first trial run)", sweep["ray_startup_s"]),
        ("    ray.init()", sweep["ray_init_s"]),
        ("    Tuner + trial worker + imports + run", sweep["first_trial_start_s"]),
        ("  first trial start -> last trial end", sweep["trials_span_s"]),
        ("  tail (last trial end -> exit)", sweep["tail_s"]),
        (f"ideal sweep (b2b training / {c})", result["ideal_sweep_s"]),
        (f"sweep overhead (sweep - training / {c})", result["sweep_overhead_s"]),
        ("  per trial", result["sweep_overhead_s_per_trial"]),
        ("  in-trial extra per epoch (ms)", result["in_trial_extra_ms_per_epoch"]),
        ("  trial run extra outside training", result["trial_run_extra_s_per_trial"]),
        (f"training speedup of {c} concurrent trials (x)", result["training_speedup"]),
    ]
    for name, value in rows:
        if value is None:
            continue
        unit = "" if name.endswith(("(ms)", "(x)")) else " s"
        print(f"  {name:<44} {value:>8.2f}{unit}")
    verdict = "met" if result["met"] else "NOT met"
    print(f"  {'ratio sweep / back-to-back':<44} {result['ratio']:>8.3f}   (target <= {TARGET_RATIO}: {verdict})")


class MachineLoad:
    """Core-seconds the rest of the machine (other users) spent while a block ran: busy time from
    /proc/stat minus our own children's CPU (and `ours_extra_s`, for processes that are not our
    waited-for children, e.g. Ray's workers). A shared machine makes timings noisy; this says how much."""

    ours_extra_s: float = 0.0

    @staticmethod
    def _busy_s() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own_s() -> tuple[float, float]:
        import resource

        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime

    def __enter__(self) -> "MachineLoad":
        self._busy0, self._own0 = self._busy_s(), self._own_s()
        return self

    def __exit__(self, *exc) -> None:
        busy = self._busy_s() - self._busy0
        own_self, own_children = (b - a for a, b in zip(self._own0, self._own_s()))
        # Waited-for children (mixup-train; the sweep's driver and what it reaped), or the sampled
        # process tree of the sweep, whichever saw more.
        self.others_core_s = round(max(0.0, busy - own_self - max(own_children, self.ours_extra_s)), 2)


def wait_for_load(limit: Optional[float], max_wait_s: float = 600.0) -> None:
    if limit is None:
        return
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)
    if os.getloadavg()[0] >= limit:
        print(f"# load average still {os.getloadavg()[0]:.2f} >= {limit} after {max_wait_s:.0f} s: going on", flush=True)


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=8, help="number of trials (default 8)")
    p.add_argument("--epochs", type=int, default=None, help="train.epochs of every trial (default: the config's)")
    p.add_argument("--config", default="feature_noise", help="bundled config name or YAML path (default feature_noise)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="extra trial override, applied to both halves (repeatable)")
    p.add_argument("--max-concurrent", type=int, default=2, help="the sweep's max_concurrent (default 2)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="the sweep's resources.cpu (default 1)")
    p.add_argument("--share-prefix", action="store_true",
                   help="let trials differing only in mixup.stop_epoch branch from one Mixup trunk (then the "
                        "sweep trains fewer epochs than back to back: not like for like)")
    p.add_argument("--sweep-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra `mixup-sweep run --set` (spec keys), for experiments")
    p.add_argument("--sweep-cmd", default="mixup-sweep", metavar="CMD",
                   help="the sweep command (default mixup-sweep); e.g. a modified one, to measure a change "
                        "against the same back-to-back baseline")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--wait-load", type=float, default=None, metavar="L",
                   help="before each half, wait (up to 10 minutes) until the 1-minute load average is below L")
    p.add_argument("--repeat", type=int, default=1, metavar="R",
                   help="run both halves R times (alternating) and also report the ratio of the medians")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (trial outputs, mlflow.db, sweep.log)")
    args = p.parse_args(argv)

    overrides = list(args.overrides)
    if args.epochs is not None:
        overrides.append(f"train.epochs={args.epochs}")
    epochs = load_trial_config(args.config, overrides).train.epochs
    points = trial_points(args.trials, epochs)

    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "MIXUP_SWEEP_STORAGE")}
    bin_dir = str(Path(sys.executable).parent)  # mixup-train / mixup-sweep of this interpreter's venv
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    work = Path(tempfile.mkdtemp(prefix="sweep_overhead_"))
    load_before = os.getloadavg()
    print(f"# {platform.node()} | {os.cpu_count()} cores | load average {load_before[0]:.2f} "
          f"{load_before[1]:.2f} {load_before[2]:.2f} | work dir {work}", flush=True)
    rounds = []
    try:
        for r in range(args.repeat):
            round_dir = work / f"round_{r}"
            wait_for_load(args.wait_load)
            print(f"back to back: {len(points)} x mixup-train (load {os.getloadavg()[0]:.2f})", flush=True)
            (round_dir / "b2b").mkdir(parents=True)
            with MachineLoad() as b2b_load:
                b2b = run_back_to_back(args.config, points, overrides, round_dir / "b2b", env)
            b2b["load_after"] = os.getloadavg()[0]
            b2b["others_core_s"] = b2b_load.others_core_s
            wait_for_load(args.wait_load)
            print(f"sweep: mixup-sweep run, max_concurrent {args.max_concurrent} (load {os.getloadavg()[0]:.2f})",
                  flush=True)
            (round_dir / "sweep").mkdir()
            with MachineLoad() as sweep_load:
                sweep = run_sweep(args.config, points, overrides, args.sweep_set, round_dir / "sweep", env,
                                  args.max_concurrent, args.cpus_per_trial, args.share_prefix,
                                  tuple(shlex.split(args.sweep_cmd)))
                sweep_load.ours_extra_s = sum(sweep["processes"]["cpu_s_by_process"].values())
            sweep["load_after"] = os.getloadavg()[0]
            sweep["others_core_s"] = sweep_load.others_core_s
            result = analyse(b2b, sweep, args.max_concurrent)
            print_report(args, b2b, sweep, result, load_before)
            rounds.append({"back_to_back": b2b, "sweep": {k: v for k, v in sweep.items() if k != "log"},
                           "result": result})
            if args.json:
                write_json(args, epochs, points, load_before, rounds)
        if len(rounds) > 1:
            summary = summarise_rounds(rounds)
            print(f"\n# {len(rounds)} rounds: ratios {', '.join(f'{x:.3f}' for x in summary['ratios'])}; medians: "
                  f"back-to-back {summary['median_back_to_back_s']:.2f} s, sweep {summary['median_sweep_s']:.2f} s, "
                  f"ratio {summary['ratio_of_medians']:.3f} (target <= {TARGET_RATIO}: "
                  f"{'met' if summary['met'] else 'NOT met'})")
        if args.json:
            print(f"# results: {args.json}")
    finally:
        if args.keep:
            print(f"# kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def summarise_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    b2b = statistics.median(r["back_to_back"]["wall_s"] for r in rounds)
    sweep = statistics.median(r["sweep"]["wall_s"] for r in rounds)
    return {"rounds": len(rounds), "ratios": [r["result"]["ratio"] for r in rounds],
            "median_back_to_back_s": b2b, "median_sweep_s": sweep,
            "ratio_of_medians": round(sweep / b2b, 3), "target": TARGET_RATIO, "met": sweep / b2b <= TARGET_RATIO}


def write_json(args, epochs, points, load_before, rounds) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "host": platform.node(),
        "cores": os.cpu_count(),
        "load_average_before": load_before,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "epochs": epochs,
        "points": points,
        "rounds": rounds,
        "summary": summarise_rounds(rounds),
    }, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
