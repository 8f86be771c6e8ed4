"""The claim verdicts (sweeps/best/claims.py) on constructed per-trial results: claims that hold, that do
not, noise, one seed, pairing, missing arms; the figures are drawn; `claim:` in a spec is validated.
The bundled claim specs end to end (real Ray, MLflow, torch): tests/test_claim_sweeps.py."""

from __future__ import annotations

import math

import pytest
from sweep_support import tiny_spec

from mixup_core.config import ConfigError
from sweeps.best.claim_plots import plot_claim
from sweeps.best.claims import (
    HOLDS, NOISE, ONE_SEED, REVERSED, ClaimError, Paired, Trial, arm_of, claim_to_dict, evaluate, format_claim,
    t_quantile_975,
)
from sweeps.spec import load_sweep, validate_sweep


def trial(seed, stop, rare, *, policy="same", common=1.0, feat=1.0, loss=0.1, **params):
    p = {"seed": seed, "mixup.stop_epoch": stop, "mixup.label_policy": policy, "mixup.label_alpha": 1.0,
         "mixup.label_power": 2.0, "mixup.label_value": 0.5, **params}
    return Trial(p, {"test_acc_rare": rare, "test_acc_common": common, "feat_rare": feat, "train_loss": loss},
                 run_id=f"r{seed}{stop}{policy}{sorted(params.items())}")


def arm(stop, rares, **kw):
    return [trial(s, stop, r, **kw) for s, r in enumerate(rares)]


STANDARD_RARE = [0.31, 0.37, 0.38, 0.39, 0.45]


def test_t_interval_matches_the_textbook():
    assert t_quantile_975(1) == 12.706 and t_quantile_975(4) == 2.776 and t_quantile_975(100) == 1.96
    d = Paired("a", "b", "m", (0, 1, 2), (1.0, 2.0, 3.0))
    assert d.mean == 2.0 and d.std == 1.0
    assert d.half_width == pytest.approx(4.303 / math.sqrt(3))
    assert d.status == NOISE  # 2 - 2.48 < 0 < 2 + 2.48
    assert Paired("a", "b", "m", (0, 1, 2), (1.0, 1.1, 0.9)).status == HOLDS
    assert Paired("a", "b", "m", (0, 1, 2), (-1.0, -1.1, -0.9)).status == REVERSED
    assert Paired("a", "b", "m", (0, 1), (0.0, 0.0)).status == NOISE  # identical arms: no difference


def test_rare_feature_claim_that_holds_states_its_numbers():
    trials = arm(0, STANDARD_RARE, feat=0.3) + arm(None, [0.99, 0.82, 0.82, 0.97, 0.86], feat=3.0)
    result = evaluate("rare_feature", trials)
    (gain,) = result.cells[0].comparisons
    assert gain.diff.status == HOLDS and gain.diff.n == 5
    assert gain.diff.mean == pytest.approx(0.512)
    assert "Mixup - standard on rare test accuracy: +0.51 (paired over 5 seeds, 95% CI [+0.37, +0.65]): the gain holds." == gain.sentence
    assert gain.sentence.endswith("the gain holds.")
    assert result.headline.startswith(gain.sentence) and "feat_rare" in result.headline
    text = format_claim(result)
    assert "standard  5  0.380 ± 0.050" in text and "Verdict:" in text


def test_rare_feature_claim_that_does_not_hold_is_within_noise_or_reversed():
    noise = evaluate("rare_feature", arm(0, STANDARD_RARE) + arm(None, [0.35, 0.36, 0.41, 0.37, 0.43]))
    assert noise.cells[0].comparisons[0].diff.status == NOISE
    assert "within seed noise, no gain shown" in noise.headline and "holds" not in noise.headline.split("Mechanism")[0]
    worse = evaluate("rare_feature", arm(0, STANDARD_RARE) + arm(None, [r - 0.2 for r in STANDARD_RARE]))
    assert worse.cells[0].comparisons[0].diff.status == REVERSED and "reversed" in worse.headline


