"""Bad input to `mixup-sweep`: one line naming the key and what is allowed, exit code 2, no traceback,
and nothing created (no MLflow store or experiment, no Ray results, no Ray started)."""

from __future__ import annotations

import pytest
import yaml
from sweep_support import run_cli, tiny_spec, write_spec

from sweeps.cli import main


def spec_with(**changes):
    spec = tiny_spec("bad", grid={"mixup.stop_epoch": [0, 2, None], "seed": [0, 1]})
    for key, value in changes.items():
        node = spec
        *parents, last = key.split("__")
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return spec


DELETE = object()

CASES = [
    # (changes to the spec, --set items, words the one-line message must contain)
    (dict(colour="red"), [], ["unknown key 'colour'", "allowed here: name, trial, grid"]),
    (dict(trial__train__epoch=3), [], ["unknown key 'train.epoch'", "epochs"]),
    (dict(grid={"mixup.alpah": [1.0]}), [], ["grid.mixup.alpah", "unknown trial key", "alpha, stop_epoch"]),
    (dict(grid={"mixup": [1.0]}), [], ["grid.mixup", "is a section", "mixup.alpha"]),
    (dict(grid={"seed": []}), [], ["grid.seed", "at least 1 item"]),
    (dict(grid={"seed": 3}), [], ["grid.seed", "valid list"]),
    (dict(grid={"mixup.stop_epoch": [0, 9]}), [], ["grid.mixup.stop_epoch", "mixup.stop_epoch=9", "0..3 or null"]),
    (dict(grid={"mixup.alpha": [1.0, -1.0]}), [], ["grid.mixup.alpha", "greater than 0", "-1"]),
    (dict(grid={"mixup.label_policy": ["same", "bogus"]}), [], ["grid.mixup.label_policy", "'independent'", "bogus"]),
    (dict(metric="val_accuracy"), [], ["metric", "val_accuracy", "allowed: train_loss, val_acc"]),
    (dict(trial__data__val_size=0), [], ["metric", "val_acc needs a validation split", "data.val_size=0"]),
    (dict(metric="test_acc_rare", trial__data__name="cifar10", trial__model__name="resnet18"), [],
     ["metric", "test_acc_rare exists only on data.name=feature_noise"]),
    (dict(mode="maximise"), [], ["mode", "'maximise'", "allowed: 'max' or 'min'"]),
    (dict(mode="min"), [], ["mode: min would select the worst val_acc", "use mode: max"]),
    (dict(resources={"cpu": -1}), [], ["resources.cpu", "greater than 0"]),
    (dict(resources={"cpu": 1, "gpu": -0.5}), [], ["resources.gpu", "greater than or equal to 0"]),
    (dict(resources={"cpu": 1, "gpu": 1.5}), [], ["resources.gpu", "whole number"]),
    (dict(resources={"cpu": 1, "gpus": 1}), [], ["unknown key 'resources.gpus'", "allowed here: cpu, gpu"]),
    (dict(max_concurrent=0), [], ["max_concurrent", "greater than or equal to 1"]),
    (dict(max_failures=-1), [], ["max_failures", "greater than or equal to 0"]),
    (dict(share_prefix="sometimes"), [], ["share_prefix", "boolean"]),
    (dict(name="my sweep"), [], ["name", "'my sweep'", "letters, digits"]),
    (dict(name=DELETE), [], ["name: required key is missing"]),
    (dict(scheduler={"type": "asha", "grace_period": 1}), [],
     ["scheduler.grace_period: 1 is shorter than the largest mixup.stop_epoch (2)", "grace_period >= 2"]),
    (dict(scheduler={"type": "hyperband"}), [], ["scheduler.type", "'hyperband'", "allowed: 'asha'"]),
    (dict(optuna={"n_trials": 0, "space": {"mixup.alpha": {"type": "float", "low": 0.1, "high": 1}}}), [],
     ["optuna.n_trials", "greater than or equal to 1"]),
    (dict(optuna={"n_trials": 2, "space": {"mixup.alpha": {"type": "float", "low": 0, "high": 1, "log": True}}}), [],
     ["optuna.space.mixup.alpha", "log: true needs low > 0"]),
    (dict(optuna={"n_trials": 2, "space": {"seed": {"type": "int", "low": 0, "high": 3}}}), [],
     ["optuna.space.seed", "also in grid"]),
    (dict(optuna={"n_trials": 2, "space": {"mixup.stop_epoch": {"type": "float", "low": 0, "high": 3}}},
          grid={"seed": [0]}), [], ["optuna.space.mixup.stop_epoch", "integer key", "type: int"]),
    (dict(optuna={"n_trials": 2, "space": {"mixup.alpha": {"type": "normal", "low": 0, "high": 3}}}), [],
     ["optuna.space.mixup.alpha.type", "'normal'", "'float', 'int' or 'categorical'"]),
    (dict(resources={"cpu": 1, "pack": 0}), [], ["resources.pack: must be auto or a whole number >= 1 (got 0)"]),
    (dict(resources={"cpu": 1, "pack": "all"}), [], ["resources.pack: must be auto or a whole number >= 1 (got 'all')"]),
    (dict(resources={"cpu": 1, "pack": 2}), [], ["resources.pack: 2", "share_prefix: false"]),
    (dict(resources={"cpu": 1, "pack": 2}, share_prefix=False, scheduler={"type": "asha", "grace_period": 2}), [],
     ["resources.pack: 2", "ASHA stops trials one by one", "pack 1"]),
    (dict(resources={"cpu": 1, "pack": 2}, optuna={"n_trials": 2, "space": {"mixup.alpha": {
        "type": "float", "low": 0.1, "high": 1}}}), [], ["resources.pack: 2 needs a grid sweep", "optuna: pack 1"]),
    (dict(resources={"cpu": 1, "gpu": 0.75, "pack": 2}, share_prefix=False), [],
     ["resources.pack: 2 trials at resources.gpu: 0.75", "pack x gpu <= 1", "gpu: 0.5"]),
    (dict(resources={"cpu": 1, "pack": 4}, share_prefix=False), [],
     ["max_concurrent: 2 is below resources.pack: 4", "max_concurrent >= 4"]),
    (dict(), ["colour=red"], ["--set 'colour=red'", "neither a spec key", "nor a trial key"]),
    (dict(), ["mixup.alpha=-2"], ["trial", "mixup.alpha", "greater than 0"]),
    (dict(), ["max_concurrent"], ["--set 'max_concurrent'", "expected KEY=VALUE"]),
]


