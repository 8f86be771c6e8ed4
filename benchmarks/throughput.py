"""Training throughput of mixup_core's loop against a reference loop written the common way.

OURS: `mixup_core.trial.run_trial` on CIFAR-shaped synthetic data (uint8 32x32x3, 10 classes, written
as an .npz and loaded through the real data path): images resident on the device, batched on-device
crop/flip + normalisation, bf16 autocast and channels_last on CUDA, Mixup from a device generator.
Its throughput is the `images_per_s` run_trial itself logs per epoch (training steps only; the epoch
ends with a device sync); epoch 1 is warm-up and is left out, the median of the rest is reported.
REFERENCE: benchmarks/reference_loop.py (DataLoader + CPU transforms, fp32, standard Mixup, SGD).

Both train the same architecture at the same batch size in the same process (ours first). Model FLOP
utilisation = images/s x training FLOPs per image (3 x the forward FLOPs that
`torch.utils.flop_counter.FlopCounterMode` counts: convolutions and matmuls) / peak. The peak is the
dense bf16 tensor-core figure of the GPU from a small table (or measured with a large bf16 matmul on
an unknown GPU, or an fp32 matmul on CPU), the same yardstick for both loops.

    python benchmarks/throughput.py --device cpu --small --json /tmp/throughput.json   # smoke, ~1 min
    python benchmarks/throughput.py --device cuda --json results/throughput_h100.json  # full size
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: reference_loop is beside us

from reference_loop import run_reference  # noqa: E402

from mixup_core.config import validate_trial_config  # noqa: E402
from mixup_core.models.resnet import preact_resnet18, resnet18  # noqa: E402
from mixup_core.trial import run_trial  # noqa: E402

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


def run_ours(args, batch_size: int, npz_path: Path, work_dir: Path) -> dict[str, Any]:
    cfg = validate_trial_config(
        {
            "seed": args.seed,
            "data": {"name": "npz", "root": str(npz_path), "val_size": 0, "augment": True},
            "model": {"name": args.model},
            "train": {
                "epochs": args.epochs,
                "batch_size": batch_size,
                "eval_batch_size": 1024,
                "lr": 0.1,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "schedule": "cosine",
                "precision": args.precision,
                "device": args.device,
            },
            "mixup": {"alpha": 1.0},
        },
        source="benchmark",
    )
    out_dir = work_dir / f"ours_bs{batch_size}"
    if args.cuda_graphs is not None:
        cfg.train.cuda_graphs = args.cuda_graphs
    start = time.perf_counter()
    summary = run_trial(cfg, out_dir)
    wall_s = time.perf_counter() - start
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    per_epoch = [r["images_per_s"] for r in rows]
    steady = per_epoch[1:] or per_epoch  # epoch 1 carries the warm-up (allocator, cuDNN, lazy init)
    elapsed = [r["elapsed_s"] for r in rows]
    return {
        "images_per_s": statistics.median(steady),
        "epoch_images_per_s": per_epoch,
        "epoch_wall_s": [b - a for a, b in zip([0.0] + elapsed[:-1], elapsed)],  # incl. eval + checkpoint
        "trial_wall_s": wall_s,
        "status": summary["status"],
        "final_train_loss": rows[-1]["train_loss"] if rows else None,
        "precision": resolved_precision(args.precision, args.device),
        "cuda_graphs": getattr(cfg.train, "cuda_graphs", None),
    }


def resolved_precision(precision: str, device: str) -> str:
    """What run_trial does with train.precision (auto = bf16 autocast on CUDA, fp32 on CPU)."""
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def run_ref(args, batch_size: int, images: np.ndarray, labels: np.ndarray, device: torch.device) -> dict[str, Any]:
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--small", action="store_true", help="tiny sizes for a CPU smoke run (~1 minute)")
    p.add_argument("--model", choices=sorted(MODELS), default="resnet18")
    p.add_argument("--batch-sizes", type=int, nargs="+", help="default 128 512 (--small: 8 16)")
    p.add_argument("--workers", type=int, help="reference DataLoader workers (default 8; --small: 2)")
    p.add_argument("--n-train", type=int, help="synthetic training images (default 50000; --small: 32)")
    p.add_argument("--n-test", type=int, help="synthetic test images (default 10000; --small: 16)")
    p.add_argument("--epochs", type=int, help="epochs of our loop, the first is warm-up (default 3; --small: 2)")
    p.add_argument("--ref-steps", type=int, help="timed reference steps (default 200; --small: 2)")
    p.add_argument("--ref-warmup", type=int, help="untimed reference steps first (default 20; --small: 1)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto", help="our loop's precision")
    p.add_argument("--cuda-graphs", choices=["auto", "on", "off"], help="our loop's train.cuda_graphs")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--peak-tflops", type=float, help="override the peak used for model FLOP utilisation")
    p.add_argument("--skip-reference", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    small = args.small
    defaults = {
        "batch_sizes": [8, 16] if small else [128, 512],
        "workers": 2 if small else 8,
        "n_train": 32 if small else 50_000,
        "n_test": 16 if small else 10_000,
        "epochs": 2 if small else 3,
        "ref_steps": 2 if small else 200,
        "ref_warmup": 1 if small else 20,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but no CUDA device is available")
    if any(b > args.n_train for b in args.batch_sizes):
        p.error(f"--n-train {args.n_train} is smaller than a batch ({max(args.batch_sizes)})")
    return args


def main(argv=None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    image_size = 32
    fwd = forward_flops_per_image(args.model, args.num_classes, image_size)
    train_flops = 3 * fwd  # backward ~ 2x forward
    if args.peak_tflops:
        peak, peak_source = args.peak_tflops, "given (--peak-tflops)"
    elif device.type == "cuda":
        peak, peak_source = gpu_peak_tflops(device)
    else:
        peak, peak_source = measure_matmul_tflops(device, torch.float32, 1024), "measured: CPU fp32 matmul 1024^3"

    images, labels = synthetic_cifar(args.n_train, image_size, args.num_classes, args.seed)
    test_images, test_labels = synthetic_cifar(args.n_test, image_size, args.num_classes, args.seed + 1)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
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
    }

    def mfu(images_per_s: float) -> float:
        return images_per_s * train_flops / (peak * 1e12)

    print(f"# {results['device']} | torch {torch.__version__} | {args.model} "
          f"{fwd / 1e9:.3f} GFLOP/img forward, x3 for training | peak {peak:.4g} TFLOP/s ({peak_source})")
    with tempfile.TemporaryDirectory(prefix="mixup_throughput_") as tmp:
        work = Path(tmp)
        npz_path = work / "synthetic_cifar.npz"
        np.savez(npz_path, x_train=images, y_train=labels, x_test=test_images, y_test=test_labels)
        for batch_size in args.batch_sizes:
            run: dict[str, Any] = {"batch_size": batch_size}
            ours = run_ours(args, batch_size, npz_path, work)
            ours["mfu"] = mfu(ours["images_per_s"])
            run["ours"] = ours
            for ckpt in (work / f"ours_bs{batch_size}").glob("checkpoints"):
                _rmtree(ckpt)  # a full-size checkpoint is ~90 MB; keep the temp dir small
            if not args.skip_reference:
                ref = run_ref(args, batch_size, images, labels, device)
                ref["mfu"] = mfu(ref["images_per_s"])
                run["reference"] = ref
                run["speedup"] = ours["images_per_s"] / ref["images_per_s"]
            results["runs"].append(run)
            _print_run(run)
            if any(run[k]["mfu"] > 1 for k in ("ours", "reference") if k in run):
                print("# MFU above 100%: the measured peak is too low (a busy machine?); pass --peak-tflops")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"# wrote {args.json}")
    return results


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _print_run(run: dict[str, Any]) -> None:
    ours = run["ours"]
    line = (f"batch {run['batch_size']:4d} | ours {ours['images_per_s']:10.1f} img/s "
            f"(MFU {100 * ours['mfu']:5.2f}%, {ours['precision']})")
    if "reference" in run:
        ref = run["reference"]
        line += (f" | reference {ref['images_per_s']:10.1f} img/s (MFU {100 * ref['mfu']:5.2f}%, fp32, "
                 f"{ref['workers']} workers) | ours/reference {run['speedup']:.2f}x")
    print(line, flush=True)


if __name__ == "__main__":
    main()
