"""The training loop end to end on CPU: outputs, early stop, exact resume after kill -9, divergence."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from mixup_core.checkpoint import list_checkpoints, load_checkpoint
from mixup_core.config import validate_trial_config
from mixup_core.reporting import LocalReporter
from mixup_core.trial import run_trial

TIMING_KEYS = {"images_per_s", "elapsed_s"}


def small_config(**sections):
    raw = {
        "seed": 3,
        "data": {"name": "feature_noise", "n_train": 200, "n_test": 400},
        "train": {"epochs": 6, "batch_size": 50, "lr": 0.5, "momentum": 0.0, "weight_decay": 0.0,
                  "device": "cpu", "checkpoint_interval_s": 0},
        "mixup": {"alpha": 1.0, "stop_epoch": 3},
    }
    for k, v in sections.items():
        raw.setdefault(k, {}).update(v)
    return validate_trial_config(raw)


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


class RecordingReporter(LocalReporter):
    def __init__(self, out_dir, restore=None):
        super().__init__(out_dir)
        self.restore = restore
        self.reports = []

    def checkpoint_to_restore(self):
        return self.restore

    def report(self, metrics, checkpoint_dir):
        self.reports.append((metrics["epoch"], checkpoint_dir and Path(checkpoint_dir).name))


def test_outputs_and_early_stop_switch(tmp_path):
    cfg = small_config()
    rep = RecordingReporter(tmp_path)
    summary = run_trial(cfg, tmp_path, rep)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["mixup_active"] for r in rows] == [1, 1, 1, 0, 0, 0]
    required = {"epoch", "mixup_active", "lr", "train_loss", "val_acc", "test_acc", "test_loss", "test_ece",
                "images_per_s", "elapsed_s", "test_acc_common", "test_acc_rare", "feat_common", "feat_rare"}
    assert required <= set(rows[0])
    assert rep.reports == [(e, f"epoch_{e:04d}") for e in range(1, 7)]
    assert set(summary) >= {"best_epoch", "best_val_acc", "test_acc_at_best", "final_test_acc", "epochs", "wall_s"}
    assert summary["status"] == "finished" and summary["epochs"] == 6
    assert summary["final_test_acc"] == rows[-1]["test_acc"]
    best = max(rows, key=lambda r: r["val_acc"])
    assert summary["best_val_acc"] == best["val_acc"]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert (tmp_path / "config.yaml").exists()
    # only the newest checkpoint is kept by default, and it is loadable with weights_only
    kept = list_checkpoints(tmp_path / "checkpoints")
    assert [p.name for p in kept] == ["epoch_0006"]
    state, history = load_checkpoint(kept[0])
    assert state["epoch"] == 6 and len(history) == 6


def test_resume_from_any_checkpoint_is_bit_identical(tmp_path):
    cfg = small_config(train={"keep_epochs": [2, 4]})
    full = tmp_path / "full"
    run_trial(cfg, full)
    expected = without_timing(read_jsonl(full / "metrics.jsonl"))
    for epoch in (2, 4):
        out = tmp_path / f"from_{epoch}"
        summary = run_trial(cfg, out, RecordingReporter(out, restore=full / "checkpoints" / f"epoch_{epoch:04d}"))
        assert without_timing(read_jsonl(out / "metrics.jsonl")) == expected
        assert summary["epochs"] == 6


def test_kill_9_at_a_random_moment_then_resume_matches(tmp_path):
    """mixup-train is SIGKILLed at a random point mid-run; --resume must end with the same metrics."""
    sets = ["--set", "train.epochs=30", "--set", "data.n_train=400", "--set", "train.batch_size=20",
            "--set", "mixup.stop_epoch=12", "--set", "train.device=cpu", "--set", "seed=5",
            "--set", "train.checkpoint_interval_s=0"]  # a checkpoint every epoch: the kill lands anywhere
    full, killed = tmp_path / "full", tmp_path / "killed"
    cmd = [sys.executable, "-m", "mixup_core.cli", "feature_noise", "--quiet"]
    subprocess.run(cmd + ["--out", str(full)] + sets, check=True, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(killed)] + sets, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(os.getpid())
    target_lines = rng.randint(2, 20)
    deadline = time.time() + 120
    metrics = killed / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= target_lines:
            time.sleep(rng.uniform(0, 0.05))  # land anywhere in the next epoch, checkpoint writes included
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    res = subprocess.run(cmd + ["--out", str(killed), "--resume"] + sets, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert without_timing(read_jsonl(killed / "metrics.jsonl")) == without_timing(read_jsonl(full / "metrics.jsonl"))


# A regime where a huge step overflows to inf within two epochs, and inf - inf gives a NaN loss.
EXPLODING = {
    "seed": 3,
    "data": {"name": "feature_noise", "n_train": 300, "dim": 50, "rare_fraction": 0.1, "feature_noise": 0.3},
    "model": {"name": "two_layer_cnn", "width": 10, "init_std": 0.01},
    "train": {"lr": 1.0e36, "momentum": 0.9, "epochs": 4, "batch_size": 128, "device": "cpu"},
    "mixup": {"stop_epoch": 0},
}


def test_nan_loss_stops_the_trial_and_says_where(tmp_path):
    summary = run_trial(validate_trial_config(EXPLODING), tmp_path / "api")
    assert summary["status"] == "diverged"
    assert summary["error"].startswith("diverged at epoch ")
    stored = json.loads((tmp_path / "api" / "summary.json").read_text())
    assert stored["error"] == summary["error"]
    config = tmp_path / "exploding.yaml"
    config.write_text(yaml.safe_dump(EXPLODING))
    res = subprocess.run([sys.executable, "-m", "mixup_core.cli", str(config), "--quiet", "--out",
                          str(tmp_path / "cli")], capture_output=True, text=True)
    assert res.returncode == 1
    assert "diverged at epoch" in res.stdout


def test_checkpoints_follow_the_interval_and_forced_epochs(tmp_path):
    """With a long interval only the last epoch, keep_epochs and epochs the runner asks for get a
    checkpoint; the metrics do not depend on it."""

    class AskingReporter(RecordingReporter):
        def report(self, metrics, checkpoint_dir):
            self.reports.append((metrics["epoch"], checkpoint_dir is not None))

        def needs_checkpoint(self, epoch):
            return epoch == 2

    every = small_config(train={"checkpoint_interval_s": 0})
    sparse = small_config(train={"checkpoint_interval_s": 3600, "keep_epochs": [4]})
    run_trial(every, tmp_path / "every")
    rep = AskingReporter(tmp_path / "sparse")
    run_trial(sparse, tmp_path / "sparse", rep)
    assert [e for e, has in rep.reports if has] == [2, 4, 6]
    assert without_timing(read_jsonl(tmp_path / "sparse" / "metrics.jsonl")) == \
        without_timing(read_jsonl(tmp_path / "every" / "metrics.jsonl"))
