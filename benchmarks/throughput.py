"""Training throughput of mixup_core's loop: eager and CUDA-graphed, packed trials, N processes, against
a reference loop written the common way and a bare graphed step (the ceiling), all in one run.

Measured, in this order (one line each, then ratios and the issue's targets):
  single     `run_trial` at each --batch-sizes, eager (train.cuda_graphs=off) and graphed (on; CUDA only),
             on CIFAR-shaped synthetic data written as an .npz and loaded through the real data path
             (device-resident uint8 images, on-device crop/flip + normalisation, bf16 autocast and
             channels_last on CUDA, Mixup from a device generator). Throughput is the `images_per_s`
             run_trial logs per epoch (training steps; the epoch ends with a sync); epoch 1 is warm-up
             (capture, cuDNN autotuning) and is left out, the median of the rest is reported.
             `images_per_s_incl_eval` divides by the whole epoch instead (training + evaluation of the
             test set + feature measures + writing the checkpoint).
  bare       benchmarks/bare_graph_loop.py: one fixed device batch, Mixup, bf16, fused SGD, eager and
             as one CUDA graph: the issue's 60-line ceiling, measured in the same run.
  reference  benchmarks/reference_loop.py (DataLoader + CPU transforms, fp32, `loss.item()` per step);
             skipped with a note if torchvision/PIL are missing.
  packed     `mixup_core.packing.run_packed_trials` with --packed N trials at --packed-batch-size:
             N models stepped by one graph per replay, one CUDA stream each; total images/s.
  processes  N `run_trial` processes sharing the device at once (what Ray fractional GPUs run: one
             process per trial), started together behind a barrier; total images/s.

Model FLOP utilisation = images/s x training FLOPs per image (3 x the forward FLOPs that
`torch.utils.flop_counter.FlopCounterMode` counts: convolutions and matmuls) / peak. The peak is the
dense bf16 tensor-core figure of the GPU from a small table (or measured with a large bf16 matmul on
an unknown GPU, or an fp32 matmul on CPU), the same yardstick for every loop.

    python benchmarks/throughput.py --device cpu --small --json /tmp/throughput.json   # smoke, < 2 min
    python benchmarks/throughput.py --device cuda --json results/throughput_h100.json  # full size, ~4 min
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # run as a script: the loops are beside us
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))  # and mixup_core above us, when it is not installed

from bare_graph_loop import run_bare  # noqa: E402

from mixup_core.config import TrialConfig, dump_yaml, validate_trial_config  # noqa: E402
from mixup_core.models.resnet import preact_resnet18, resnet18  # noqa: E402
from mixup_core.packing import run_packed_trials  # noqa: E402
from mixup_core.reporting import LocalReporter  # noqa: E402
from mixup_core.trial import run_trial  # noqa: E402

# The targets on an H100 (images/s), checked in the summary.
TARGETS = {
    "single batch 128, graphed, incl. eval": 40_000,
    "packed at batch 128, total": 55_000,
    "single batch 512, graphed": 60_000,
}
# Mixup settings cycled over packed/process trials (all keep Mixup on: no recapture while measuring).
TRIAL_VARIANTS = [
    {"alpha": 1.0},
    {"alpha": 0.4, "label_policy": "independent"},
    {"alpha": 2.0, "per_sample": True},
    {"alpha": 0.2, "label_policy": "threshold"},
]

MODELS = {"resnet18": resnet18, "preact_resnet18": preact_resnet18}

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), from the vendors' datasheets. First match wins.
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("GH200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 70.0),
    ("L4", 121.0),
]


def gpu_peak_tflops(device: torch.device) -> tuple[float, str]:
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16_TFLOPS:
        if key in name:
            return peak, f"table: {name} dense bf16"
    return measure_matmul_tflops(device, torch.bfloat16, 8192), f"measured: {name} bf16 matmul 8192^3"


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int, repeats: int = 5, trials: int = 5) -> float:
    """Best of `trials` timings of `repeats` n x n matmuls: the best is the least disturbed by other load."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up
    best = 0.0
    for _ in range(trials):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12)
    return best


def forward_flops_per_image(model_name: str, num_classes: int, image_size: int) -> float:
    model = MODELS[model_name](num_classes).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(2, 3, image_size, image_size))
    return counter.get_total_flops() / 2


