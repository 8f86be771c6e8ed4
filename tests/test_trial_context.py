"""The context a trial receives is resolved once on the driver (sweeps/runner.py: trial_context) and
gives each trial exactly the configuration the spec defines for its point, without the spec."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

from sweeps.runner import trial_context
from sweeps.search import asha_rung_epochs
from sweeps.spec import load_sweep

REPO = Path(__file__).resolve().parents[1]


def test_context_gives_every_trial_the_spec_configuration():
    sweep = load_sweep("quickstart", ["grid.seed=[0,1]", "scheduler={type: asha, grace_period: 120}", "share_prefix=false"])
    context = pickle.loads(pickle.dumps(trial_context(sweep, "sqlite:////tmp/x.db", "1", "p")))  # as Ray ships it
    for point in sweep.grid_points():
        assert context.trial_config(point) == sweep.trial_config(point)
    assert context.rung_epochs == asha_rung_epochs(sweep) and context.rung_epochs
    assert (context.metric, context.mode, context.report_interval_s) == (
        sweep.spec.metric, sweep.spec.mode, sweep.spec.report_interval_s)
    assert context.label_keys and context.run_name(sweep.grid_points()[0])
    assert not hasattr(context, "spec")  # nothing to re-validate


def test_trial_startup_benchmark_runs():
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "trial_startup.py"), "--seeds", "20",
                           "--repeats", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["grid_points"] == 100
    assert result["per_trial_after_s"] < result["per_trial_before_s"]
