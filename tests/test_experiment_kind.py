"""A sweep's experiment carries mlflow.experimentKind=custom_model_development (design.md), set when the
experiment is created and added to one that exists without it (sweeps/tracking.py)."""

from __future__ import annotations

from mlflow import MlflowClient

from sweeps.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, get_experiment_id


def test_new_and_existing_experiments_are_marked_as_training_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    eid = get_experiment_id(client, "fresh", (tmp_path / "a").as_uri(), create=True)
    assert client.get_experiment(eid).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"

    old = client.create_experiment("made_before", artifact_location=(tmp_path / "b").as_uri())
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    assert get_experiment_id(client, "made_before", None, create=True) == old  # a sweep starts in it
    assert client.get_experiment(old).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert get_experiment_id(client, "nope", None, create=False) is None
