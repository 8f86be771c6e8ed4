"""Bad input across every entry point, as a user meets it (the console scripts in a fresh working
directory): sweep specs, trial configs, CLI flags, npz data files, checkpoints, tracking URIs and Ray
addresses. Each case: exit code 2, one line that names the problem and what to do, no traceback, and
nothing created: the directory holds exactly the inputs the test wrote, byte for byte, and an MLflow
server named in the command holds nothing new.

Spec validation itself is covered case by case in test_sweep_cli_errors.py; mixup-train's --set
errors in test_train_cli.py. These cases are the ones those do not reach.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch
import yaml
from fault_support import MlflowServer
from sweep_support import cli_command, cmdline, tiny_spec, user_env, write_spec

HAS_PSYCOPG2 = importlib.util.find_spec("psycopg2") is not None

TRAIN = [sys.executable, "-m", "mixup_core.cli"]
UNREACHABLE = "http://127.0.0.1:1"


# ---------------------------------------------------------------------------------------------
# inputs the cases write


def spec(**keys) -> Callable[[Path], None]:
    return lambda d: write_spec(d, tiny_spec("bad", **keys))


def npz(filename: str = "data.npz", **arrays) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        base = {"x_train": np.zeros((10, 8, 8, 3), np.uint8), "y_train": np.arange(10) % 2,
                "x_test": np.zeros((4, 8, 8, 3), np.uint8), "y_test": np.arange(4) % 2}
        base.update(arrays)
        np.savez(d / filename, **{k: v for k, v in base.items() if v is not None})
    return write


def both(*writers) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        for w in writers:
            w(d)
    return write


def text(filename: str, content: str | bytes) -> Callable[[Path], None]:
    def write(d: Path) -> None:
        path = d / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return write


def checkpoint(state: Optional[dict] = None, truncate: bool = False, raw: Optional[bytes] = None):
    """out/checkpoints/epoch_0001/state.pt: a real torch file (cut short if `truncate`) or raw bytes."""
    def write(d: Path) -> None:
        folder = d / "out" / "checkpoints" / "epoch_0001"
        folder.mkdir(parents=True)
        path = folder / "state.pt"
        if raw is not None:
            path.write_bytes(raw)
            return
        torch.save(state, path)
        if truncate:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 2])
    return write


def saved_checkpoint(*epochs: int, seed: int = 0, damage: Optional[str] = None):
    """out/ as mixup-train leaves it: config.yaml and checkpoints written by save_checkpoint (so with
    checksums), for a trial of the bundled feature_noise config with `seed`; then `damage` applied to
    every checkpoint: 'flip' (bytes inside state.pt, same size) or 'sums' (a garbled SHA256SUMS)."""
    def write(d: Path) -> None:
        from mixup_core.checkpoint import save_checkpoint
        from mixup_core.config import dump_yaml, load_trial_config

        config_yaml = dump_yaml(load_trial_config("feature_noise", [f"seed={seed}", "data.augment=false"]))
        (d / "out").mkdir()
        (d / "out" / "config.yaml").write_text(config_yaml)
        for epoch in epochs:
            folder = save_checkpoint(d / "out" / "checkpoints", epoch, {**A_STATE, "epoch": epoch}, [], config_yaml)
            if damage == "flip":
                data = bytearray((folder / "state.pt").read_bytes())
                data[len(data) // 2] ^= 0xFF
                (folder / "state.pt").write_bytes(bytes(data))
            elif damage == "sums":
                (folder / "SHA256SUMS").write_text("garbage\n")
    return write


def npz_damaged(member: str, compressed: bool = False):
    """data.npz with 8 bytes flipped inside the stored data of `member`."""
    def write(d: Path) -> None:
        import zipfile

        npz(x_train=np.ones((10, 8, 8, 3), np.uint8))(d)
        path = d / "data.npz"
        if compressed:
            with np.load(path) as f:
                arrays = dict(f)
            np.savez_compressed(path, **arrays)
        with zipfile.ZipFile(path) as z:
            info = z.getinfo(f"{member}.npy")
        raw = bytearray(path.read_bytes())
        head = info.header_offset
        start = head + 30 + int.from_bytes(raw[head + 26:head + 28], "little") + int.from_bytes(raw[head + 28:head + 30], "little")
        at = start + int(info.compress_size * 0.7)
        raw[at:at + 8] = bytes(b ^ 0xFF for b in raw[at:at + 8])
        path.write_bytes(bytes(raw))
    return write


NPZ_SWEEP = ["--set", "trial.data.name=npz", "--set", "trial.data.root=data.npz", "--set", "trial.model.name=resnet18"]
NPZ_TRAIN = ["--set", "data.name=npz", "--set", "data.root=data.npz", "--set", "model.name=resnet18", "--quiet"]
A_STATE = {"model": {"w": torch.zeros(64, 64)}, "epoch": 1, "optimizer": {}}

# (id, program, args, inputs, extra env, words the one-line message must contain)
CASES = [
    # Ray addresses
    ("address-unreachable", "sweep", ["run", "spec.yaml", "--address", "127.0.0.1:1"], spec(), {},
     ["--address 127.0.0.1:1", "no Ray cluster answers", "cluster/local-cluster up"]),
    ("address-malformed", "sweep", ["run", "spec.yaml", "--address", "foo"], spec(), {},
     ["--address foo", "not a Ray address", "HOST:PORT"]),
    ("address-bad-port", "sweep", ["run", "spec.yaml", "--address", "127.0.0.1:99999"], spec(), {},
     ["--address 127.0.0.1:99999", "not a Ray address"]),
    ("address-http-scheme", "sweep", ["run", "spec.yaml", "--address", "http://127.0.0.1:8265"], spec(), {},
     ["not a Ray address", "ray://HOST:10001"]),
    ("address-ray-client-unreachable", "sweep", ["resume", "bad", "--address", "ray://127.0.0.1:1"], None, {},
     ["--address ray://127.0.0.1:1", "no Ray cluster answers"]),
    ("address-env-unreachable", "sweep", ["run", "spec.yaml"], spec(), {"RAY_ADDRESS": "127.0.0.1:1"},
     ["$RAY_ADDRESS 127.0.0.1:1", "no Ray cluster answers"]),
    ("address-unreachable-server-tracking", "sweep",
     ["run", "spec.yaml", "--address", "127.0.0.1:1", "--tracking-uri", "{server}"], spec(), {},
     ["--address 127.0.0.1:1", "no Ray cluster answers"]),
    # tracking URIs
    ("tracking-unreachable", "sweep", ["run", "spec.yaml", "--tracking-uri", UNREACHABLE], spec(), {},
     [f"--tracking-uri {UNREACHABLE}", "no MLflow server answers", "mlflow server --host 127.0.0.1"]),
    ("tracking-nonsense-scheme", "sweep", ["run", "spec.yaml", "--tracking-uri", "nonsense://x"], spec(), {},
     ["--tracking-uri nonsense://x", "not an MLflow tracking URI", "sqlite:///PATH.db"]),
    ("tracking-env-unreachable", "sweep", ["run", "spec.yaml"], spec(), {"MLFLOW_TRACKING_URI": UNREACHABLE},
     [f"$MLFLOW_TRACKING_URI {UNREACHABLE}", "no MLflow server answers"]),
    ("tracking-unreachable-resume", "sweep", ["resume", "bad", "--tracking-uri", UNREACHABLE], None, {},
     ["no MLflow server answers"]),
    ("tracking-unreachable-best", "sweep", ["best", "bad", "--tracking-uri", UNREACHABLE], None, {},
     ["no MLflow server answers"]),
    ("tracking-nonsense-best", "sweep", ["best", "bad", "--tracking-uri", "nonsense://x"], None, {},
     ["not an MLflow tracking URI"]),
    ("tracking-sqlite-two-slashes", "sweep", ["run", "spec.yaml", "--tracking-uri", "sqlite://x.db"], spec(), {},
     ["--tracking-uri sqlite://x.db", "sqlite:///relative.db"]),
    ("best-no-store", "sweep", ["best", "bad"], None, {}, ["no MLflow database", "run a sweep first"]),
    ("resume-unknown-on-server", "sweep", ["resume", "never", "--tracking-uri", "{server}"], None, {},
     ["no sweep 'never' to resume"]),
    # storage
    ("storage-uncreatable", "sweep", ["run", "spec.yaml", "--storage-path", "/proc/nope"], spec(), {},
     ["--storage-path /proc/nope", "cannot create", "writable directory"]),
    ("storage-is-a-file", "sweep", ["run", "spec.yaml", "--storage-path", "spec.yaml"], spec(), {},
     ["--storage-path spec.yaml", "is not a directory"]),
    # specs and trial configs in specs
    ("spec-trial-bad-value", "sweep", ["run", "spec.yaml"],
     spec(trial={**tiny_spec("x")["trial"], "mixup": {"alpha": "high"}}), {}, ["mixup.alpha", "high"]),
    ("spec-is-a-folder", "sweep", ["run", "specs"], text("specs/keep", ""), {}, ["specs"]),
    ("spec-unknown-flag", "sweep", ["run", "spec.yaml", "--adress", "127.0.0.1:1"], spec(), {},
     ["unrecognized arguments: --adress"]),
    # npz data files, through a sweep (checked on the driver) and mixup-train
    ("sweep-npz-missing", "sweep", ["run", "spec.yaml", *NPZ_SWEEP], spec(), {},
     ["trial.data.root", "data.npz: no such file"]),
    ("sweep-npz-label-out-of-range", "sweep", ["run", "spec.yaml", *NPZ_SWEEP],
     both(spec(), npz(y_train=np.arange(10) * 100)), {}, ["trial.data.root", "out of range", "0..K-1"]),
    ("train-npz-wrong-shape", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(x_train=np.zeros((10, 8), np.uint8)), {}, ["x_train has shape (10, 8)", "N,H,W,C"]),
    ("train-npz-negative-label", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(y_test=np.full(4, -1)), {}, ["y_test has negative label -1", "0..K-1"]),
    ("train-npz-label-out-of-range", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(y_test=np.full(4, 99)), {}, ["largest label 99 is out of range", "re-map"]),
    ("train-npz-empty", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(x_train=np.zeros((0, 8, 8, 3), np.uint8), y_train=np.zeros(0, np.int64)), {},
     ["x_train is empty", "at least one image"]),
    ("train-npz-label-count-mismatch", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(y_train=np.zeros(7, np.int64)), {}, ["7 labels but there are 10 images"]),
    ("train-npz-missing-array", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(y_train=None), {}, ["missing array(s) y_train", "x_train, y_train, x_test, y_test"]),
    ("train-npz-not-a-zip", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     text("data.npz", "not numpy at all"), {}, ["data.npz"]),
    # trial config files and flags of mixup-train
    ("train-config-unknown-key", "train", ["cfg.yaml", "--out", "out"],
     text("cfg.yaml", yaml.safe_dump({"train": {"epoch": 3}})), {}, ["unknown key 'train.epoch'", "epochs"]),
    ("train-config-not-a-mapping", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", "- 1\n- 2\n"), {},
     ["cfg.yaml"]),
    ("train-out-is-a-file", "train", ["feature_noise", "--out", "cfg.yaml"], text("cfg.yaml", "seed: 0\n"), {},
     ["--out cfg.yaml", "not a directory"]),
    ("train-no-gpu", "train", ["feature_noise", "--out", "out", "--set", "train.device=cuda"], None, {},
     ["train.device=cuda", "no CUDA device", "auto or cpu"]),
    # checkpoints for mixup-train --resume
    ("checkpoint-truncated", "train", ["feature_noise", "--out", "out", "--resume"], checkpoint(A_STATE, truncate=True),
     {}, ["state.pt: cannot be loaded as a checkpoint", "truncated", "delete it"]),
    ("checkpoint-not-torch", "train", ["feature_noise", "--out", "out", "--resume"],
     checkpoint(raw=b"this is not a checkpoint"), {}, ["state.pt: cannot be loaded as a checkpoint"]),
    ("checkpoint-foreign-dict", "train", ["feature_noise", "--out", "out", "--resume"], checkpoint({"weights": 1}),
     {}, ["not a mixup_core checkpoint", "model/epoch"]),
    # checksummed checkpoints: a damaged one is never resumed from, and with none intact, nothing runs
    ("checkpoint-flipped-bytes", "train", ["feature_noise", "--out", "out", "--resume"], saved_checkpoint(1, damage="flip"),
     {}, ["no intact checkpoint", "epoch_0001/state.pt: checksum mismatch"]),
    ("checkpoint-all-flipped", "train", ["feature_noise", "--out", "out", "--resume"],
     saved_checkpoint(1, 2, damage="flip"), {}, ["epoch_0002/state.pt: checksum mismatch", "and 1 older"]),
    ("checkpoint-garbled-checksums", "train", ["feature_noise", "--out", "out", "--resume"],
     saved_checkpoint(1, damage="sums"), {}, ["SHA256SUMS: damaged", "cannot be trusted"]),
    ("checkpoint-state-missing", "train", ["feature_noise", "--out", "out", "--resume"],
     both(saved_checkpoint(1), lambda d: (d / "out/checkpoints/epoch_0001/state.pt").unlink()), {},
     ["no intact checkpoint", "epoch_0001: not a checkpoint (no state.pt)"]),
    # --resume with another configuration: every key that changes what is trained, by name
    ("resume-changed-seed", "train", ["feature_noise", "--out", "out", "--resume", "--set", "data.augment=false"],
     saved_checkpoint(1, seed=5), {}, ["--resume: seed (5 -> 0)", "changes what is trained"]),
    ("resume-changed-several", "train", ["feature_noise", "--out", "out", "--resume", "--set", "seed=5",
                                         "--set", "train.lr=0.1", "--set", "mixup.alpha=0.2", "--set", "train.epochs=7"],
     saved_checkpoint(1, seed=5), {}, ["train.lr (6.0 -> 0.1)", "mixup.alpha (1.0 -> 0.2)", "train.epochs (200 -> 7)"]),
    ("resume-no-trial", "train", ["feature_noise", "--out", "out", "--resume"], text("out/keep", ""), {},
     ["--resume", "holds no trial", "run without --resume"]),
    ("fresh-over-checkpoints", "train", ["feature_noise", "--out", "out"], saved_checkpoint(1), {},
     ["already holds a trial", "--resume"]),
    # numbers that are not: inf, nan, booleans, in files and in --set
    ("train-set-inf-alpha", "train", ["feature_noise", "--out", "out", "--set", "mixup.alpha=inf"], None, {},
     ["mixup.alpha", "finite number"]),
    ("train-set-nan-lr", "train", ["feature_noise", "--out", "out", "--set", "train.lr=nan"], None, {},
     ["train.lr", "finite number"]),
    ("train-set-minus-inf-noise", "train", ["feature_noise", "--out", "out", "--set", "data.noise_std=-.inf"], None, {},
     ["data.noise_std"]),
    ("train-config-inf-weight-decay", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", "train:\n  weight_decay: .inf\n"),
     {}, ["cfg.yaml: train.weight_decay", "finite number"]),
    ("train-config-nan-val-size", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", "data: {val_size: .nan}\n"),
     {}, ["data.val_size", "a fraction in [0, 1) or a count"]),
    ("train-config-bool-seed", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", "seed: true\n"), {},
     ["cfg.yaml: seed: must be a number, not a boolean"]),
    ("train-set-bool-epochs", "train", ["feature_noise", "--out", "out", "--set", "train.epochs=true"], None, {},
     ["train.epochs: must be a number, not a boolean"]),
    ("train-set-bool-stop-epoch", "train", ["feature_noise", "--out", "out", "--set", "mixup.stop_epoch=yes"], None, {},
     ["mixup.stop_epoch: must be a number"]),
    ("train-set-huge-seed", "train", ["feature_noise", "--out", "out", "--set", "seed=99999999999999999999"], None, {},
     ["seed", "less than or equal to 4294967295"]),
    # config files that are not one clean YAML mapping
    ("train-config-duplicate-key", "train", ["cfg.yaml", "--out", "out"],
     text("cfg.yaml", "train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.01\n"), {},
     ["cfg.yaml: duplicate key 'lr' at line 4 (first at line 2)"]),
    ("train-config-duplicate-section", "train", ["cfg.yaml", "--out", "out"],
     text("cfg.yaml", "mixup: {alpha: 1}\nseed: 0\nmixup: {alpha: 2}\n"), {}, ["duplicate key 'mixup' at line 3"]),
    ("train-config-empty", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", ""), {}, ["cfg.yaml: is empty"]),
    ("train-config-only-comments", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", "# seed: 1\n"), {},
     ["cfg.yaml: is empty"]),
    ("train-config-not-utf8", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", b"seed: 0\n# caf\xe9\n"), {},
     ["cfg.yaml: not UTF-8 text", "0xe9"]),
    ("train-config-utf16", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", "seed: 0\n".encode("utf-16")), {},
     ["cfg.yaml: not UTF-8 text"]),
    ("train-config-binary", "train", ["cfg.yaml", "--out", "out"], text("cfg.yaml", bytes(range(256))), {},
     ["cfg.yaml: not UTF-8 text"]),
    ("train-config-is-a-directory", "train", ["conf", "--out", "out"], text("conf/keep", ""), {},
     ["conf: is a directory, not a config file"]),
    ("train-config-yaml-directory", "train", ["conf.yaml", "--out", "out"], text("conf.yaml/keep", ""), {},
     ["conf.yaml: is a directory"]),
    ("train-set-twice", "train", ["feature_noise", "--out", "out", "--set", "train.lr=0.1", "--set", "train.lr=0.2"],
     None, {}, ["--set train.lr is given twice", "give each key once"]),
    ("train-set-duplicate-in-value", "train", ["feature_noise", "--out", "out", "--set", "mixup={alpha: 1, alpha: 2}"],
     None, {}, ["duplicate key 'alpha'"]),
    # --out that cannot be created
    ("train-out-under-a-file", "train", ["feature_noise", "--out", "cfg.yaml/trial"], text("cfg.yaml", "seed: 0\n"), {},
     ["--out cfg.yaml/trial", "is a file, not a directory"]),
    ("train-out-deep-under-a-file", "train", ["feature_noise", "--out", "cfg.yaml/a/b/c"], text("cfg.yaml", "seed: 0\n"),
     {}, ["--out cfg.yaml/a/b/c", "is a file"]),
    ("train-out-under-proc", "train", ["feature_noise", "--out", "/proc/mixup-trial"], None, {},
     ["--out /proc/mixup-trial", "cannot be created under /proc"]),
    # damaged npz members, each named
    ("train-npz-corrupt-member", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN], npz_damaged("x_train"), {},
     ["data.npz: x_train is damaged", "write the file again"]),
    ("train-npz-corrupt-compressed-member", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz_damaged("y_test", compressed=True), {}, ["data.npz: y_test is damaged"]),
    ("train-npz-object-array", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(x_test=np.empty(4, dtype=object)), {}, ["x_test is an object array", "pickle"]),
    ("train-npz-string-images", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(x_train=np.full((10, 8, 8, 3), "a")), {}, ["x_train has dtype <U1", "uint8"]),
    ("train-npz-nan-images", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     both(npz(x_train=np.full((10, 8, 8, 3), np.nan, np.float32), x_test=np.zeros((4, 8, 8, 3), np.float32))), {},
     ["x_train contains NaN"]),
    ("train-npz-test-length-mismatch", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN],
     npz(y_test=np.zeros(3, np.int64)), {}, ["y_test has 3 labels but there are 4 images"]),
    ("train-npz-crop-too-large", "train", ["feature_noise", "--out", "out", *NPZ_TRAIN, "--set", "data.augment={crop_pad: 8}"],
     npz(), {}, ["data.augment.crop_pad=8 must be below the image size 8x8"]),
    ("train-augment-on-feature-noise", "train", ["feature_noise", "--out", "out", "--set", "data.augment={flip: true}"],
     None, {}, ["data.augment", "feature_noise"]),
    ("train-augment-unknown-key", "train", ["feature_noise", "--out", "out", "--set", "data.augment={pad: 2}"],
     None, {}, ["data.augment"]),
    # grid values equal as the trial sees them (they ran as separate trials; `best` counted seeds twice)
    ("grid-int-and-float", "sweep", ["run", "spec.yaml"], spec(grid={"mixup.alpha": [1, 1.0]}), {},
     ["grid.mixup.alpha", "#1 (1)", "#2 (1.0)", "same value"]),
    ("grid-decimal-spellings", "sweep", ["run", "spec.yaml"],
     text("spec.yaml", yaml.safe_dump(tiny_spec("bad"), sort_keys=False).replace(
         "grid:\n  mixup.stop_epoch:\n  - 0\n  - null", "grid:\n  train.lr: [0.10, 0.1]")), {},
     ["grid.train.lr", "same value"]),
    ("grid-string-and-int", "sweep", ["run", "spec.yaml"], spec(grid={"seed": ["1", 1]}), {},
     ["grid.seed", "'1'", "same value"]),
    ("grid-stop-epoch-int-float", "sweep", ["run", "spec.yaml"], spec(grid={"mixup.stop_epoch": [1, 1.0, None]}), {},
     ["grid.mixup.stop_epoch", "same value"]),
    ("grid-equal-in-a-sub-grid", "sweep", ["run", "spec.yaml"],
     spec(grid=[{"seed": [0]}, {"mixup.alpha": [2, 2.0]}]), {}, ["grid.mixup.alpha", "same value"]),
    ("grid-equal-dry-run", "sweep", ["run", "spec.yaml", "--dry-run"], spec(grid={"mixup.alpha": [0.5, 0.50, 1]}), {},
     ["grid.mixup.alpha", "same value"]),
    ("grid-equal-via-set", "sweep", ["run", "spec.yaml", "--set", "grid.seed=[0, 0.0]"], spec(), {},
     ["grid.seed", "same value"]),
    # the same --set key twice
    ("set-twice", "sweep", ["run", "spec.yaml", "--set", "seed=1", "--set", "seed=2"], spec(), {},
     ["--set seed is given twice", "give each key once"]),
    ("set-twice-trial-prefix", "sweep", ["run", "spec.yaml", "--set", "seed=1", "--set", "trial.seed=1"], spec(), {},
     ["--set seed is given twice"]),
    ("set-twice-spec-key", "sweep", ["run", "spec.yaml", "--set", "max_concurrent=1", "--set", "max_concurrent=2"],
     spec(), {}, ["--set max_concurrent is given twice"]),
    ("set-twice-grid-key", "sweep", ["run", "spec.yaml", "--set", "grid.seed=[0]", "--set", "grid.seed=[1]"],
     spec(), {}, ["--set grid.seed is given twice"]),
    ("set-twice-dry-run", "sweep", ["run", "spec.yaml", "--dry-run", "--set", "mixup.alpha=1", "--set",
                                    "mixup.alpha=2"], spec(), {}, ["--set mixup.alpha is given twice"]),
    # grid size, computed before the grid is expanded
    ("grid-ten-million", "sweep", ["run", "spec.yaml"],
     spec(grid={"seed": list(range(100_000)), "mixup.alpha": [0.1 * i + 0.1 for i in range(100)]}), {},
     ["grid: 10,000,000 trials", "above max_trials (100,000)", "--set max_trials="]),
    ("grid-ten-million-dry-run", "sweep", ["run", "spec.yaml", "--dry-run"],
     spec(grid={"seed": list(range(100_000)), "mixup.alpha": [0.1 * i + 0.1 for i in range(100)]}), {},
     ["grid: 10,000,000 trials"]),
    ("grid-above-own-max-trials", "sweep", ["run", "spec.yaml"], spec(grid={"seed": [0, 1, 2, 3]}, max_trials=3), {},
     ["grid: 4 trials", "above max_trials (3)"]),
    ("grid-list-above-max-trials", "sweep", ["run", "spec.yaml", "--set", "max_trials=5"],
     spec(grid=[{"seed": [0, 1, 2]}, {"seed": [5, 6, 7]}]), {}, ["grid: 6 trials", "3 + 3", "above max_trials (5)"]),
    ("max-trials-zero", "sweep", ["run", "spec.yaml", "--set", "max_trials=0"], spec(), {}, ["max_trials"]),
    # a validation split that leaves no training data (the trial's own rule, on the driver)
    ("val-size-count-equals-n-train", "sweep", ["run", "spec.yaml", "--set", "data.val_size=200"], spec(), {},
     ["data.val_size: 200 leaves no training examples out of 200"]),
    ("val-size-in-grid", "sweep", ["run", "spec.yaml"], spec(grid={"data.val_size": [10, 500]}), {},
     ["data.val_size: 500 leaves no training examples out of 200", "data.val_size=500"]),
    ("val-size-against-n-train-grid", "sweep", ["run", "spec.yaml", "--set", "data.val_size=5"],
     spec(grid={"data.n_train": [4, 200]}), {}, ["leaves no training examples out of 4", "data.n_train=4"]),
    ("val-size-dry-run", "sweep", ["run", "spec.yaml", "--dry-run", "--set", "data.val_size=300"], spec(), {},
     ["leaves no training examples out of 200"]),
    ("val-size-cifar", "sweep", ["run", "spec.yaml", "--set", "data.name=cifar10", "--set", "model.name=resnet18",
                                 "--set", "data.val_size=50000"], spec(), {}, ["out of 50000"]),
    ("val-size-npz-file-length", "sweep", ["run", "spec.yaml", *NPZ_SWEEP, "--set", "data.val_size=10"],
     both(spec(), npz()), {}, ["data.val_size", "leaves no training examples out of 10"]),
    # storage that exists but cannot be written
    ("storage-existing-unwritable", "sweep", ["run", "spec.yaml", "--storage-path", "/sys"], spec(), {},
     ["--storage-path /sys", "cannot write in /sys"]),
    ("storage-under-unwritable", "sweep", ["run", "spec.yaml", "--storage-path", "/sys/ray_results"], spec(), {},
     ["cannot create /sys/ray_results"]),
    ("storage-env-unwritable", "sweep", ["run", "spec.yaml"], spec(), {"MIXUP_SWEEP_STORAGE": "/sys"},
     ["$MIXUP_SWEEP_STORAGE /sys", "cannot write in /sys"]),
    # an address that accepts TCP but is not a Ray GCS (a hang of minutes before)
    ("address-silent-listener", "sweep", ["run", "spec.yaml", "--address", "{silent}"], spec(), {},
     ["not a Ray head", "sent nothing within"]),
    ("address-http-server", "sweep", ["run", "spec.yaml", "--address", "{server_addr}"], spec(), {},
     ["not a Ray head", "HTTP/1 server"]),
    ("address-ray-client-http-server", "sweep", ["run", "spec.yaml", "--address", "ray://{server_addr}"], spec(), {},
     ["not a Ray client server", "HTTP/1"]),
    ("address-env-silent-listener", "sweep", ["run", "spec.yaml"], spec(), {"RAY_ADDRESS": "{silent}"},
     ["$RAY_ADDRESS", "not a Ray head"]),
    ("address-silent-resume", "sweep", ["resume", "bad", "--address", "{silent}"], None, {}, ["not a Ray head"]),
    # tracking stores whose driver is missing, or that are not stores
    # The test extra installs psycopg2 (the production-backend tests use it): then the next check speaks.
    ("tracking-postgres-no-driver", "sweep", ["run", "spec.yaml", "--tracking-uri", "postgresql://u:p@127.0.0.1:1/db"],
     spec(), {}, ["no postgresql server answers at 127.0.0.1:1"] if HAS_PSYCOPG2 else
     ["postgresql driver psycopg2 is not installed", "pip install psycopg2-binary"]),
    ("tracking-postgres-pg8000", "sweep", ["run", "spec.yaml", "--tracking-uri", "postgresql+pg8000://127.0.0.1/db"],
     spec(), {}, ["driver pg8000 is not installed"]),
    ("tracking-postgres-unknown-driver", "sweep", ["run", "spec.yaml", "--tracking-uri", "postgresql+nope://h/db"],
     spec(), {}, ["unknown database driver 'nope'"]),
    ("tracking-mysql", "sweep", ["run", "spec.yaml", "--tracking-uri", "mysql://u:p@127.0.0.1/db"], spec(), {},
     ["mysql driver MySQLdb is not installed", "mysqlclient"]),
    ("tracking-mysql-pymysql", "sweep", ["run", "spec.yaml", "--tracking-uri", "mysql+pymysql://127.0.0.1/db"],
     spec(), {}, ["driver pymysql is not installed"]),
    ("tracking-mssql", "sweep", ["run", "spec.yaml", "--tracking-uri", "mssql://127.0.0.1/db"], spec(), {},
     ["driver pyodbc is not installed"]),
    ("tracking-databricks-no-workspace", "sweep", ["run", "spec.yaml", "--tracking-uri", "databricks://"], spec(),
     {"HOME": "{cwd}/home", "DATABRICKS_HOST": ""}, ["--tracking-uri databricks://"]),
    ("tracking-databricks-unconfigured", "sweep", ["run", "spec.yaml", "--tracking-uri", "databricks://profile"],
     spec(), {"HOME": "{cwd}/home"}, ["no Databricks workspace is configured"]),
    ("tracking-postgres-best", "sweep", ["best", "bad", "--tracking-uri", "postgresql://127.0.0.1:1/db"], None, {},
     ["no postgresql server answers at 127.0.0.1:1"] if HAS_PSYCOPG2 else ["psycopg2 is not installed"]),
    ("tracking-sqlite-is-a-directory", "sweep", ["run", "spec.yaml", "--tracking-uri", "sqlite:///store"],
     both(spec(), text("store/keep", "")), {}, ["is a directory, not an SQLite database file"]),
    ("tracking-sqlite-not-a-database", "sweep", ["run", "spec.yaml", "--tracking-uri", "sqlite:///spec.yaml"],
     spec(), {}, ["spec.yaml is not an SQLite database"]),
    ("tracking-sqlite-no-such-directory", "sweep", ["run", "spec.yaml", "--tracking-uri", "sqlite:///nope/m.db"],
     spec(), {}, ["the directory", "nope does not exist"]),
    ("tracking-sqlite-unwritable", "sweep", ["run", "spec.yaml", "--tracking-uri", "sqlite:////sys/m.db"], spec(), {},
     ["cannot write in /sys"]),
    ("tracking-sqlite-env-directory", "sweep", ["run", "spec.yaml"], both(spec(), text("store/keep", "")),
     {"MLFLOW_TRACKING_URI": "sqlite:///store"}, ["$MLFLOW_TRACKING_URI", "is a directory"]),
    ("tracking-sqlite-not-a-database-best", "sweep", ["best", "bad", "--tracking-uri", "sqlite:///spec.yaml"],
     spec(), {}, ["is not an SQLite database"]),
    ("tracking-sqlite-directory-resume", "sweep", ["resume", "bad", "--tracking-uri", "sqlite:///store"],
     text("store/keep", ""), {}, ["is a directory"]),
    # spec files that are not UTF-8 YAML mappings
    ("spec-not-utf8", "sweep", ["run", "spec.yaml"], text("spec.yaml", b"name: bad\ntrial: {seed: \xff}\n"), {},
     ["spec.yaml: not UTF-8 text", "0xff"]),
    ("spec-latin1", "sweep", ["run", "spec.yaml"], text("spec.yaml", "name: caf\u00e9\n".encode("latin-1")), {},
     ["not UTF-8 text"]),
    ("spec-utf16", "sweep", ["run", "spec.yaml"], text("spec.yaml", "name: bad\n".encode("utf-16")), {},
     ["not UTF-8 text"]),
    ("spec-binary", "sweep", ["run", "spec.yaml", "--dry-run"], text("spec.yaml", bytes(range(256))), {},
     ["spec.yaml"]),
    ("spec-empty", "sweep", ["run", "spec.yaml"], text("spec.yaml", ""), {}, ["spec.yaml"]),
    ("spec-missing", "sweep", ["run", "nope.yaml"], None, {}, ["nope.yaml"]),
    ("spec-is-a-folder-dry-run", "sweep", ["run", "specs", "--dry-run"], text("specs/keep", ""), {},
     ["specs", "is a directory"]),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("bad_input_server")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def silent():
    """HOST:PORT of a listener that accepts connections and never says anything (not a Ray GCS)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    accepted = []
    stop = threading.Event()

    def serve():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


