"""Where a relative data.root points: the driver's directory when the nodes share its disk (local
storage), each trial's own node (~/data, expanded there) when they share none (object storage)."""

from __future__ import annotations

import os

from sweeps.runner import with_absolute_data_root
from sweeps.spec import load_sweep


def root_of(storage: str, root: str, tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    sweep = load_sweep("quickstart", [f"trial.data.root={root}"])
    return with_absolute_data_root(sweep, storage).base_trial["data"]["root"]


def test_local_storage_makes_a_relative_root_the_drivers_directory(tmp_path, monkeypatch):
    assert root_of(str(tmp_path / "ray_results"), "./data", tmp_path, monkeypatch) == str(tmp_path / "data")


def test_object_storage_keeps_a_relative_root_on_each_trials_node(tmp_path, monkeypatch):
    assert root_of("s3://bucket/sweeps", "./data", tmp_path, monkeypatch) == "~/data"
    assert root_of("s3://bucket/sweeps", "sets/../cifar", tmp_path, monkeypatch) == "~/cifar"
    assert os.path.expanduser("~/data") != str(tmp_path / "data")


def test_absolute_home_and_uri_roots_are_kept(tmp_path, monkeypatch):
    for root in ("/datasets/cifar", "~/datasets", "s3://bucket/data.npz"):
        for storage in ("s3://bucket/sweeps", str(tmp_path)):
            assert root_of(storage, root, tmp_path, monkeypatch) == root