def test_pairing_removes_seed_variance_that_unpaired_spreads_would_hide():
    # Seeds differ a lot (0.1 .. 0.9) but Mixup is +0.05 on every one: a real, small, paired gain.
    base = [0.1, 0.3, 0.5, 0.7, 0.9]
    result = evaluate("rare_feature", arm(0, base) + arm(None, [b + 0.05 for b in base]))
    d = result.cells[0].comparisons[0].diff
    assert d.status == HOLDS and d.std == pytest.approx(0.0, abs=1e-12)
    # only seeds present in both arms are paired
    partial = evaluate("rare_feature", arm(0, base) + arm(None, [0.9, 0.9, 0.9])[:3])
    assert partial.cells[0].comparisons[0].diff.seeds == (0, 1, 2)


def test_one_seed_gives_numbers_and_no_interval_or_verdict():
    result = evaluate("rare_feature", [trial(0, 0, 0.3), trial(0, None, 0.9)])
    d = result.cells[0].comparisons[0].diff
    assert d.status == ONE_SEED and d.ci is None
    assert "+0.60 (one seed, 0: no confidence interval)" in result.headline
    assert "CI" not in result.headline and "holds" not in result.headline and "run more seeds" in result.headline
    early = evaluate("early_stop", [trial(0, 0, 0.3), trial(0, None, 0.9), trial(0, 60, 0.9)])
    assert early.headline == "One seed per arm: differences are printed, no verdict."


def test_decoupling_sorts_policies_into_keep_part_and_lose():
    soft = [0.99, 0.82, 0.82, 0.97, 0.86]
    trials = arm(0, STANDARD_RARE) + arm(None, soft)
    trials += arm(None, [s + 0.01 * (-1) ** i for i, s in enumerate(soft)], policy="constant")  # = same
    trials += arm(None, [s - 0.2 for s in soft], policy="power", **{"mixup.label_power": 2.0})  # part
    trials += arm(None, [r + 0.02 * (-1) ** i for i, r in enumerate(STANDARD_RARE)], policy="threshold")  # lost
    result = evaluate("decoupling", trials)
    assert list(result.cells[0].arms) == ["standard", "Mixup", "constant mu=0.5", "power p=2", "threshold"]
    status = {(c.diff.a, c.role): c.diff.status for c in result.cells[0].comparisons}
    assert status[("constant mu=0.5", "gain")] == HOLDS and status[("constant mu=0.5", "vs Mixup")] == NOISE
    assert status[("power p=2", "gain")] == HOLDS and status[("power p=2", "vs Mixup")] == REVERSED
    assert status[("threshold", "gain")] == NOISE
    h = result.headline
    assert "that keep it (gain holds, not below Mixup beyond noise): constant mu=0.5;" in h
    assert "that keep part of it (gain holds, but below Mixup): power p=2;" in h
    assert "that lose it (no gain beyond noise): threshold." in h
    assert claim_to_dict(result)["cells"][0]["arms"]["threshold"]["n"] == 5


def test_early_stop_keeps_the_gain_late_not_early_and_is_not_better():
    mixup = [0.99, 0.82, 0.82, 0.97, 0.86]
    trials = arm(0, STANDARD_RARE) + arm(None, mixup)
    trials += arm(20, [r + 0.05 * (-1) ** i for i, r in enumerate(STANDARD_RARE)])  # too early
    trials += arm(60, [m - 0.01 * (-1) ** i for i, m in enumerate(mixup)])  # keeps it, same as Mixup
    result = evaluate("early_stop", trials)
    assert list(result.cells[0].arms) == ["standard", "Mixup", "Mixup, E=20", "Mixup, E=60"]
    assert result.headline == ("Early-stopped Mixup keeps a rare-feature gain over standard training (95% CI above 0) "
                               "at E = 60 (+0.51), not at E = 20 (+0.01). Against Mixup throughout (itself +0.51 over "
                               "standard) it is within seed noise at E = 60 (-0.00); worse at E = 20 (-0.50).")