def synthetic_cifar(n: int, image_size: int, num_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, image_size, image_size, 3), dtype=np.uint8)
    labels = rng.integers(0, num_classes, size=n).astype(np.int64)
    return images, labels


def trial_config(args, batch_size: int, npz_path: Path, cuda_graphs: Optional[str] = None, seed: Optional[int] = None,
                 epochs: Optional[int] = None, mixup: Optional[dict] = None) -> TrialConfig:
    cfg = validate_trial_config(
        {
            "seed": args.seed if seed is None else seed,
            "data": {"name": "npz", "root": str(npz_path), "val_size": 0, "augment": True},
            "model": {"name": args.model},
            "train": {
                "epochs": args.epochs if epochs is None else epochs,
                "batch_size": batch_size,
                "eval_batch_size": 1024,
                "lr": 0.1,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "precision": args.precision,
                "device": args.device,
            },
            "mixup": mixup or {"alpha": 1.0},
        },
        source="benchmark",
    )
    if cuda_graphs is not None:
        cfg.train.cuda_graphs = cuda_graphs
    return cfg


def read_rows(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def epoch_stats(rows: list[dict[str, Any]], images_per_epoch: int) -> dict[str, Any]:
    """Steady-state numbers from run_trial's per-epoch rows (epoch 1 = warm-up, left out when possible)."""
    if not rows:
        return {"images_per_s": float("nan"), "images_per_s_incl_eval": float("nan")}
    per_epoch = [r["images_per_s"] for r in rows]
    elapsed = [r["elapsed_s"] for r in rows]
    wall = [b - a for a, b in zip([0.0] + elapsed[:-1], elapsed)]  # training + eval + checkpoint
    steady = slice(1, None) if len(rows) > 1 else slice(0, None)
    train_s = [images_per_epoch / v for v in per_epoch]
    return {
        "images_per_s": statistics.median(per_epoch[steady]),
        "images_per_s_incl_eval": statistics.median(images_per_epoch / w for w in wall[steady]),
        "overhead_s_per_epoch": statistics.median(w - t for w, t in zip(wall[steady], train_s[steady])),
        "epoch_images_per_s": per_epoch,
        "epoch_wall_s": wall,
    }


def run_ours(args, batch_size: int, npz_path: Path, work_dir: Path, cuda_graphs: Optional[str] = None) -> dict[str, Any]:
    """One run_trial; cuda_graphs None = args.cuda_graphs (None: the config default, auto)."""
    mode = cuda_graphs if cuda_graphs is not None else args.cuda_graphs
    cfg = trial_config(args, batch_size, npz_path, mode)
    out_dir = work_dir / f"ours_bs{batch_size}_{cfg.train.cuda_graphs}"
    if cfg.train.cuda_graphs == "off":
        torch.backends.cudnn.benchmark = False  # what an eager trial runs with in its own process
    start = time.perf_counter()
    summary = run_trial(cfg, out_dir)
    wall_s = time.perf_counter() - start
    rows = read_rows(out_dir)
    _rmtree(out_dir / "checkpoints")  # a full-size checkpoint is ~90 MB; keep the temp dir small
    out = epoch_stats(rows, images_per_epoch(args, batch_size))
    out.update({
        "trial_wall_s": wall_s,
        "status": summary["status"],
        "final_train_loss": rows[-1]["train_loss"] if rows else None,
        "precision": resolved_precision(args.precision, args.device),
        "cuda_graphs": cfg.train.cuda_graphs,
    })
    return out


def images_per_epoch(args, batch_size: int) -> int:
    batch = min(batch_size, args.n_train)
    return (args.n_train // batch) * batch  # the ragged last batch is dropped


def resolved_precision(precision: str, device: str) -> str:
    """What run_trial does with train.precision (auto = bf16 autocast on CUDA, fp32 on CPU)."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def load_reference():
    """reference_loop needs torchvision and PIL; a bare GPU machine may not have them."""
    try:
        from reference_loop import run_reference
    except ImportError as e:
        return None, f"{type(e).__name__}: {e}"
    return run_reference, None


def run_ref(args, batch_size: int, images: np.ndarray, labels: np.ndarray, device: torch.device) -> dict[str, Any]:
    run_reference, missing = load_reference()
    if run_reference is None:
        return {"skipped": f"reference loop unavailable ({missing})"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = MODELS[args.model](args.num_classes)
    result = run_reference(
        model,
        images,
        labels,
        device,
        batch_size=batch_size,
        workers=args.workers,
        warmup_steps=args.ref_warmup,
        timed_steps=args.ref_steps,
        seed=args.seed,
    )
    out = dict(vars(result))
    out["precision"] = "fp32"
    return out


def run_bare_loop(args, batch_size: int, device: torch.device, graphed: bool) -> dict[str, Any]:
    if graphed and device.type != "cuda":
        return {"skipped": "CUDA graphs need a CUDA device"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        model = MODELS[args.model](args.num_classes)
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True  # same kernels eager and graphed: the ratio is launches only
    try:
        result = run_bare(model, device, batch_size, graphed, image_size=args.image_size,
                          num_classes=args.num_classes, timed_steps=args.bare_steps, seed=args.seed)
    finally:
        torch.backends.cudnn.benchmark = saved
    out = dict(vars(result))
    out["precision"] = "bf16" if device.type == "cuda" else "fp32"
    return out


def run_packed(args, n_trials: int, npz_path: Path, work_dir: Path) -> dict[str, Any]:
    """N trials (seeds 0.., Mixup variants) packed in this process; total images/s of the pack."""
    b = args.packed_batch_size
    cfgs = [trial_config(args, b, npz_path, seed=args.seed + i, epochs=args.packed_epochs,
                         mixup=TRIAL_VARIANTS[i % len(TRIAL_VARIANTS)]) for i in range(n_trials)]
    out_dirs = [work_dir / f"packed{n_trials}_{i}" for i in range(n_trials)]
    start = time.perf_counter()
    summaries = run_packed_trials(cfgs, out_dirs)
    wall_s = time.perf_counter() - start
    rows = [read_rows(d) for d in out_dirs]
    for d in out_dirs:
        _rmtree(d)
    per_trial = [epoch_stats(r, images_per_epoch(args, b)) for r in rows]
    # Every trial's row divides its own images by the pack's training time: the total is the sum. The
    # first trial's elapsed time spans a whole cycle of the pack (training + every trial's eval/checkpoint).
    pack_cycle = epoch_stats(rows[0], n_trials * images_per_epoch(args, b))
    return {
        "trials": n_trials,
        "batch_size": b,
        "images_per_s": sum(t["images_per_s"] for t in per_trial),
        "images_per_s_incl_eval": pack_cycle["images_per_s_incl_eval"],
        "per_trial_images_per_s": [t["images_per_s"] for t in per_trial],
        "epoch_wall_s": pack_cycle["epoch_wall_s"],
        "wall_s": wall_s,
        "status": [s["status"] for s in summaries],
        "graphed": args.device == "cuda",  # train.cuda_graphs auto: the ResNets are graphed on CUDA
    }


def run_processes(args, n_trials: int, npz_path: Path, work_dir: Path) -> dict[str, Any]:
    """N processes, one run_trial each (as Ray runs trials with fractional GPUs), released together."""
    b = args.packed_batch_size
    run_dir = work_dir / f"procs{n_trials}"
    run_dir.mkdir()
    go = run_dir / "go"
    procs, outs = [], []
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    # As Ray does for a trial (OMP_NUM_THREADS = its CPUs): N processes each spinning up a thread per
    # core oversubscribe the CPU, which on a CPU run made 2 processes ~35x slower than one.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_trials)))
    for i in range(n_trials):
        cfg = trial_config(args, b, npz_path, seed=args.seed + i, epochs=args.epochs,
                           mixup=TRIAL_VARIANTS[i % len(TRIAL_VARIANTS)])
        config = run_dir / f"trial{i}.yaml"
        config.write_text(dump_yaml(cfg))
        out = run_dir / f"trial{i}"
        outs.append(out)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker-trial", str(config), str(out), str(go)]
        with (run_dir / f"trial{i}.stderr").open("w") as err:
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err))
    deadline = time.time() + args.process_timeout
    try:
        while not all((o / "ready").exists() for o in outs):  # every process has imported torch
            if any(p.poll() is not None for p in procs) or time.time() > deadline:
                raise RuntimeError("a worker process failed or timed out before starting")
            time.sleep(0.05)
        go.touch()
        start = time.perf_counter()
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
        wall_s = time.perf_counter() - start
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        for p in procs:
            if p.poll() is None:
                p.kill()
        errors = [(run_dir / f"trial{i}.stderr").read_text()[-500:] for i in range(n_trials)]
        return {"trials": n_trials, "batch_size": b, "error": f"{e}", "stderr_tail": errors}
    failed = [(i, p.returncode, (run_dir / f"trial{i}.stderr").read_text()[-500:])
              for i, p in enumerate(procs) if p.returncode != 0]
    if failed:
        return {"trials": n_trials, "batch_size": b, "error": f"worker(s) failed: {failed}"}
    per_trial, windows = [], []
    for out in outs:
        rows = read_rows(out)
        per_trial.append(epoch_stats(rows, images_per_epoch(args, b)))
        stamps = json.loads((out / "epoch_end_times.json").read_text())
        windows.append((stamps[0], stamps[-1]))  # the steady epochs lie between these
        _rmtree(out / "checkpoints")
    # The sum of steady rates counts only while all processes ran together: report how much the steady
    # windows overlapped (1.0 = fully).
    common = min(w[1] for w in windows) - max(w[0] for w in windows)
    longest = max(w[1] - w[0] for w in windows)
    return {
        "trials": n_trials,
        "batch_size": b,
        "images_per_s": sum(t["images_per_s"] for t in per_trial),
        "images_per_s_incl_eval": sum(t["images_per_s_incl_eval"] for t in per_trial),
        "per_trial_images_per_s": [t["images_per_s"] for t in per_trial],
        "steady_overlap": max(0.0, common) / longest if longest > 0 else None,
        "wall_s": wall_s,
        "threads_per_process": [int((out / "threads.txt").read_text()) for out in outs],
    }


def worker_trial(config: Path, out: Path, go: Path) -> None:
    """One process of `run_processes`: wait for the barrier, run the trial, record epoch end times."""
    from mixup_core.config import load_trial_config

    cfg = load_trial_config(str(config))
    out.mkdir(parents=True, exist_ok=True)
    (out / "ready").touch()
    while not go.exists():
        time.sleep(0.01)
    stamps: list[float] = []
    run_trial(cfg, out, LocalReporter(out, on_epoch=lambda _row: stamps.append(time.time())))
    (out / "epoch_end_times.json").write_text(json.dumps(stamps))
    (out / "threads.txt").write_text(str(torch.get_num_threads()))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run (< 2 minutes)")
    p.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default 128 512 (--small: 8 16)")
    p.add_argument("--workers", type=int, help="reference DataLoader workers (default 8; --small: 2)")
    p.add_argument("--n-train", type=int, help="synthetic training images (default 50000; --small: 32)")
    p.add_argument("--n-test", type=int, help="synthetic test images (default 10000; --small: 16)")
    p.add_argument("--image-size", type=int, help="synthetic image side (default 32; --small: 16)")
    p.add_argument("--epochs", type=int, help="epochs of single/process trials, the first is warm-up (default 3; --small: 2)")
    p.add_argument("--ref-steps", type=int, help="timed reference steps (default 200; --small: 2)")
    p.add_argument("--ref-warmup", type=int, help="untimed reference steps first (default 20; --small: 1)")
    p.add_argument("--bare-steps", type=int, help="timed steps of the bare loop (default 200; --small: 2)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="our loop's precision")
    p.add_argument("--cuda-graphs", choices=["auto", "on", "off"],
                   help="single runs with only this train.cuda_graphs (default: off and on on CUDA, off on CPU)")
    p.add_argument("--packed", type=int, nargs="*", help="packed trial counts (default 1 2 4 8; --small: 1 2)")
    p.add_argument("--processes", type=int, nargs="*", help="concurrent process counts (default 2 4; --small: 2)")
    p.add_argument("--packed-batch-size", type=int, help="batch of packed/process trials (default 128; --small: 8)")
    p.add_argument("--packed-epochs", type=int, help="epochs of packed trials, the first is warm-up (default 2)")
    p.add_argument("--process-timeout", type=float, default=300.0, help="seconds allowed to a process run")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, help="override the peak used for model FLOP utilisation")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--skip-bare", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here (rewritten after every measurement)")
    p.add_argument("--worker-trial", nargs=3, metavar=("CONFIG", "OUT", "GO"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker_trial:
        return args
    small = args.small
    defaults = {
        "batch_sizes": [8, 16] if small else [128, 512],
        "workers": 2 if small else 8,
        "n_train": 32 if small else 50_000,
        "n_test": 16 if small else 10_000,
        "image_size": 16 if small else 32,
        "epochs": 2 if small else 3,
        "ref_steps": 2 if small else 200,
        "ref_warmup": 1 if small else 20,
        "bare_steps": 2 if small else 200,
        "packed": [1, 2] if small else [1, 2, 4, 8],
        "processes": [2] if small else [2, 4],
        "packed_batch_size": 8 if small else 128,
        "packed_epochs": 2,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    if any(b > args.n_train for b in [*args.batch_sizes, args.packed_batch_size]):
        p.error(f"--n-train {args.n_train} is smaller than a batch ({max(*args.batch_sizes, args.packed_batch_size)})")
    if args.epochs < 1 or args.packed_epochs < 1:
        p.error("--epochs and --packed-epochs must be >= 1")
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.worker_trial:
        worker_trial(*(Path(a) for a in args.worker_trial))
        return {}
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    image_size = args.image_size
    fwd = forward_flops_per_image(args.model, args.num_classes, image_size)
    train_flops = 3 * fwd  # backward ~ 2x forward
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops, "given (--peak-tflops)"
    elif cuda:
        peak, peak_source = gpu_peak_tflops(device)
    else:
        peak, peak_source = measure_matmul_tflops(device, torch.float32, 1024), "measured: CPU fp32 matmul 1024^3"

    images, labels = synthetic_cifar(args.n_train, image_size, args.num_classes, args.seed)
    test_images, test_labels = synthetic_cifar(args.n_test, image_size, args.num_classes, args.seed + 1)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "model": args.model,
        "image_shape": [3, image_size, image_size],
        "n_train": args.n_train,
        "forward_gflops_per_image": fwd / 1e9,
        "train_gflops_per_image": train_flops / 1e9,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "runs": [],
        "packed": [],
        "processes": [],
    }

    def mfu(images_per_s: float) -> float:
        return images_per_s * train_flops / (peak * 1e12)

    def add_mfu(entry: dict[str, Any]) -> dict[str, Any]:
        if "images_per_s" in entry:
            entry["mfu"] = mfu(entry["images_per_s"])
        if "images_per_s_incl_eval" in entry:
            entry["mfu_incl_eval"] = mfu(entry["images_per_s_incl_eval"])
        return entry

    def save() -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    print(f"# {results['device']} | torch {torch.__version__} | {args.model} {image_size}x{image_size} "
          f"{fwd / 1e9:.3f} GFLOP/img forward, x3 for training | peak {peak:.4g} TFLOP/s ({peak_source})", flush=True)
    modes = [args.cuda_graphs] if args.cuda_graphs else (["off", "on"] if cuda else ["off"])
    with tempfile.TemporaryDirectory(prefix="mixup_throughput_") as tmp:
        work = Path(tmp)
        npz_path = work / "synthetic_cifar.npz"
        np.savez(npz_path, x_train=images, y_train=labels, x_test=test_images, y_test=test_labels)
        for batch_size in args.batch_sizes:
            run: dict[str, Any] = {"batch_size": batch_size}
            results["runs"].append(run)
            by_mode = {}
            for mode in modes:
                by_mode[mode] = add_mfu(run_ours(args, batch_size, npz_path, work, mode))
                _print_line(f"ours cuda_graphs={mode}", batch_size, by_mode[mode])
                save()
            run["ours"] = by_mode[modes[-1]]  # graphed where measured
            if "off" in by_mode and len(by_mode) > 1:
                run["ours_eager"] = by_mode["off"]
                run["graphed_over_eager"] = run["ours"]["images_per_s"] / by_mode["off"]["images_per_s"]
            if not args.skip_bare:
                for graphed in (False, True):
                    key = "bare_graphed" if graphed else "bare_eager"
                    run[key] = add_mfu(run_bare_loop(args, batch_size, device, graphed))
                    _print_line(key.replace("_", " "), batch_size, run[key])
                    save()
                if "images_per_s" in run.get("bare_graphed", {}):
                    run["ours_over_bare_graphed"] = run["ours"]["images_per_s"] / run["bare_graphed"]["images_per_s"]
            if not args.skip_reference:
                run["reference"] = add_mfu(run_ref(args, batch_size, images, labels, device))
                _print_line("reference (DataLoader, fp32)", batch_size, run["reference"])
                if "images_per_s" in run["reference"]:
                    run["speedup"] = run["ours"]["images_per_s"] / run["reference"]["images_per_s"]
                save()
        for n in args.packed:
            entry = add_mfu(run_packed(args, n, npz_path, work))
            results["packed"].append(entry)
            _print_line(f"packed x{n} (total)", entry["batch_size"], entry)
            save()
        for n in args.processes:
            entry = add_mfu(run_processes(args, n, npz_path, work))
            results["processes"].append(entry)
            _print_line(f"{n} processes (total)", entry["batch_size"], entry)
            save()
    results["ratios"] = ratios(results)
    results["targets"] = targets(results) if cuda else {}
    for line in summary_lines(results):
        print(line)
    save()
    if args.json:
        print(f"# wrote {args.json}")
    return results


def _ips(entry: Optional[dict], key: str = "images_per_s") -> Optional[float]:
    value = (entry or {}).get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def ratios(results: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    singles = {r["batch_size"]: r for r in results["runs"]}
    for b, run in singles.items():
        for name, num, den in [("graphed/eager", "ours", "ours_eager"), ("ours/bare_graphed", "ours", "bare_graphed"),
                               ("bare_graphed/bare_eager", "bare_graphed", "bare_eager"),
                               ("ours/reference", "ours", "reference")]:
            a, c = _ips(run.get(num)), _ips(run.get(den))
            if a and c and num in run and den in run:
                out[f"batch {b}: {name}"] = a / c
    for entry in results["packed"]:
        single = _ips(singles.get(entry["batch_size"], {}).get("ours"))
        if single and _ips(entry):
            out[f"packed x{entry['trials']} / single (batch {entry['batch_size']})"] = entry["images_per_s"] / single
    procs = {e["trials"]: e for e in results["processes"]}
    for entry in results["packed"]:
        other = procs.get(entry["trials"])
        if other and _ips(other) and _ips(entry):
            out[f"packed x{entry['trials']} / {entry['trials']} processes"] = entry["images_per_s"] / other["images_per_s"]
    return out


def targets(results: dict[str, Any]) -> dict[str, Any]:
    singles = {r["batch_size"]: r for r in results["runs"]}
    packed_best = max((e for e in results["packed"] if e["trials"] > 1 and _ips(e)),
                      key=lambda e: e["images_per_s"], default=None)
    measured = {
        "single batch 128, graphed, incl. eval": _ips(singles.get(128, {}).get("ours"), "images_per_s_incl_eval"),
        "packed at batch 128, total": _ips(packed_best) if packed_best and packed_best["batch_size"] == 128 else None,
        "single batch 512, graphed": _ips(singles.get(512, {}).get("ours")),
    }
    return {name: {"target": TARGETS[name], "measured": value, "met": None if value is None else value >= TARGETS[name]}
            for name, value in measured.items()}


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = ["# ratios"] + [f"#   {k}: {v:.2f}x" for k, v in results["ratios"].items()]
    if results["targets"]:
        lines.append("# targets (images/s)")
        for name, t in results["targets"].items():
            got = "not measured" if t["measured"] is None else f"{t['measured']:.0f} ({'met' if t['met'] else 'NOT met'})"
            lines.append(f"#   {name} >= {t['target']}: {got}")
    return lines


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _print_line(name: str, batch_size: int, entry: dict[str, Any]) -> None:
    if "images_per_s" not in entry:
        print(f"batch {batch_size:4d} | {name:30s} | {entry.get('skipped') or entry.get('error')}", flush=True)
        return
    line = f"batch {batch_size:4d} | {name:30s} | {entry['images_per_s']:10.1f} img/s (MFU {100 * entry['mfu']:5.2f}%)"
    if "images_per_s_incl_eval" in entry:
        line += f" | incl. eval+checkpoint {entry['images_per_s_incl_eval']:10.1f} img/s"
    if "mfu" in entry and entry["mfu"] > 1:
        line += " | MFU above 100%: the peak is too low (a busy machine?); pass --peak-tflops"
    print(line, flush=True)


if __name__ == "__main__":
    main()
