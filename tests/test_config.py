"""Trial config validation: the edge where user input becomes a TrialConfig."""

import os

import pytest

from mixup_core.config import (
    ConfigError,
    TrialConfig,
    bundled_config_names,
    flatten,
    load_trial_config,
    parse_override,
    set_dotted,
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


@pytest.mark.parametrize(
    "raw, needle",
    [
        # inf and nan pass every range check (inf > 0), so finiteness is refused for every float key
        ({"mixup": {"alpha": float("inf")}}, "mixup.alpha: Input should be a finite number"),
        ({"mixup": {"label_alpha": float("nan")}}, "mixup.label_alpha"),
        ({"train": {"weight_decay": "inf"}}, "train.weight_decay"),
        ({"train": {"lr": float("nan")}}, "train.lr"),
        ({"train": {"checkpoint_interval_s": float("inf")}}, "train.checkpoint_interval_s"),
        ({"train": {"milestones": [10, float("inf")]}}, "train.milestones.1"),
        ({"data": {"noise_std": float("inf")}}, "data.noise_std"),
        ({"data": {"feature_noise": float("-inf")}}, "data.feature_noise"),
        ({"data": {"val_size": float("nan")}}, "data.val_size: must be a fraction in [0, 1) or a count"),
        ({"model": {"init_std": float("inf")}}, "model.init_std"),
        # booleans are not numbers, though pydantic would read True as 1
        ({"seed": True}, "seed: must be a number, not a boolean"),
        ({"train": {"epochs": True}}, "train.epochs: must be a number, not a boolean"),
        ({"train": {"lr": True}}, "train.lr: must be a number"),
        ({"mixup": {"stop_epoch": False}}, "mixup.stop_epoch: must be a number"),
        ({"train": {"keep_epochs": [True]}}, "train.keep_epochs.0"),
        ({"data": {"val_size": True}}, "data.val_size"),
        ({"data": {"val_size": "a tenth"}}, "data.val_size: must be a fraction"),
        # the seed must fit the generators (step.stream_seed scales it by ~1e6)
        ({"seed": 2**40}, "seed: Input should be less than or equal to 4294967295"),
    ],
)
def test_non_finite_boolean_and_huge_numbers_are_refused_by_key(raw, needle):
    with pytest.raises(ConfigError) as info:
        validate_trial_config(raw, source="cfg.yaml")
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_finite_numbers_and_integers_for_floats_still_load():
    cfg = validate_trial_config({"seed": 7, "train": {"lr": 1, "epochs": 3.0}, "mixup": {"alpha": 0.2}})
    assert cfg.train.lr == 1.0 and cfg.train.epochs == 3 and cfg.seed == 7


@pytest.mark.parametrize(
    "content, needle",
    [
        ("train:\n  lr: 0.1\n  lr: 0.01\n", "duplicate key 'lr' at line 3 (first at line 2)"),
        ("seed: 0\ntrain: {epochs: 2}\nseed: 1\n", "duplicate key 'seed' at line 3 (first at line 1)"),
        ("train: {epochs: 2, epochs: 3}\n", "duplicate key 'epochs' at line 1"),
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("---\n", "is empty"),
        (b"seed: 0\nmixup: {alpha: \xff}\n", "not UTF-8 text (byte 0xff at offset 23)"),
        (b"\xff\xfeseed: 0\n", "not UTF-8 text"),
        ("seed: 0\n---\nseed: 1\n", "not valid YAML"),
    ],
)
def test_config_file_problems_are_one_line_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "cfg.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ConfigError) as info:
        load_trial_config(str(path))
    assert str(info.value).startswith(str(path)) and needle in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def test_yaml_merge_keys_may_override_what_they_merge(tmp_path):
    from mixup_core.config import read_yaml

    path = tmp_path / "cfg.yaml"
    path.write_text("a: &b {epochs: 2, lr: 0.1}\nb:\n  <<: *b\n  lr: 0.2\n")
    assert read_yaml(path)["b"] == {"epochs": 2, "lr": 0.2}


def test_a_directory_or_an_unreadable_file_as_config(tmp_path):
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_trial_config(str(tmp_path))
    path = tmp_path / "cfg.yaml"
    path.write_text("seed: 0\n")
    path.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway
        with pytest.raises(ConfigError, match="cannot read it"):
            load_trial_config(str(path))


def test_the_same_set_key_twice_is_refused():
    with pytest.raises(ConfigError, match=r"--set train.lr is given twice \('train.lr=0.1' and 'train.lr=0.2'\)"):
        load_trial_config("feature_noise", ["train.lr=0.1", "train.lr=0.2"])
    with pytest.raises(ConfigError, match="duplicate key 'a'"):
        parse_override("mixup={a: 1, a: 2}")
    assert load_trial_config("feature_noise", ["train.lr=0.1", "mixup.alpha=2"]).train.lr == 0.1


def test_what_resume_may_change_is_exactly_where_and_how_often_not_what_is_trained():
    from mixup_core.config import RESUME_MAY_CHANGE, changes_refused_on_resume

    base = validate_trial_config({})
    allowed = {"data.download": True, "train.device": "cuda", "train.cuda_graphs": "on",
               "train.eval_batch_size": 7, "train.checkpoint_interval_s": 99.0, "train.keep_checkpoints": 4,
               "train.keep_epochs": [1]}
    assert set(allowed) == RESUME_MAY_CHANGE
    raw: dict = {}
    for key, value in allowed.items():
        set_dotted(raw, key, value)
    changed = validate_trial_config(raw)
    assert changes_refused_on_resume(base, changed) == []
    # every other key is refused, each by name
    for key, value in [("seed", 1), ("train.epochs", 3), ("train.lr", 0.2), ("train.precision", "bf16"),
                       ("train.milestones", [0.3]), ("train.gamma", 0.5), ("train.warmup_epochs", 1),
                       ("data.root", "elsewhere"), ("data.n_train", 100), ("model.width", 3), ("mixup.fold", True),
                       ("mixup.per_sample", True), ("mixup.label_policy", "constant"), ("data.augment", False)]:
        raw = {}
        set_dotted(raw, key, value)
        refused = changes_refused_on_resume(base, validate_trial_config(raw))
        assert [k for k, _, _ in refused] == [key], (key, refused)


@pytest.mark.parametrize(
    "augment, needle",
    [
        ({"pad": 2}, "data.augment: unknown key 'pad' (allowed here: crop_pad, flip)"),
        ({"crop_pad": -1}, "data.augment: crop_pad: Input should be greater than or equal to 0"),
        ({"crop_pad": True}, "data.augment: crop_pad: must be a number"),
        ({"flip": "sometimes"}, "data.augment: flip"),
        ("maybe", "data.augment: allowed: auto, true, false, or {crop_pad: N, flip: true | false}"),
        (3, "data.augment: allowed: auto"),
    ],
)
def test_bad_augmentation_is_one_message_for_one_mistake(augment, needle):
    with pytest.raises(ConfigError) as info:
        validate_trial_config({"data": {"name": "npz", "augment": augment}, "model": {"name": "resnet18"}})
    assert needle in str(info.value) and ";" not in str(info.value), str(info.value)


def test_augmentation_resolves_per_data_source():
    from mixup_core.config import AugmentConfig, resolve_augment

    standard = AugmentConfig(crop_pad=4, flip=True)
    assert resolve_augment("auto", "cifar10", (32, 32)) == standard == resolve_augment(True, "cifar100", (32, 32))
    assert resolve_augment("auto", "npz", (8, 8)) is False  # asked for only
    assert resolve_augment(True, "npz", (8, 8)) == AugmentConfig(crop_pad=1, flip=True)
    assert resolve_augment(True, "npz", (96, 64)) == AugmentConfig(crop_pad=8, flip=True)
    assert resolve_augment(True, "feature_noise", None) is False
    assert resolve_augment(AugmentConfig(flip=True), "npz", (8, 8)) == AugmentConfig(crop_pad=0, flip=True)
    assert resolve_augment(AugmentConfig(), "cifar10", (32, 32)) is False
    with pytest.raises(ConfigError, match="crop_pad=32 must be below the image size 32x32"):
        resolve_augment(AugmentConfig(crop_pad=32), "cifar10", (32, 32))
