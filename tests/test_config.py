"""Trial config validation: the edge where user input becomes a TrialConfig."""

import pytest

from mixup_core.config import (
    ConfigError,
    TrialConfig,
    bundled_config_names,
    flatten,
    load_trial_config,
    parse_override,
    validate_trial_config,
)


def test_defaults_validate_and_flatten_to_dotted_keys():
    cfg = TrialConfig()
    flat = flatten(cfg.to_dict())
    assert flat["mixup.stop_epoch"] is None
    assert flat["data.name"] == "feature_noise"
    assert "train.epochs" in flat and "seed" in flat


def test_overrides_parse_yaml_values():
    assert parse_override("mixup.stop_epoch=null") == ("mixup.stop_epoch", None)
    assert parse_override("train.lr=0.05") == ("train.lr", 0.05)
    assert parse_override("train.milestones=[100, 150]") == ("train.milestones", [100, 150])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("mixup.alpha")


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"mixup": {"alpha": -1}}, "mixup.alpha"),
        ({"mixup": {"stop_epoch": 50}, "train": {"epochs": 10}}, "stop_epoch=50 is beyond train.epochs=10"),
        ({"model": {"name": "vgg"}}, "model.name"),
        ({"data": {"name": "mnist"}}, "'feature_noise', 'cifar10', 'cifar100' or 'npz'"),
        ({"mixup": {"label_policy": "random"}}, "'same', 'independent', 'threshold', 'power' or 'constant'"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"epoch": 3}}, "unknown key 'train.epoch' (allowed here: epochs,"),
        ({"colour": "red"}, "unknown key 'colour' (allowed here: seed, data, model, train, mixup)"),
        ({"data": {"val_size": 1.5}}, "data.val_size"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw, needle):
    with pytest.raises(ConfigError) as info:
        validate_trial_config(raw, source="cfg.yaml")
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_bundled_configs_load_by_name():
    names = bundled_config_names()
    for required in ("feature_noise", "cifar10_resnet18", "cifar100_preact_resnet18"):
        assert required in names
    for name in names:
        cfg = load_trial_config(name)
        assert isinstance(cfg, TrialConfig)


def test_missing_file_and_unknown_name_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_trial_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="bundled"):
        load_trial_config("not_a_config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_trial_config(str(bad))