def assert_one_line_error(code: int, err: str, words: list[str]) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("changes,overrides,words", CASES)
def test_bad_spec_is_one_line_exit_2_and_creates_nothing(changes, overrides, words, tmp_path, monkeypatch, capsys):
    write_spec(tmp_path, spec_with(**changes))
    monkeypatch.chdir(tmp_path)
    args = ["run", "spec.yaml"] + [item for o in overrides for item in ("--set", o)]
    code = main(args)
    captured = capsys.readouterr()
    assert_one_line_error(code, captured.err, words)
    assert captured.out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spec.yaml"]  # no mlflow.db, mlartifacts, ray_results


def test_errors_through_the_console_script_start_nothing(tmp_path):
    """As a user runs it: a bad spec, a missing spec, a deprecated tracking store, resuming nothing."""
    write_spec(tmp_path, spec_with(grid={"mixup.stop_epoch": [0, 2], "train.epochs": [1, 3]}))
    res = run_cli(["run", "spec.yaml"], cwd=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, ["grid", "mixup.stop_epoch=2", "train.epochs=1"])

    res = run_cli(["run", "nowhere.yaml"], cwd=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, ["nowhere.yaml: no such file", "quickstart"])

    write_spec(tmp_path, spec_with(), "good.yaml")
    res = run_cli(["run", "good.yaml", "--tracking-uri", "./mlruns"], cwd=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, ["--tracking-uri ./mlruns", "file store is deprecated"])

    res = run_cli(["resume", "never_ran"], cwd=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, ["no sweep 'never_ran' to resume", "ray_results/never_ran"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.yaml", "spec.yaml"]


def test_resume_of_a_directory_without_ray_state_is_refused_and_creates_no_store(tmp_path):
    (tmp_path / "ray_results" / "lost").mkdir(parents=True)
    # A directory without Ray's experiment state is not a sweep: same one-line refusal.
    res = run_cli(["resume", "lost"], cwd=tmp_path)
    assert_one_line_error(res.returncode, res.stderr, ["no sweep 'lost' to resume"])
    assert not (tmp_path / "mlflow.db").exists()


def test_bad_yaml_is_one_line(tmp_path, monkeypatch, capsys):
    (tmp_path / "spec.yaml").write_text("name: x\ntrial: {seed: [\n")
    monkeypatch.chdir(tmp_path)
    code = main(["run", "spec.yaml"])
    assert_one_line_error(code, capsys.readouterr().err, ["spec.yaml: not valid YAML at line"])
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump([1, 2]))
    code = main(["run", "spec.yaml"])
    assert_one_line_error(code, capsys.readouterr().err, ["expected a mapping", "trial"])
