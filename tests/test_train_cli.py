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
