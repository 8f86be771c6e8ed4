"""CUDA-graph training (mixup_core/graphed_step.py).

CPU: which path `train.cuda_graphs` picks, that a bad choice fails before anything is written, and that
the static-buffer step program a graph captures reproduces the eager loop bit for bit (run eagerly).
GPU (`-m gpu`, run by benchmarks/gpu_check.sh): graph replay against eager within bf16 tolerance, the
generators advancing exactly as eager, no host sync while replaying, recapture when Mixup stops, and
resume of a graphed trial.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from image_files import write_images

from mixup_core.config import ConfigError, load_trial_config, validate_trial_config
from mixup_core.data import build_dataset
from mixup_core.graphed_step import GraphedEpochs, StaticStep, StepGraphs, use_cuda_graphs
from mixup_core.mixup import Mixup
from mixup_core.reporting import LocalReporter
from mixup_core.step import new_state, train_one_epoch
from mixup_core.trial import run_trial, select_epoch_trainer

TIMING_KEYS = {"images_per_s", "elapsed_s"}
CUDA = torch.device("cuda")
CPU = torch.device("cpu")


def feature_noise_config(**train):
    t = {"epochs": 4, "batch_size": 40, "lr": 0.5, "momentum": 0.9, "weight_decay": 5e-4, "device": "cpu"}
    t.update(train)
    return validate_trial_config({"seed": 3, "data": {"name": "feature_noise", "n_train": 200, "n_test": 200},
                                  "model": {"activation_power": 1.0, "init_std": 0.1}, "train": t, "mixup": {"alpha": 1.0, "stop_epoch": 2, "per_sample": True}})


def image_config(npz: Path, model: str = "resnet18", **train):
    t = {"epochs": 2, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "device": "cpu", "eval_batch_size": 64}
    t.update(train)
    return validate_trial_config({"seed": 1, "data": {"name": "npz", "root": str(npz), "val_size": 16},
                                  "model": {"name": model}, "train": t, "mixup": {"alpha": 1.0, "stop_epoch": 1}})


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def assert_states_equal(a, b):
    sa, sb = a.to_dict(), b.to_dict()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert sa["optimizer"]["param_groups"] == sb["optimizer"]["param_groups"]
    for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])
    assert torch.equal(sa["data_gen"], sb["data_gen"]) and torch.equal(sa["mixup_gen"], sb["mixup_gen"])


# ------------------------------------------------------------------------------------------------
# CPU: the automatic choice


@pytest.mark.parametrize(
    "choice, device, model, expected",
    [
        ("auto", CPU, "resnet18", False),
        ("auto", CUDA, "resnet18", True),
        ("auto", CUDA, "preact_resnet18", True),
        ("auto", CUDA, "two_layer_cnn", False),  # tiny model: not worth a capture by default
        ("on", CUDA, "two_layer_cnn", True),
        ("off", CUDA, "resnet18", False),
        ("off", CPU, "resnet18", False),
    ],
)
def test_auto_choice_of_the_step_path(choice, device, model, expected):
    data = {"name": "feature_noise"} if model == "two_layer_cnn" else {"name": "npz", "root": "unused.npz"}
    cfg = validate_trial_config({"data": data, "model": {"name": model}, "train": {"cuda_graphs": choice}})
    assert use_cuda_graphs(cfg, device) is expected


def test_default_is_auto_and_eager_on_cpu():
    cfg = feature_noise_config()
    assert cfg.train.cuda_graphs == "auto"
    assert select_epoch_trainer(cfg, CPU) is train_one_epoch


def test_on_without_cuda_is_a_one_line_error_before_anything_is_written(tmp_path):
    cfg = feature_noise_config(cuda_graphs="on")
    with pytest.raises(ConfigError, match=r"train\.cuda_graphs=on needs a CUDA device.*auto, on, off"):
        run_trial(cfg, tmp_path / "never")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("value, needle", [("on", "train.cuda_graphs=on needs a CUDA device"),
                                           ("sometimes", "train.cuda_graphs")])
def test_cli_refuses_bad_cuda_graphs_cleanly(tmp_path, value, needle):
    config = tmp_path / "c.yaml"
    config.write_text("data: {name: feature_noise, n_train: 40, n_test: 40}\ntrain: {epochs: 1, device: cpu}\n")
    out = tmp_path / "never"
    res = subprocess.run([sys.executable, "-m", "mixup_core.cli", str(config), "--quiet", "--out", str(out),
                          "--set", f"train.cuda_graphs={value}"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_yaml_on_and_off_are_read_as_words(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {cuda_graphs: off}\n")  # YAML 1.1 reads a bare off as false
    assert load_trial_config(str(config)).train.cuda_graphs == "off"
    assert load_trial_config(str(config), ["train.cuda_graphs=on"]).train.cuda_graphs == "on"
    with pytest.raises(ConfigError, match="train.cuda_graphs.*'auto', 'on' or 'off'"):
        load_trial_config(str(config), ["train.cuda_graphs=1"])


def test_warmup_is_required_before_a_capture():
    with pytest.raises(ValueError, match="warmup_steps"):
        StepGraphs(capture=True, warmup_steps=0)


# ------------------------------------------------------------------------------------------------
# CPU: the captured program, run eagerly, is the eager loop


def test_static_program_reproduces_eager_epochs_bit_for_bit():
    """Across the Mixup switch (epoch 2), with momentum, weight decay and per-example lambdas."""
    cfg = feature_noise_config()
    data = build_dataset(cfg.data, cfg.seed, CPU)
    mixup = Mixup(cfg.mixup)
    eager, static = new_state(cfg, data, CPU), new_state(cfg, data, CPU)
    trainer = GraphedEpochs(capture=False)
    losses = []
    for _ in range(cfg.train.epochs):
        expected = train_one_epoch(cfg, data, eager, mixup)
        got = trainer(cfg, data, static, mixup)
        assert got == expected  # (mean loss, first lr, images) exactly
        losses.append(got[0])
        eager.epoch += 1
        static.epoch += 1
        assert_states_equal(eager, static)
    assert losses[-1] < losses[0]  # it trained
    assert trainer.graphs.captures == 0  # nothing is captured off CUDA


def test_static_program_on_a_resnet_keeps_batchnorm_and_augmentation_exact(tmp_path):
    cfg = image_config(write_images(tmp_path / "d.npz", n_train=48, n_test=16), epochs=1)  # 2 steps of 16
    data = build_dataset(cfg.data, cfg.seed, CPU)
    mixup = Mixup(cfg.mixup)
    eager, static = new_state(cfg, data, CPU), new_state(cfg, data, CPU)
    assert train_one_epoch(cfg, data, eager, mixup) == GraphedEpochs(capture=False)(cfg, data, static, mixup)
    assert_states_equal(eager, static)
    bn = static.model.bn1
    assert int(bn.num_batches_tracked) == 2 and not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))


# ------------------------------------------------------------------------------------------------
# GPU

gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _gpu_trial_setup(tmp_path, precision="auto", model="resnet18", n_train=1024, batch=128, stop_epoch=1):
    npz = write_images(tmp_path / "gpu.npz", n_train=n_train, n_test=256, size=32, classes=10)
    return validate_trial_config({
        "seed": 2,
        "data": {"name": "npz", "root": str(npz), "val_size": 0},
        "model": {"name": model},
        "train": {"epochs": 3, "batch_size": batch, "lr": 0.05, "device": "cuda", "precision": precision,
                  "cuda_graphs": "on"},
        "mixup": {"alpha": 1.0, "stop_epoch": stop_epoch},
    })


def _relative_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k, x in a.items():
        if x.is_floating_point():
            y = b[k]
            worst = max(worst, float((x.float() - y.float()).norm() / (x.float().norm() + 1e-12)))
    return worst


class RestoringReporter(LocalReporter):
    def __init__(self, out_dir, restore):
        super().__init__(out_dir)
        self.restore = restore

    def checkpoint_to_restore(self):
        return self.restore


@pytest.fixture
def cudnn_fixed():
    """Deterministic cuDNN, no autotuning: eager and replayed steps run the same convolution algorithms."""
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


@gpu
@needs_cuda
def test_graphed_epoch_matches_eager_within_bf16_tolerance(tmp_path, cudnn_fixed):
    """One epoch of 8 steps (3 eager warm-up steps, a capture, 5 replays) of ResNet-18 in bf16 with Mixup.
    The generators must advance exactly as the eager ops advance them (same random numbers)."""
    cfg = _gpu_trial_setup(tmp_path)
    data = build_dataset(cfg.data, cfg.seed, CUDA)
    mixup = Mixup(cfg.mixup)
    eager, graphed = new_state(cfg, data, CUDA), new_state(cfg, data, CUDA)
    expected = train_one_epoch(cfg, data, eager, mixup)
    program = StaticStep(cfg, data, graphed, mixup)
    graphs = StepGraphs(capture=True, cudnn_benchmark=False)
    program.begin_epoch()
    graphs.run([program])
    got = program.end_epoch()
    assert graphs.captures == 1
    assert got[1:] == expected[1:]
    assert got[0] == pytest.approx(expected[0], rel=1e-2)
    assert torch.equal(graphed.data_gen.get_state(), eager.data_gen.get_state())
    assert torch.equal(graphed.mixup_gen.get_state(), eager.mixup_gen.get_state())
    assert _relative_diff(eager.model.state_dict(), graphed.model.state_dict()) < 1e-2
    momentum_e = [s["momentum_buffer"] for s in eager.optimizer.state_dict()["state"].values()]
    momentum_g = [s["momentum_buffer"] for s in graphed.optimizer.state_dict()["state"].values()]
    assert _relative_diff(dict(enumerate(momentum_e)), dict(enumerate(momentum_g))) < 5e-2


@gpu
@needs_cuda
def test_replay_never_syncs_and_recaptures_when_mixup_stops_or_state_is_replaced(tmp_path):
    cfg = _gpu_trial_setup(tmp_path, stop_epoch=1)
    data = build_dataset(cfg.data, cfg.seed, CUDA)
    mixup = Mixup(cfg.mixup)
    state = new_state(cfg, data, CUDA)
    trainer = GraphedEpochs()
    for _ in range(2):  # epoch 0 with Mixup, epoch 1 without: two captures
        trainer(cfg, data, state, mixup)
        state.epoch += 1
    assert trainer.graphs.captures == 2
    program = trainer.program
    program.begin_epoch()
    torch.cuda.set_sync_debug_mode("error")  # any host sync while replaying raises
    try:
        trainer.graphs.run([program])
    finally:
        torch.cuda.set_sync_debug_mode(0)
    loss, lr, seen = program.end_epoch()
    assert trainer.graphs.captures == 2 and seen == 1024 and loss == loss
    # Loading a checkpoint replaces the optimiser's momentum tensors: the graph must be recaptured.
    state.load_dict(state.to_dict())
    trainer(cfg, data, state, mixup)
    assert trainer.graphs.captures == 3


@gpu
@needs_cuda
def test_graphed_trial_resumes_and_follows_the_eager_trial(tmp_path):
    cfg = _gpu_trial_setup(tmp_path)
    cfg.train.keep_epochs = [1]
    full, resumed, eager = tmp_path / "full", tmp_path / "resumed", tmp_path / "eager"
    run_trial(cfg, full)
    run_trial(cfg, resumed, RestoringReporter(resumed, full / "checkpoints" / "epoch_0001"))
    eager_cfg = cfg.model_copy(deep=True)
    eager_cfg.train.cuda_graphs = "off"
    run_trial(eager_cfg, eager)
    rows = {name: without_timing(read_jsonl(d / "metrics.jsonl")) for name, d in
            [("full", full), ("resumed", resumed), ("eager", eager)]}
    for other in ("resumed", "eager"):
        assert [r["epoch"] for r in rows[other]] == [1, 2, 3]
        assert [r["mixup_active"] for r in rows[other]] == [1, 0, 0]
        for a, b in zip(rows["full"], rows[other]):
            assert a["lr"] == b["lr"]
            assert b["train_loss"] == pytest.approx(a["train_loss"], rel=5e-2)
            assert b["test_loss"] == pytest.approx(a["test_loss"], rel=5e-2)
    # Random numbers are consumed identically on every path, whatever the arithmetic did.
    last = {name: torch.load(d / "checkpoints" / "epoch_0003" / "state.pt", weights_only=True)
            for name, d in [("full", full), ("resumed", resumed), ("eager", eager)]}
    for other in ("resumed", "eager"):
        for gen in ("data_gen", "mixup_gen"):
            assert torch.equal(last["full"][gen], last[other][gen])
    assert last["full"]["optimizer"]["param_groups"][0]["lr"] == last["eager"]["optimizer"]["param_groups"][0]["lr"]
