"""The claim a sweep's spec declares (`claim:`, logged as a param of the parent run), evaluated on the
sweep's trials as `mixup-sweep best` reads them, and written onto the parent run.

Written onto the parent run under `claim/` (fixed names, so a rerun of `best` replaces them):
`claim.json` (claims.claim_to_dict), `claim.md` (the verdict table) and `<claim>.png` (claim_plots.py);
tag `mixup_sweep.claim_verdict` = the headline. A sweep without a `claim` key gets nothing here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

from .claims import ClaimError, Trial, claim_to_dict, evaluate, format_claim
from .selection import TrialRecord, group_trials, parse_param

CLAIM_PARAM = "claim"  # the spec key, as start_sweep_run logs it on the parent run
ARTIFACT_DIR = "claim"
VERDICT_TAG = "mixup_sweep.claim_verdict"


def declared_claim(parent) -> str | None:
    value = parse_param(parent.data.params.get(CLAIM_PARAM))
    return value if isinstance(value, str) else None


def finished_trials(records: Sequence[TrialRecord]) -> list[Trial]:
    """Finished trials, a retried trial once (group_trials' rules), params typed."""
    grouping = group_trials(records)
    return [Trial({k: parse_param(v) for k, v in t.params.items()}, dict(t.metrics), t.run_id)
            for g in grouping.groups for t in g.trials]


def write_claim(client, parent_run_id: str, claim: str, result, text: str) -> None:
    import json

    from .claim_plots import plot_claim

    with tempfile.TemporaryDirectory(prefix="mixup-claim-") as tmp:
        d = Path(tmp)
        (d / "claim.json").write_text(json.dumps(claim_to_dict(result), indent=2) + "\n")
        (d / "claim.md").write_text("```\n" + text + "\n```\n")
        plot_claim(result, d / f"{claim}.png")
        client.log_artifacts(parent_run_id, str(d), artifact_path=ARTIFACT_DIR)
    client.set_tag(parent_run_id, VERDICT_TAG, result.headline[:5000])


def claim_section(client, parent, records: Sequence[TrialRecord], write: bool) -> tuple[str, dict[str, Any] | None]:
    """(text to append to the selection report, document for --json); ('', None) without a claim.
    Never raises for the claim's own problems: the selection stands, the claim says what is missing."""
    claim = declared_claim(parent)
    if claim is None:
        return "", None
    try:
        result = evaluate(claim, finished_trials(records))
    except ClaimError as err:
        return f"\n\nClaim '{claim}': no verdict: {err}", {"claim": claim, "error": str(err)}
    text = format_claim(result)
    if write:
        try:
            write_claim(client, parent.info.run_id, claim, result, text)
            text += f"\nClaim figure written to parent run {parent.info.run_id}: {ARTIFACT_DIR}/{claim}.png"
        except Exception as err:  # an MLflow or plotting failure must not hide the verdict just printed
            text += f"\nClaim not written to the parent run: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return "\n\n" + text, claim_to_dict(result)
