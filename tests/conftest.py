import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
# Keep tests on the CPU and small thread pools: the CI machine has 2 cores.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


@pytest.fixture
def repo_root() -> Path:
    return REPO
