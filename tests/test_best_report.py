"""The text report of `mixup-sweep best` says only what the data support (sweeps/best/report.py), on
the cases where a careless report goes wrong: one seed, groups identical on every seed, a group whose
trials all failed, a single group."""

from __future__ import annotations

from sweeps.best.report import format_report
from sweeps.best.selection import TrialRecord, group_trials, select

FALSE_CLAIMS = ("gap", "one std", "chosen group only", "WITHIN SEED NOISE")


def _rec(tid, seed, stop, value, status="FINISHED", error=None):
    metrics = {"val_acc": value, "test_acc": value - 0.1, "test_acc_rare": value - 0.3} if value is not None else {}
    return TrialRecord(run_id=f"r{tid}", trial_id=tid, status=status, error=error, metrics=metrics,
                       params={"seed": str(seed), "mixup.stop_epoch": str(stop), "mixup.alpha": "1.0"})


def _report(records) -> str:
    text = format_report(select(group_trials(records)), "s")
    assert all(len(line) <= 120 for line in text.splitlines()), max(text.splitlines(), key=len)
    for claim in FALSE_CLAIMS:
        assert claim not in text
    return text


def _table(text):
    return [line for line in text.splitlines() if line[:3].strip() in ("", "*") and " E=" in line[:5]]


def test_one_seed_claims_no_spread_and_no_comparison():
    text = _report([_rec("a", 0, 0, 0.60), _rec("b", 0, 2, 0.65), _rec("c", 0, "null", 0.64)])
    assert "±" not in text and "std" not in text and "Δ" not in text and "separate" not in text
    assert "Cells: one seed each, so no spread." in text
    assert "no paired comparison (a paired comparison needs >= 2 seeds)" in text
    assert "Best: E=2 (Mixup for epochs 1-2, standard training after): val_acc 0.6500 (1 seed)" in text
    assert "shown for every group" in text and len(_table(text)) == 3


def test_groups_identical_on_every_seed_are_a_tie_broken_by_the_rule():
    records = [_rec(f"{e}{s}", s, e, 0.80 + 0.01 * s) for e in ("null", 5, 0) for s in (0, 1, 2)]
    text = _report(records)
    assert "Best: E=0 (standard training, no Mixup)" in text  # the earliest stop epoch, not the first listed
    assert "Tie: E=5, E=never have exactly the same mean val_acc over as many seeds; broken by the rule" in text
    assert "E=5, E=never: the same val_acc as the best on every shared seed." in text
    assert "The data cannot separate the best from E=5, E=never" in text
    assert "separate the best from every" not in text
    assert [line.split()[-7] for line in _table(text) if not line.startswith("*")] == ["identical", "identical"]


def test_a_failed_group_is_named_and_has_no_row():
    records = [_rec(f"{e}{s}", s, e, 0.80 + 0.01 * s + (0.02 if e == 5 else 0.0)) for e in (0, 5) for s in (0, 1, 2)]
    records += [_rec(f"n{s}", s, "null", None, status="FAILED", error="diverged at epoch 3") for s in (0, 1, 2)]
    text = _report(records)
    assert "trials: 6 of 9 used, 3 excluded" in text and "Excluded (not in the table): 3 trial(s)" in text
    assert "  - E=never s1 (trial n1): FAILED: diverged at epoch 3" in text
    assert "  E=never: no usable trial (3 excluded), so no row in the table." in text
    assert [line.split()[1 if line.startswith("*") else 0] for line in _table(text)] == ["E=0", "E=5"]
    assert "The data separate the best from every other group" in text  # E=0 is 0.02 below on every seed


def test_a_single_group_is_compared_with_nothing():
    text = _report([_rec(f"x{s}", s, 0, 0.70 + 0.01 * s) for s in (0, 1)])
    assert "Only one group: nothing to compare it with." in text
    assert "Δ" not in text and "separate" not in text
