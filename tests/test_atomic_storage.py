"""Ray's storage on a local path is written through `sweeps.atomic_storage`: a file appears whole or
not at all, so a driver killed while Ray rewrites its experiment state leaves the previous state
(before: an empty experiment_state-*.json, and a sweep that could not be resumed)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pyarrow.fs as pafs
import pytest

from mixup_core.config import ConfigError
from sweeps.atomic_storage import storage_filesystem
from sweeps.ray_compat.experiment_state import restored_trials


def test_a_writer_killed_mid_file_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "experiment_state-x.json"
    script = textwrap.dedent(f"""
        import os
        from sweeps.atomic_storage import storage_filesystem
        fs = storage_filesystem({str(tmp_path)!r})
        with fs.open_output_stream({str(target)!r}) as f:
            f.write(b"old state")
        f = fs.open_output_stream({str(target)!r})
        f.write(b"x" * 1_000_000)  # half of the new state, then the process dies
        f.flush()
        os._exit(9)
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 9, res.stderr
    assert target.read_bytes() == b"old state"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert len(leftovers) == 1 and leftovers[0].startswith(".experiment_state-x.json.partial-")


def test_directories_upload_as_ray_uploads_them(tmp_path):
    staging = tmp_path / "staging"
    (staging / "checkpoint_000001").mkdir(parents=True)
    (staging / "experiment_state-1.json").write_text('{"trial_data": []}')
    (staging / "checkpoint_000001" / "state.pt").write_bytes(bytes(range(256)) * 4096)
    fs = storage_filesystem(str(tmp_path))
    dest = tmp_path / "storage" / "sweep"
    fs.create_dir(str(dest), recursive=True)
    pafs.copy_files(str(staging), str(dest), destination_filesystem=fs)  # what Ray's syncer calls
    assert (dest / "experiment_state-1.json").read_text() == '{"trial_data": []}'
    assert (dest / "checkpoint_000001" / "state.pt").read_bytes() == bytes(range(256)) * 4096
    assert sorted(p.name for p in dest.rglob("*")) == ["checkpoint_000001", "experiment_state-1.json", "state.pt"]
    assert storage_filesystem("s3://bucket/sweeps") is None  # object stores publish whole objects anyway


def test_a_damaged_experiment_state_is_one_clear_error(tmp_path):
    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"damaged \(0 bytes\).*start the sweep again under another name"):
        restored_trials(str(tmp_path))
