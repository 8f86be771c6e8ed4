"""Spec limits checked before anything is expanded or created: the grid's size (max_trials), grid
values equal as the trial sees them, the same --set key twice, a validation split that leaves no
training data (the trial's own rule). The CLI side of each: test_bad_input.py."""

from __future__ import annotations

import pytest
from sweep_support import run_cli, tiny_spec, write_spec

from mixup_core import ConfigError
from mixup_core.data import validation_count
from sweeps.spec import held_out_count, validate_sweep


@pytest.mark.parametrize("n", [1, 2, 3, 10, 199, 200, 1000, 50_000])
def test_the_drivers_split_rule_is_the_trials(n):
    for val_size in [0, 1, 2, n - 1, n, n + 1, 0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]:
        try:
            expected = validation_count(val_size, n)
        except ConfigError:
            expected = None
        assert held_out_count(val_size, n) == expected, (val_size, n)


def test_a_hundred_thousand_point_grid_validates_and_dry_runs_bounded(tmp_path):
    grid = {"seed": list(range(1000)), "mixup.alpha": [0.1 * i + 0.1 for i in range(100)]}
    sweep = validate_sweep(tiny_spec("big", grid=grid), "spec")
    assert sweep.grid_size() == sweep.n_trials == 100_000
    write_spec(tmp_path, tiny_spec("big", grid=grid))
    res = run_cli(["run", "spec.yaml", "--dry-run"], cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.splitlines()
    assert len(lines) < 260  # first and last rows, not 100,000
    assert "... 99,800 more trials not listed ..." in res.stdout
    assert "total: 100000 trials, 300000 epochs" in res.stdout
    assert list(tmp_path.iterdir()) == [tmp_path / "spec.yaml"]


def test_max_trials_raises_the_limit():
    grid = {"seed": [0, 1, 2, 3]}
    with pytest.raises(ConfigError, match="above max_trials"):
        validate_sweep(tiny_spec("s", grid=grid, max_trials=3), "spec")
    assert validate_sweep(tiny_spec("s", grid=grid, max_trials=4), "spec").n_trials == 4


def test_equal_points_across_sub_grids_run_once():
    sweep = validate_sweep(tiny_spec("s", grid=[{"mixup.alpha": [1]}, {"mixup.alpha": [1.0, 2]}]), "spec")
    assert [p["mixup.alpha"] for p in sweep.grid_points()] == [1, 2]


def test_distinct_values_still_run():
    sweep = validate_sweep(tiny_spec("s", grid={"mixup.alpha": [0.1, 0.10001, 1, 2.0], "seed": [0, 1]}), "spec")
    assert sweep.n_trials == 8
