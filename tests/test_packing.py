"""Trial packing (mixup_core/packing.py): N trials in one process give what N separate trials give.

CPU: bit-for-bit the same metrics and states as separate `run_trial`s (BatchNorm statistics per model),
the same files, resume with trials restored at different epochs, a diverged trial leaving the pack,
incompatible trials refused before anything is written.
GPU (`-m gpu`): the packed graph (one stream per trial) against separate graphed trials.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from image_files import write_images
from test_trial import RecordingReporter

from mixup_core.checkpoint import list_checkpoints
from mixup_core.config import ConfigError, validate_trial_config
from mixup_core.packing import run_packed_trials
from mixup_core.trial import run_trial

TIMING_KEYS = {"images_per_s", "elapsed_s"}


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def load_state(out_dir: Path, epoch: int):
    return torch.load(out_dir / "checkpoints" / f"epoch_{epoch:04d}" / "state.pt", weights_only=True)


Recorder = RecordingReporter  # reports (epoch, checkpoint name or None) and restores from `restore`


def noise_trial(seed: int, stop_epoch, epochs: int = 4, **mixup):
    m = {"alpha": 1.0, "stop_epoch": stop_epoch}
    m.update(mixup)
    return validate_trial_config({
        "seed": seed,
        "data": {"name": "feature_noise", "n_train": 200, "n_test": 200},
        "model": {"activation_power": 1.0, "init_std": 0.1},  # learns within a few epochs
        "train": {"epochs": epochs, "batch_size": 40, "lr": 0.5, "momentum": 0.9, "device": "cpu",
                  "keep_epochs": list(range(1, epochs))},
        "mixup": m,
    })


def assert_same_trial(separate: Path, packed: Path):
    assert without_timing(read_jsonl(packed / "metrics.jsonl")) == without_timing(read_jsonl(separate / "metrics.jsonl"))
    a = json.loads((separate / "summary.json").read_text())
    b = json.loads((packed / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}
    assert (packed / "config.yaml").read_text() == (separate / "config.yaml").read_text()
    assert [p.name for p in list_checkpoints(packed / "checkpoints")] == \
        [p.name for p in list_checkpoints(separate / "checkpoints")]
    last = list_checkpoints(separate / "checkpoints")[-1]
    sa, sb = load_state(separate, int(last.name[6:])), load_state(packed, int(last.name[6:]))
    for k, v in sa["model"].items():
        assert torch.equal(v, sb["model"][k]), k
    for gen in ("data_gen", "mixup_gen"):
        assert torch.equal(sa[gen], sb[gen])
    for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(x["momentum_buffer"], y["momentum_buffer"])


def test_packed_trials_reproduce_separate_trials_and_their_files(tmp_path):
    cfgs = [noise_trial(0, 0), noise_trial(1, 2), noise_trial(0, None, label_policy="independent", per_sample=True)]
    for i, cfg in enumerate(cfgs):
        run_trial(cfg, tmp_path / f"separate{i}")
    reporters = [Recorder(tmp_path / f"packed{i}") for i in range(len(cfgs))]
    summaries = run_packed_trials(cfgs, [tmp_path / f"packed{i}" for i in range(len(cfgs))], reporters)
    assert [s["status"] for s in summaries] == ["finished"] * 3
    for i in range(len(cfgs)):
        assert_same_trial(tmp_path / f"separate{i}", tmp_path / f"packed{i}")
        assert reporters[i].reports == [(e, f"epoch_{e:04d}") for e in range(1, 5)]
    rows = [read_jsonl(tmp_path / f"packed{i}" / "metrics.jsonl") for i in range(3)]
    assert [r["mixup_active"] for r in rows[1]] == [1, 1, 0, 0]
    assert rows[0][-1]["train_loss"] != rows[1][-1]["train_loss"]  # the trials really differ


def test_packed_resnets_keep_batchnorm_statistics_per_model(tmp_path):
    npz = write_images(tmp_path / "d.npz", n_train=48, n_test=16, size=8)
    cfgs = [validate_trial_config({
        "seed": seed, "data": {"name": "npz", "root": str(npz), "val_size": 16}, "model": {"name": "resnet18"},
        "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "device": "cpu", "eval_batch_size": 64},
        "mixup": {"stop_epoch": stop}}) for seed, stop in [(0, 0), (1, None)]]
    for i, cfg in enumerate(cfgs):
        run_trial(cfg, tmp_path / f"separate{i}")
    run_packed_trials(cfgs, [tmp_path / f"packed{i}" for i in range(2)])
    for i in range(2):
        assert_same_trial(tmp_path / f"separate{i}", tmp_path / f"packed{i}")
    a, b = load_state(tmp_path / "packed0", 1), load_state(tmp_path / "packed1", 1)
    assert int(a["model"]["bn1.num_batches_tracked"]) == 2
    assert not torch.equal(a["model"]["bn1.running_mean"], b["model"]["bn1.running_mean"])


def test_resume_with_trials_at_different_epochs_catches_up(tmp_path):
    cfgs = [noise_trial(0, 2), noise_trial(1, None)]
    full = [tmp_path / f"full{i}" for i in range(2)]
    run_packed_trials(cfgs, full)
    resumed = [tmp_path / f"resumed{i}" for i in range(2)]
    restore = [full[0] / "checkpoints" / "epoch_0003", full[1] / "checkpoints" / "epoch_0001"]
    reporters = [Recorder(d, r) for d, r in zip(resumed, restore)]
    summaries = run_packed_trials(cfgs, resumed, reporters)
    assert [s["epochs"] for s in summaries] == [4, 4]
    assert reporters[0].reports == [(4, "epoch_0004")]
    assert [e for e, _ in reporters[1].reports] == [2, 3, 4]
    for f, r in zip(full, resumed):
        assert without_timing(read_jsonl(r / "metrics.jsonl")) == without_timing(read_jsonl(f / "metrics.jsonl"))


def test_packed_trials_checkpoint_together_and_the_runner_hears_each_epoch_once(tmp_path):
    # Only trial 0 asks for a checkpoint at epoch 2; both save one there (and at the end), so their
    # newest checkpoints are always from the same epoch: one restart point for the whole pack.
    cfgs = [noise_trial(0, 2), noise_trial(1, None)]
    cfgs = [validate_trial_config({**c.to_dict(), "train": {**c.to_dict()["train"], "keep_epochs": keep,
                                                            "checkpoint_interval_s": 3600, "keep_checkpoints": 5}})
            for c, keep in zip(cfgs, [[2], []])]
    reporters = [Recorder(tmp_path / f"t{i}") for i in range(2)]
    heard = []
    run_packed_trials(cfgs, [tmp_path / "t0", tmp_path / "t1"], reporters, on_epoch=lambda e, ix: heard.append((e, ix)))
    for r in reporters:
        assert r.reports == [(1, None), (2, "epoch_0002"), (3, None), (4, "epoch_0004")]
    assert heard == [(1, [0, 1]), (2, [0, 1]), (3, [0, 1]), (4, [0, 1])]


def test_a_diverged_trial_leaves_the_pack_and_says_where(tmp_path):
    base = {"seed": 3, "train": {"epochs": 3, "device": "cpu"}, "mixup": {"stop_epoch": 0}}
    diverging = validate_trial_config({**base, "train": {**base["train"], "lr": 1.0e36}})
    healthy = validate_trial_config(base)
    summaries = run_packed_trials([diverging, healthy], [tmp_path / "bad", tmp_path / "good"])
    assert summaries[0]["status"] == "diverged" and summaries[0]["error"].startswith("diverged at epoch ")
    assert summaries[1]["status"] == "finished" and summaries[1]["epochs"] == 3
    assert json.loads((tmp_path / "bad" / "summary.json").read_text()) == summaries[0]
    run_trial(healthy, tmp_path / "alone")
    assert without_timing(read_jsonl(tmp_path / "good" / "metrics.jsonl")) == \
        without_timing(read_jsonl(tmp_path / "alone" / "metrics.jsonl"))


def test_incompatible_trials_are_refused_before_anything_is_written(tmp_path):
    a = noise_trial(0, 0)
    b = validate_trial_config({**a.to_dict(), "data": {**a.to_dict()["data"], "n_train": 400}})
    with pytest.raises(ConfigError, match="same steps per epoch"):
        run_packed_trials([a, b], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ConfigError, match="distinct output directories"):
        run_packed_trials([a, a], [tmp_path / "a", tmp_path / "a"])
    with pytest.raises(ConfigError, match="cuda_graphs=on needs a CUDA device"):
        on = validate_trial_config({**a.to_dict(), "train": {**a.to_dict()["train"], "cuda_graphs": "on"}})
        run_packed_trials([a, on], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="2 configs, 1 out_dirs"):
        run_packed_trials([a, a], [tmp_path / "a"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert run_packed_trials([], []) == []


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_packed_graph_follows_separate_graphed_trials(tmp_path):
    """Two ResNet-18 trials (one stops Mixup after epoch 1: a recapture mid-run) in one graph, one stream
    each, against the same trials run alone; random numbers must be consumed exactly as alone."""
    npz = write_images(tmp_path / "gpu.npz", n_train=1024, n_test=256, size=32, classes=10)
    cfgs = [validate_trial_config({
        "seed": seed, "data": {"name": "npz", "root": str(npz), "val_size": 0}, "model": {"name": "resnet18"},
        "train": {"epochs": 2, "batch_size": 128, "lr": 0.05, "device": "cuda"},
        "mixup": {"stop_epoch": stop}}) for seed, stop in [(0, 1), (1, None)]]
    packed = [tmp_path / f"packed{i}" for i in range(2)]
    summaries = run_packed_trials(cfgs, packed)
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    for i, cfg in enumerate(cfgs):
        alone = tmp_path / f"alone{i}"
        run_trial(cfg, alone)
        rows_a, rows_p = read_jsonl(alone / "metrics.jsonl"), read_jsonl(packed[i] / "metrics.jsonl")
        assert [r["mixup_active"] for r in rows_p] == [r["mixup_active"] for r in rows_a]
        for a, p in zip(rows_a, rows_p):
            assert p["lr"] == a["lr"]
            assert p["train_loss"] == pytest.approx(a["train_loss"], rel=5e-2)
        sa, sp = load_state(alone, 2), load_state(packed[i], 2)
        for gen in ("data_gen", "mixup_gen"):
            assert torch.equal(sa[gen], sp[gen])
