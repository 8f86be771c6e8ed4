"""Trial labels (sweeps/labels.py): short, built from what the sweep varies, null stop epoch = never."""

from __future__ import annotations

import functools
from types import SimpleNamespace

from sweeps.labels import group_label, ray_trial_name, ray_trial_name_of, sweep_label_keys, trial_label
from sweeps.spec import load_sweep

E, A, S = "mixup.stop_epoch", "mixup.alpha", "seed"


def test_labels_of_the_issue():
    keys = [S, E, A]  # the spec's order does not matter: E, a, ..., seed last
    assert trial_label({E: 60, A: 1.0, S: 0}, keys) == "E=60 a=1.0 s0"
    assert trial_label({E: None, S: 1}, [E, S]) == "E=never s1"
    assert trial_label({E: 0, S: 2}, [E, S]) == "E=0 s2"
    assert group_label({E: None, A: 0.3456789}, keys) == "E=never a=0.3457"
    assert trial_label({E: 5, "train.lr": 0.1, S: 0}, [E, S]) == "E=5 s0"  # only the varying keys


def test_other_keys_are_abbreviated_and_never_collide():
    keys = ["mixup.label_policy", "data.rare_fraction", "data.noise_std", "train.lr", E]
    point = {"mixup.label_policy": "independent", "data.rare_fraction": 0.05, "data.noise_std": 0.2,
             "train.lr": 6.0, E: 20}
    assert trial_label(point, keys) == "E=20 lp=independent noise=0.2 rare=0.05 lr=6.0"
    # Two keys with the same last part keep their full names rather than read alike.
    assert trial_label({"model.width": 30, "data.width": 8}, ["model.width", "data.width"]) == \
        "data.width=8 model.width=30"
    assert group_label({}, []) == "all trials" and trial_label({}, []) == "trial"


def test_sweep_label_keys_from_the_spec(tmp_path):
    quickstart = load_sweep("quickstart", [])
    assert sweep_label_keys(quickstart) == [E, S]
    one_seed = load_sweep("quickstart", ["grid.seed=[0]"])
    assert sweep_label_keys(one_seed) == [E]  # a key with one value tells no trials apart


def test_ray_trial_name():
    keys = [E, S]
    assert ray_trial_name({"grid_point": {E: 20, S: 1}, "plan_slot": 3}, keys) == "E=20 s1"
    trunk = {"grid_point": {E: None, S: 0}, "share": {"role": "trunk", "is_user_trial": False}}
    assert ray_trial_name(trunk, keys) == "trunk: E=never s0"
    assert ray_trial_name({"pack": [{E: 0, S: 0}, {E: 20, S: 0}]}, keys) == "E=0 s0 | E=20 s0"
    assert ray_trial_name({A: 0.5, E: 3, "plan_slot": 1}, [A, E]) == "E=3 a=0.5"  # Optuna: flat config
    name_of = functools.partial(ray_trial_name_of, keys=(E, S))  # as TuneConfig(trial_name_creator=...) calls it
    assert name_of(SimpleNamespace(config={"grid_point": {E: 60, S: 2}})) == "E=60 s2"
