"""The paper's feature-learning claims (Zou et al. 2023, claims 2 and 3) with the bundled defaults.

Every trial is a real `run_trial` of the bundled `feature_noise` configuration; only the seed and
`mixup.stop_epoch` change. The numbers these tests guard are in docs/science.md.
"""

import json
from pathlib import Path

import pytest

from mixup_core.config import load_trial_config
from mixup_core.trial import run_trial

EARLY_STOP = 60  # past the epoch where Mixup's rare-feature correlation has grown (checked below)


def run(tmp_path: Path, seed: int, stop_epoch) -> list[dict]:
    stop = "null" if stop_epoch is None else stop_epoch
    cfg = load_trial_config("feature_noise", [f"seed={seed}", f"mixup.stop_epoch={stop}"])
    out = tmp_path / f"seed{seed}_stop{stop_epoch}"
    summary = run_trial(cfg, out)
    assert summary["status"] == "finished"
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_mixup_learns_the_rare_feature_standard_training_does_not(tmp_path):
    standard = run(tmp_path, 0, 0)
    mixup = run(tmp_path, 0, None)
    s, m = standard[-1], mixup[-1]
    assert all(r["mixup_active"] == 0 for r in standard) and all(r["mixup_active"] == 1 for r in mixup)
    assert s["test_acc_common"] >= 0.9 and m["test_acc_common"] >= 0.9
    assert s["test_acc_rare"] <= 0.6  # at or below chance: the rare examples were memorised
    assert m["test_acc_rare"] - s["test_acc_rare"] >= 0.2
    # the mechanism, in weight space: Mixup's filters align with the rare feature, standard's do not
    assert m["feat_rare"] > 1.0 > s["feat_rare"] and m["feat_rare"] > 4 * s["feat_rare"]


@pytest.mark.slow
def test_claims_over_five_seeds(tmp_path):
    table = []
    for seed in range(5):
        standard, mixup, early = (run(tmp_path, seed, stop) for stop in (0, None, EARLY_STOP))
        s, m, e = standard[-1], mixup[-1], early[-1]
        table.append((seed, s["test_acc_common"], s["test_acc_rare"], m["test_acc_common"],
                      m["test_acc_rare"], e["test_acc_common"], e["test_acc_rare"]))
        # E is past the growth: by epoch E Mixup's rare-feature correlation has reached half its
        # final value, while standard training's stays far below it
        grown_at_e = mixup[EARLY_STOP - 1]["feat_rare"]
        assert grown_at_e >= 0.5 * m["feat_rare"] and grown_at_e > 2 * s["feat_rare"], seed
        assert [r["mixup_active"] for r in early] == [1] * EARLY_STOP + [0] * (len(early) - EARLY_STOP)
    print("\nseed  std common/rare  mixup common/rare  early-stop(E=%d) common/rare" % EARLY_STOP)
    for row in table:
        print("%4d  %.3f / %.3f     %.3f / %.3f       %.3f / %.3f" % row)
    for seed, s_common, s_rare, m_common, m_rare, e_common, e_rare in table:
        assert s_common >= 0.9, seed
        assert m_rare - s_rare >= 0.2, seed
        assert e_rare - s_rare >= 0.2, seed  # early-stopped Mixup keeps the rare-feature gain
        assert m_common >= 0.9 and e_common >= 0.9, seed
