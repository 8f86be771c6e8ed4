"""A `JobSubmissionClient` for an address that was checked first: it must be the HTTP address of a Ray
dashboard (the job API, port 8265 by default), answer within a few seconds, and accept this client's
token when the cluster has token authentication on (the SDK sends RAY_AUTH_TOKEN / the file at
RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token when RAY_AUTH_MODE=token)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 5.0
HINT = ("pass the Ray dashboard's address, e.g. --address http://HEAD:8265 (`mixup-sweep cluster up` writes "
        "it to .cluster/env as RAY_DASHBOARD_ADDRESS)")


class JobsError(Exception):
    """One line for the user: what is wrong with the address or the cluster's answer."""


def _check_http(address: str, timeout_s: float) -> None:
    if not address.startswith(("http://", "https://")):
        raise JobsError(f"--address {address}: not an http(s):// address; {HINT}")
    try:
        with urllib.request.urlopen(f"{address.rstrip('/')}/api/version", timeout=timeout_s) as response:
            body = response.read(65536)
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            return  # a dashboard that wants a token even here; the SDK call below checks ours
        raise JobsError(f"--address {address}: answers HTTP {e.code}, not a Ray dashboard; {HINT}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise JobsError(f"--address {address}: no Ray dashboard answers there ({reason}); {HINT}") from None
    try:
        version = json.loads(body)["ray_version"]
    except (ValueError, KeyError, TypeError):
        raise JobsError(f"--address {address}: answers, but not as a Ray dashboard (no ray_version at "
                        f"/api/version); {HINT}") from None
    if not isinstance(version, str):
        raise JobsError(f"--address {address}: not a Ray dashboard; {HINT}")


def _auth_problem(address: str, error: Exception) -> str:
    text = str(error)
    if "401" in text or "Authentication required" in text:
        where = os.environ.get("RAY_AUTH_TOKEN_PATH") or "RAY_AUTH_TOKEN / ~/.ray/auth_token"
        if os.environ.get("RAY_AUTH_MODE") != "token":
            return (f"--address {address}: the cluster requires a token; set RAY_AUTH_MODE=token and "
                    f"RAY_AUTH_TOKEN_PATH to its token file (`source .cluster/env` for the dev cluster)")
        return f"--address {address}: the cluster requires a token and none was found (looked in {where})"
    if "403" in text:
        return f"--address {address}: the cluster rejected this client's token (RAY_AUTH_TOKEN_PATH / RAY_AUTH_TOKEN)"
    return f"--address {address}: the job API failed: {text.splitlines()[0][:200] if text else type(error).__name__}"


def job_client(address: str, timeout_s: float = PROBE_TIMEOUT_S):
    """A connected, authenticated `JobSubmissionClient`, or JobsError."""
    _check_http(address, timeout_s)
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
        client.list_jobs()  # the cheapest authenticated call: a missing or wrong token fails here
    except Exception as e:  # ConnectionError, RuntimeError from the SDK with the HTTP status in it
        raise JobsError(_auth_problem(address, e)) from None
    return client
