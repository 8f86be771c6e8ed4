"""Which Ray a command talks to: `--address`, else $RAY_ADDRESS, else (None) an embedded local Ray
started by the command itself. One rule for the CLI, the preflight checks and the runner."""

from __future__ import annotations

import os
from typing import Optional


def cluster_address(address: Optional[str]) -> Optional[str]:
    """The address of an existing Ray cluster to use, or None for an embedded local Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def uses_cluster(address: Optional[str]) -> bool:
    return cluster_address(address) is not None
