"""`status`, `list` and `best` against an MLflow tracking server holding one big sweep, timed as a
user runs them (a fresh `mixup-sweep` process each: interpreter start-up and imports included).

The sweep is generated with the MLflow client, no training: a parent run laid out as a real sweep's
(role tag, spec params, live-progress metrics) and --trials child runs (grid: mixup.stop_epoch x
mixup.alpha x seed), each with --epochs epochs of val_acc, test_acc, test_acc_rare and feat_rare,
logged at step=epoch like a trial logs them, and its summary metrics. The server is `mlflow server`
on 127.0.0.1 with a SQLite backend in a temporary directory (`--keep DIR` to reuse one).

    python benchmarks/store_scale.py                       # 2,000 trials x 200 epochs (~10 min to generate)
    python benchmarks/store_scale.py --trials 40 --epochs 20   # a quick look

Prints one JSON object with the machine, the store's size, the generation time and each command's
median wall time over --repeats; it never asserts. `best_redraw` is `best` on a selection that changed
since the last one (it draws and uploads the plots; the curves' metric histories come from the
curve-history cache the end of a sweep writes, generated here by the same function),
`best_redraw_without_cache` the same on a sweep without that cache (an older version's: every curve's
history is fetched from the store), `best` the same selection again (it compares the stored
selection.json and only prints). A change is made by the tracking URI the selection records, spelt
127.0.0.1 and localhost in turn.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BIN = Path(sys.executable).parent
METRICS = ("val_acc", "test_acc", "test_acc_rare", "feat_rare")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(cmd, stdout=(root / "server.log").open("a"), stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    uri = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server did not start; see {root / 'server.log'}")


def generate(uri: str, name: str, trials: int, epochs: int, threads: int) -> float:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    from sweeps import keys

    client = MlflowClient(uri)
    start = time.perf_counter()
    exp = client.create_experiment(name, tags={"mlflow.experimentKind": "custom_model_development"})
    parent = client.create_run(exp, run_name=name, tags={keys.ROLE_TAG: keys.ROLE_SWEEP}).info.run_id
    client.log_batch(parent, params=[Param("metric", "val_acc"), Param("mode", "max")])
    stops = [0, 20, 40, 60, 80, 100, 120, 140, 160, None]
    alphas = [0.2, 0.5, 1.0, 2.0]
    seeds = max(1, trials // (len(stops) * len(alphas)))
    points = [(e, a, s) for e in stops for a in alphas for s in range(seeds)][:trials]
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, float(v), now, 1) for k, v in {
        keys.TRIALS_TOTAL: len(points), keys.TRIALS_FINISHED: len(points), keys.EPOCHS_TOTAL: len(points) * epochs,
        keys.EPOCHS_DONE: len(points) * epochs, keys.PROGRESS: 1.0, keys.HEARTBEAT: time.time()}.items()])

    def one(i: int) -> None:
        stop, alpha, seed = points[i]
        rng = random.Random(i)
        run = client.create_run(exp, run_name=f"E={stop if stop is not None else 'never'} a={alpha} s{seed}",
                                tags={keys.PARENT_TAG: parent, keys.ROLE_TAG: keys.ROLE_TRIAL,
                                      keys.TRIAL_ID_TAG: f"t{i:05d}", keys.RAY_TRIAL_TAG: f"t{i:05d}"}).info.run_id
        params = {"seed": seed, "mixup.stop_epoch": "null" if stop is None else stop, "mixup.alpha": alpha,
                  "train.epochs": epochs}
        client.log_batch(run, params=[Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()])
        rows = []
        for epoch in range(1, epochs + 1):
            level = 1 - 0.5 * 0.97 ** epoch + 0.02 * (stop or 0) / 160 + rng.gauss(0, 0.005)
            rows += [Metric(k, level - 0.03 * j, now + epoch, epoch) for j, k in enumerate(METRICS)]
        for at in range(0, len(rows), 1000):
            client.log_batch(run, metrics=rows[at:at + 1000])
        client.log_batch(run, metrics=[Metric("best_val_acc", rows[-4].value, now, 0),
                                       Metric("final_test_acc", rows[-3].value, now, 0)])
        client.set_terminated(run, "FINISHED")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(len(points))))
    write_curve_cache(client, exp, parent)
    client.set_terminated(parent, "FINISHED")
    return time.perf_counter() - start


def write_curve_cache(client, experiment_id: str, parent: str) -> None:
    """What the end of a sweep writes onto its parent run besides the selection: the curve-history
    cache of every ended trial (sweeps/best/curve_cache.py), by the function the sweep calls."""
    from sweeps.best.command import read_children, refresh_curve_cache

    children = read_children(client, experiment_id, parent, client.get_run(parent))
    refresh_curve_cache(client, parent, "val_acc", children)


def cache_files(root: Path) -> list[Path]:
    return sorted((root / "artifacts").glob("*/*/artifacts/curves/histories.npz"))


def time_command(args: list[str], uri: str | list[str], repeats: int) -> dict:
    """`mixup-sweep ARGS --tracking-uri URI` timed `repeats` times; a list of URIs: one per run."""
    times, rc = [], None
    uris = uri if isinstance(uri, list) else [uri] * repeats
    for u in uris:
        start = time.perf_counter()
        proc = subprocess.run([str(BIN / "mixup-sweep"), *args, "--tracking-uri", u], capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        rc = proc.returncode
    return {"median_s": round(statistics.median(times), 2), "runs_s": [round(t, 2) for t in times], "exit": rc}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="a directory to keep (and reuse) the server's store in")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # stdout: one JSON object
    root = args.keep or Path(tempfile.mkdtemp(prefix="store-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    name = f"scale_{args.trials}x{args.epochs}"
    proc, uri = start_server(root)
    try:
        from mlflow import MlflowClient

        generated = None
        client = MlflowClient(uri)
        if client.get_experiment_by_name(name) is None:
            generated = round(generate(uri, name, args.trials, args.epochs, args.threads), 1)
        else:  # a kept store: its cache brought up to date (written anew if it predates this format)
            experiment = client.get_experiment_by_name(name)
            parent = client.search_runs([experiment.experiment_id], "tags.`mixup_sweep.role` = 'sweep'")[0]
            write_curve_cache(client, experiment.experiment_id, parent.info.run_id)
        cache = cache_files(root)[0]
        redraw = [uri.replace("127.0.0.1", "localhost"), uri] * args.repeats
        result = {
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "store": f"mlflow server (SQLite) at {uri}",
            "trials": args.trials, "epochs": args.epochs,
            "metric_values": args.trials * args.epochs * len(METRICS),
            "generate_s": generated,
            "status": time_command(["status", name], uri, args.repeats),
            "list": time_command(["list"], uri, args.repeats),
            # A selection that changed since the last `best` (here: the tracking URI it records, spelt
            # 127.0.0.1 and localhost in turn, ending with the URI of the runs below): drawn again.
            "best_redraw": time_command(["best", name], redraw, 2 * args.repeats),
            "curve_cache_mb": round(cache.stat().st_size / 1e6, 1),
            # The same selection again: only printed.
            "best": time_command(["best", name], uri, args.repeats),
        }
        # The same redraw on a sweep without the curve cache (one of an older version): every curve's
        # history comes from the store (in bulk).
        hidden = cache.with_name("histories.npz.hidden")
        cache.rename(hidden)
        try:
            result["best_redraw_without_cache"] = time_command(["best", name], redraw, 2 * args.repeats)
        finally:
            hidden.rename(cache)
        start = time.perf_counter()
        subprocess.run([str(BIN / "mixup-sweep"), "--help"], capture_output=True)
        result["cli_start_floor_s"] = round(time.perf_counter() - start, 2)  # `mixup-sweep --help`
        print(json.dumps(result, indent=2))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