def tree(directory: Path) -> dict[str, str]:
    """Every file and folder under `directory`, with a hash of each file's bytes."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = str(path.relative_to(directory))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def processes_in(directory: Path) -> list[str]:
    """Processes whose working directory is `directory` or below (a Ray a case started would be)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(directory) or cwd.startswith(f"{directory}/"):
                found.append(f"{entry.name} {cmdline(int(entry.name))}")
    return found


def check_case(case, root: Path, fixtures: dict[str, str], srv) -> Optional[str]:
    """Run one case; None when it kept the promise, else what went wrong."""
    case_id, program, args, inputs, env, words = case
    cwd = root / case_id / "cwd"
    cwd.mkdir(parents=True)
    if inputs is not None:
        inputs(cwd)
    values = {**fixtures, "cwd": str(cwd)}

    def fill(text: str) -> str:
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        return text

    args = [fill(a) for a in args]
    env = {k: fill(v) for k, v in env.items()}
    on_server = srv.snapshot() if srv is not None else None
    before = tree(cwd)
    command = (cli_command() if program == "sweep" else TRAIN) + args
    merged = {**user_env(), "PYTHONPATH": os.pathsep.join(sys.path), **env}
    try:
        res = subprocess.run(command, cwd=cwd, env=merged, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "did not end within 120 s"
    problems = []
    if res.returncode != 2:
        problems.append(f"exit code {res.returncode}")
    if "Traceback" in res.stderr:
        problems.append("printed a Traceback")
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    if "unrecognized arguments" in res.stderr:  # argparse: usage, then the one error line
        lines = [line for line in lines if "error:" in line]
    if len(lines) != 1:
        problems.append(f"{len(lines)} lines instead of one")
    missing = [w for w in words if not lines or w not in lines[0]]
    if missing:
        problems.append(f"the line lacks {missing}")
    if res.stdout:
        problems.append("wrote to stdout")
    after = tree(cwd)
    if after != before:
        changed = sorted(set(after.items()) ^ set(before.items()))
        problems.append(f"created or changed {[k for k, _ in changed][:5]}")
    left = processes_in(cwd)
    if left:
        problems.append(f"left processes behind: {left[:3]}")
    if srv is not None and srv.snapshot() != on_server:
        problems.append("created something on the MLflow server")
    if not problems:
        return None
    return f"{case_id}: {'; '.join(problems)}\n    stderr: {res.stderr.strip()[-800:]}"


def test_the_bad_input_corpus_is_one_clear_line_exit_2_and_creates_nothing(tmp_path, request, silent):
    """Every case at once, two at a time: one failure lists every case that broke the promise
    (a traceback, an exit code other than 2, more than one line, a file, an MLflow experiment or run,
    or a process left behind)."""
    from concurrent.futures import ThreadPoolExecutor

    assert len(CASES) >= 70 and len({c[0] for c in CASES}) == len(CASES)
    srv = request.getfixturevalue("server")
    fixtures = {"server": srv.uri, "server_addr": srv.uri.split("://", 1)[1], "silent": silent}
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: check_case(c, tmp_path, fixtures, srv if "{server" in str(c[2]) else None),
                                CASES))
    failures = [r for r in results if r is not None]
    assert not failures, f"{len(failures)} of {len(CASES)} cases broke the promise:\n" + "\n".join(failures)


def _check_storage_repeatedly(path: str, times: int) -> list[str]:
    from sweeps.preflight import check_storage_path

    problems = []
    for _ in range(times):
        try:
            check_storage_path(path)
        except Exception as e:  # noqa: BLE001 - every failure is the finding
            problems.append(str(e))
    return problems


def test_sweeps_started_at_once_in_a_new_directory_all_pass_the_storage_check(tmp_path):
    # Two `mixup-sweep run`s started together in a fresh directory both check ./ray_results. The
    # check used to create and remove that very directory, so one sweep saw it vanish ("is not a
    # directory", seen in CI), or its removal hit the other sweep's Ray. Four processes hammer it here.
    import multiprocessing

    path = str(tmp_path / "new" / "ray_results")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        problems = pool.starmap(_check_storage_repeatedly, [(path, 2000)] * 4)
    assert problems == [[]] * 4
    assert list(tmp_path.iterdir()) == []  # and nothing is left behind