def map_trials(gains, seeds=3):
    """A 2 x 2 map over data.noise_std x data.rare_fraction; gains[(noise, rare)] = Mixup's paired gain."""
    out = []
    for (noise, rare), g in gains.items():
        cell = {"data.noise_std": noise, "data.rare_fraction": rare}
        for s in range(seeds):
            jitter = 0.03 * (-1) ** s
            out += [trial(s, 0, 0.4 + 0.1 * s, **cell), trial(s, None, 0.4 + 0.1 * s + g + jitter, **cell),
                    trial(s, 60, 0.4 + 0.1 * s + g - jitter, **cell)]
    return out


def test_map_marks_the_cells_where_the_gain_is_seed_noise(tmp_path):
    gains = {(0.1, 0.05): 0.0, (0.2, 0.05): 0.5, (0.1, 0.1): 0.3, (0.2, 0.1): 0.01}
    result = evaluate("map", map_trials(gains))
    assert result.axes == ("data.noise_std", "data.rare_fraction")
    status = {c.cell: c.find("Mixup", "standard").diff.status for c in result.cells}
    assert status == {(0.1, 0.05): NOISE, (0.2, 0.05): HOLDS, (0.1, 0.1): HOLDS, (0.2, 0.1): NOISE}
    assert result.headline.startswith("Mixup's rare-feature gain over standard training holds (95% CI above 0) "
                                      "in 2 of 4 cells of noise_std x rare_fraction")
    path = tmp_path / "map.png"
    plot_claim(result, path)
    assert path.stat().st_size > 10_000
    one_seed = evaluate("map", map_trials(gains, seeds=1))
    assert "4 cell(s) with one seed: no verdict" in one_seed.headline


def test_arm_figure_is_drawn(tmp_path):
    result = evaluate("rare_feature", arm(0, STANDARD_RARE) + arm(None, [0.9] * 5))
    plot_claim(result, tmp_path / "rare_feature.png")
    assert (tmp_path / "rare_feature.png").stat().st_size > 10_000


def test_what_a_claim_cannot_answer_is_one_line():
    with pytest.raises(ClaimError, match="needs the arm.s. standard"):
        evaluate("rare_feature", arm(None, [0.9, 0.8]))
    with pytest.raises(ClaimError, match="needs an early-stopped Mixup arm"):
        evaluate("early_stop", arm(0, [0.3, 0.4]) + arm(None, [0.9, 0.8]))
    with pytest.raises(ClaimError, match="needs a decoupled label policy"):
        evaluate("decoupling", arm(0, [0.3, 0.4]) + arm(None, [0.9, 0.8]))
    with pytest.raises(ClaimError, match="two trials are arm 'Mixup' with seed 0"):  # e.g. two alphas
        evaluate("rare_feature", [trial(0, 0, 0.3), trial(0, None, 0.9, **{"mixup.alpha": 1.0}),
                                  trial(0, None, 0.8, **{"mixup.alpha": 0.5})])
    with pytest.raises(ClaimError, match="one or two data-model parameters"):
        evaluate("map", arm(0, [0.3, 0.4]) + arm(None, [0.9, 0.8]))


def test_arm_names():
    assert arm_of({"mixup.stop_epoch": 0, "mixup.label_policy": "threshold"}) == "standard"
    assert arm_of({"mixup.stop_epoch": None, "mixup.label_policy": "independent", "mixup.label_alpha": 0.5}) \
        == "independent a=0.5"
    assert arm_of({"mixup.stop_epoch": 60, "mixup.label_policy": "same"}) == "Mixup, E=60"


def test_spec_claim_key_is_validated_and_bundled_claim_specs_declare_theirs():
    with pytest.raises(ConfigError, match="claim"):
        validate_sweep(tiny_spec("t", claim="linearity"), "spec.yaml")
    assert validate_sweep(tiny_spec("t", claim="rare_feature"), "spec.yaml").spec.claim == "rare_feature"
    expected = {"claim1_decoupled": "decoupling", "claim2_rare_feature": "rare_feature",
                "claim3_early_stop": "early_stop", "map_rare_fraction_noise": "map"}
    for name, claim in expected.items():
        assert load_sweep(name).spec.claim == claim, name
