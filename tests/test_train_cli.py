"""`mixup-train` as a user runs it: a bundled config by name, bad input refused cleanly."""

import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "mixup_core.cli"]


def run_cli(*args, cwd=None):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, cwd=cwd, timeout=300)


def test_bundled_feature_noise_runs_and_prints_a_summary(tmp_path):
    out = tmp_path / "trial"
    res = run_cli("feature_noise", "--out", str(out), "--set", "train.epochs=3")
    assert res.returncode == 0, res.stderr
    assert "final_test_acc" in res.stdout and "test_acc_rare" in res.stdout
    assert "epochs" in res.stderr  # the progress bar
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 3
    # a second run into the same directory is refused unless it resumes
    again = run_cli("feature_noise", "--out", str(out), "--set", "train.epochs=3")
    assert again.returncode == 2 and "--resume" in again.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "mixup.alpha=-1"], "mixup.alpha"),
        (["--set", "mixup.stop_epoch=999"], "mixup.stop_epoch=999 is beyond train.epochs"),
        (["--set", "model.name=vgg16"], "model.name"),
        (["--set", "data.name=imagenet"], "data.name"),
        (["--set", "mixup.label_policy=soft"], "mixup.label_policy"),
        (["--set", "train.lr=abc"], "train.lr"),
        (["--set", "train.batchsize=64"], "unknown key 'train.batchsize'"),
        (["--set", "train.batch_size=0"], "train.batch_size"),
        (["--set", "mixup.alpha"], "KEY=VALUE"),
        (["--resume"], "no checkpoint"),
        (["--set", "data.val_size=600"], "leaves no training examples"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, args, needle):
    out = tmp_path / "never"
    res = run_cli("feature_noise", "--out", str(out), *args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_config_file_is_refused(tmp_path):
    res = run_cli(str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "no such file" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("not_bundled", "--out", str(tmp_path / "o"))
    assert res.returncode == 2 and "feature_noise" in res.stderr
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# Resuming: checksummed checkpoints, fallback, changed configurations, a trial killed early

import os  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from mixup_core.checkpoint import CHECKSUM_FILE, CheckpointError, checkpoint_dirs, load_checkpoint  # noqa: E402

TINY = ["--quiet", "--set", "data.n_train=80", "--set", "data.n_test=80", "--set", "data.val_size=0.25",
        "--set", "train.batch_size=20", "--set", "train.checkpoint_interval_s=0"]
TIMING = {"images_per_s", "elapsed_s"}


def train(out, *extra, epochs=3):
    return run_cli("feature_noise", "--out", str(out), *TINY, "--set", f"train.epochs={epochs}", *extra)


def metrics(out):
    rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def one_line(res):
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    return lines[0]


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
            for p in sorted(Path(directory).rglob("*"))}


def flip_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 16):
        data[i] ^= 0x55
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 3-epoch trial keeping its two newest checkpoints, and its metrics."""
    out = tmp_path_factory.mktemp("finished") / "trial"
    res = train(out, "--set", "train.keep_checkpoints=2")
    assert res.returncode == 0, res.stderr
    return out, metrics(out)


def copy_trial(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_every_checkpoint_carries_checksums_and_a_flipped_byte_is_found(finished, tmp_path):
    out = copy_trial(finished[0], tmp_path / "t")
    newest = checkpoint_dirs(out / "checkpoints")[-1]
    sums = (newest / CHECKSUM_FILE).read_text().splitlines()
    assert [line.split("  ")[1] for line in sums] == ["state.pt", "metrics.jsonl", "config.yaml"]
    load_checkpoint(newest)
    state = newest / "state.pt"
    size = state.stat().st_size
    flip_middle(state)  # same size, still a valid zip/pickle in most places: only the checksum sees it
    assert state.stat().st_size == size
    with pytest.raises(CheckpointError, match="state.pt: checksum mismatch"):
        load_checkpoint(newest)


@pytest.mark.parametrize("damage", ["flip-state", "truncate-state", "flip-metrics", "delete-config",
                                    "garble-sums", "delete-state"])
def test_resume_falls_back_past_a_damaged_newest_checkpoint_and_reproduces_the_run(finished, tmp_path, damage):
    out, expected = copy_trial(finished[0], tmp_path / "t"), finished[1]
    old, newest = checkpoint_dirs(out / "checkpoints")
    assert (old.name, newest.name) == ("epoch_0002", "epoch_0003")
    if damage == "flip-state":
        flip_middle(newest / "state.pt")
    elif damage == "truncate-state":
        data = (newest / "state.pt").read_bytes()
        (newest / "state.pt").write_bytes(data[: len(data) // 3])
    elif damage == "flip-metrics":
        (newest / "metrics.jsonl").write_text((newest / "metrics.jsonl").read_text().replace("1", "7", 1))
    elif damage == "delete-config":
        (newest / "config.yaml").unlink()
    elif damage == "garble-sums":
        (newest / CHECKSUM_FILE).write_text("not checksums\n")
    else:
        (newest / "state.pt").unlink()
    res = train(out, "--resume", "--set", "train.keep_checkpoints=2")
    assert res.returncode == 0, res.stderr
    warnings = [line for line in res.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "epoch_0003" in warnings[0] and "resuming from epoch_0002" in warnings[0]
    assert metrics(out) == expected  # epoch 3 trained again, bit for bit
    load_checkpoint(checkpoint_dirs(out / "checkpoints")[-1])  # and its checkpoint is intact again


def test_resume_with_no_intact_checkpoint_is_refused_and_changes_nothing(finished, tmp_path):
    out = copy_trial(finished[0], tmp_path / "t")
    for ckpt in checkpoint_dirs(out / "checkpoints"):
        flip_middle(ckpt / "state.pt")
    before = snapshot(out)
    res = train(out, "--resume")
    assert res.returncode == 2
    line = one_line(res)
    assert "no intact checkpoint" in line and "epoch_0003/state.pt: checksum mismatch" in line
    assert "and 1 older checkpoint(s), damaged too" in line
    assert snapshot(out) == before


def test_checkpoints_of_older_versions_without_checksums_still_resume(finished, tmp_path):
    out = copy_trial(finished[0], tmp_path / "t")
    import shutil

    old, newest = checkpoint_dirs(out / "checkpoints")
    shutil.rmtree(newest)
    (old / CHECKSUM_FILE).unlink()
    res = train(out, "--resume")
    assert res.returncode == 0, res.stderr
    assert "epoch_0002 has no checksums (written by an older version)" in res.stderr
    assert metrics(out) == finished[1]


def test_resume_refuses_every_key_that_changes_what_is_trained(finished, tmp_path):
    out = copy_trial(finished[0], tmp_path / "t")
    config_before = (out / "config.yaml").read_bytes()
    before = snapshot(out)
    res = train(out, "--resume", "--set", "seed=1", "--set", "train.lr=0.5", "--set", "mixup.alpha=0.2",
                "--set", "data.noise_std=0.3", "--set", "model.width=10", "--set", "train.precision=bf16")
    assert res.returncode == 2
    line = one_line(res)
    for key in ("seed (0 -> 1)", "train.lr (6.0 -> 0.5)", "mixup.alpha (1.0 -> 0.2)", "data.noise_std (0.2 -> 0.3)",
                "model.width (30 -> 10)", "train.precision (fp32 -> bf16)"):
        assert key in line, (key, line)
    assert "changes what is trained" in line
    assert (out / "config.yaml").read_bytes() == config_before and snapshot(out) == before


@pytest.mark.parametrize("key", ["train.epochs=4", "train.batch_size=40", "train.schedule=constant",
                                 "train.momentum=0.5", "train.weight_decay=0.001", "data.val_size=0.5",
                                 "mixup.stop_epoch=1", "train.nesterov=true", "data.augment={crop_pad: 1}"])
def test_resume_refuses_each_training_key_alone(finished, tmp_path, key):
    out = copy_trial(finished[0], tmp_path / "t")
    before = snapshot(out)
    res = train(out, "--resume", "--set", key, epochs=3 if "epochs" not in key else 4)
    assert res.returncode == 2
    assert key.split("=")[0] in one_line(res)
    assert snapshot(out) == before


def test_resume_accepts_keys_that_do_not_change_what_is_trained(finished, tmp_path):
    import shutil

    out = copy_trial(finished[0], tmp_path / "t")
    shutil.rmtree(checkpoint_dirs(out / "checkpoints")[-1])  # so that epoch 3 trains under the new keys
    res = train(out, "--resume", "--set", "train.keep_checkpoints=3", "--set", "train.eval_batch_size=7",
                "--set", "train.cuda_graphs=off", "--set", "data.download=true", "--set", "train.keep_epochs=[1]")
    assert res.returncode == 0, res.stderr
    accuracy = lambda rows: [{k: v for k, v in r.items() if "loss" not in k} for r in rows]  # noqa: E731
    assert accuracy(metrics(out)) == accuracy(finished[1])  # eval batches may sum losses in another order
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["eval_batch_size"] == 7


def test_resume_of_a_trial_killed_before_its_first_checkpoint_starts_over(finished, tmp_path):
    # What a kill before the first checkpoint leaves: config.yaml and the first epochs' metrics.
    out = copy_trial(finished[0], tmp_path / "t")
    import shutil

    shutil.rmtree(out / "checkpoints")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text(lines[0] + "\n")
    (out / "summary.json").unlink()
    again = train(out)  # without --resume: refused, pointing at --resume
    assert again.returncode == 2 and "use --resume" in one_line(again)
    res = train(out, "--resume")
    assert res.returncode == 0, res.stderr
    notes = [line for line in res.stderr.splitlines() if "note" in line]
    assert len(notes) == 1 and "starting from epoch 0" in notes[0] and "replacing the 1 epoch(s)" in notes[0]
    assert metrics(out) == finished[1]


def test_a_directory_with_checkpoints_but_no_metrics_is_not_overwritten(finished, tmp_path):
    out = copy_trial(finished[0], tmp_path / "t")
    (out / "metrics.jsonl").unlink()
    before = snapshot(out)
    res = train(out)
    assert res.returncode == 2 and "already holds a trial" in one_line(res)
    assert snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# An output directory that cannot be created is refused at once (owner-only modes: test_security_defaults)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_out_without_permission_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    res = train(locked / "trial", epochs=1)
    assert res.returncode == 2 and "cannot be created" in one_line(res)
    assert list(locked.iterdir()) == []
