import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

# The test session's own user cache (the empty MLflow store template, sweeps/sqlite_template.py):
# built once by the first test that creates a store, never the developer's ~/.cache. Subprocesses
# (sweeps, Ray workers) inherit it.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mixup-sweeps-test-cache-")


@pytest.fixture
def repo_root() -> Path:
    return REPO
