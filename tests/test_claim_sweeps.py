"""The bundled claim specs and the map end to end, as a user runs them (`mixup-sweep run NAME` in a
fresh directory: real embedded Ray, real MLflow SQLite store, real torch trials), at a REDUCED size
through `--set` (6 epochs, one or two seeds, fewer arms or cells): what is checked is that each spec runs, that
`best` (run at the end of every sweep) prints the claim's verdict table and writes its figure onto
the parent run. The numbers at the full size are in docs/science.md, with the commands that made them.
The verdict logic itself is tested on constructed results in tests/test_claims.py.
Each test takes ~20 s on 2 shared cores (Ray start-up dominates), so they run in the default suite.
"""

from __future__ import annotations

import pytest
from pathlib import Path

from sweep_support import client, run_cli, sweep_runs

pytestmark = pytest.mark.e2e  # every claim spec end to end at reduced size: ~2 min

# Small trials: the cost of each test is Ray's start-up and a few seconds of training.
SMALL = ["--set", "train.epochs=6", "--set", "data.n_test=400", "--set", "train.checkpoint_interval_s=0"]


def run_claim(tmp_path: Path, name: str, claim: str, *overrides: str) -> str:
    proc = run_cli(["run", name, *SMALL, *overrides], tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout
    assert f"Claim '{claim}' (final-epoch test metrics, paired by seed" in out, out[-3000:]
    assert "Verdict: " in out and "no verdict:" not in out
    assert f"Claim figure written to parent run" in out and f"claim/{claim}.png" in out
    c = client(tmp_path)
    (parent,), children = sweep_runs(c, name)
    assert parent.data.params["claim"] == claim
    assert parent.data.tags["mixup_sweep.claim_verdict"] in out
    artifacts = {a.path for a in c.list_artifacts(parent.info.run_id, "claim")}
    assert artifacts == {"claim/claim.json", "claim/claim.md", f"claim/{claim}.png"}
    png = Path(c.download_artifacts(parent.info.run_id, f"claim/{claim}.png", str(tmp_path / "dl")))
    assert png.stat().st_size > 10_000
    # `best` again (what a user reruns) prints the same verdict and replaces, not duplicates, the figure
    again = run_cli(["best", name], tmp_path, timeout=300)
    assert again.returncode == 0 and parent.data.tags["mixup_sweep.claim_verdict"] in again.stdout
    return out


def test_claim2_rare_feature_spec_end_to_end(tmp_path):
    out = run_claim(tmp_path, "claim2_rare_feature", "rare_feature", "--set", "grid.seed=[0,1]")
    assert "Mixup - standard on rare test accuracy: " in out and "paired over 2 seeds, 95% CI" in out


def test_claim3_early_stop_spec_end_to_end(tmp_path):
    out = run_claim(tmp_path, "claim3_early_stop", "early_stop",
                    "--set", "grid.seed=[0,1]", "--set", "grid.mixup.stop_epoch=[0,3,null]")
    assert "Mixup, E=3 - standard on rare test accuracy" in out
    assert "Mixup, E=3 - Mixup throughout on rare test accuracy" in out


def test_claim1_decoupled_spec_end_to_end(tmp_path):
    # One seed keeps it small; the verdict must then give numbers and no interval.
    grid = ('grid=[{"mixup.stop_epoch": [0], "seed": [0]}, '
            '{"mixup.label_policy": [same, threshold, constant], "seed": [0]}]')
    out = run_claim(tmp_path, "claim1_decoupled", "decoupling", "--set", grid)
    assert "threshold - standard on rare test accuracy" in out and "constant mu=0.5 - Mixup (same)" in out
    assert "one seed, 0: no confidence interval" in out and "95% CI" not in out
    assert "Verdict: One seed per arm: differences are printed, no verdict." in out


def test_map_spec_end_to_end(tmp_path):
    out = run_claim(tmp_path, "map_rare_fraction_noise", "map",
                    "--set", "grid.data.noise_std=[0.1,0.2]", "--set", "grid.data.rare_fraction=[0.05]",
                    "--set", "grid.mixup.stop_epoch=[0,3,null]", "--set", "grid.seed=[0,1]")
    # rare_fraction pinned to one value: a one-axis map (the full size is 3 x 3)
    assert "at noise_std=0.1\n" in out and "at noise_std=0.2\n" in out
    assert "Verdict: Mixup's rare-feature gain over standard training holds (95% CI above 0) in " in out
    assert "of 2 cells of noise_std" in out and "Mixup, E=3 - Mixup throughout" in out
