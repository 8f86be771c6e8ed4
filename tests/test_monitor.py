"""`mixup-sweep status` and `list` read a sweep's state from the tracking store alone: while it runs
(the driver's live progress on the parent run), after it finished, and for bad input (one line,
exit 2). A real sweep on the embedded Ray, a real SQLite store, the console script as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sweep_support import run_cli, start_cli, tiny_spec, wait_for, write_spec


def status(tmp: Path, *args: str) -> dict:
    proc = run_cli(["status", *args, "--json"], cwd=tmp, timeout=60)
    return json.loads(proc.stdout) if proc.returncode == 0 else {"error": proc.stderr, "exit": proc.returncode}


@pytest.mark.e2e  # a sweep seen running, stopped, resumed, finished: ~1.5 min
def test_status_and_list_follow_a_sweep_from_start_to_end(tmp_path: Path):
    spec = tiny_spec("watched", grid={"seed": [0, 1], "mixup.stop_epoch": [0, None]})
    spec["trial"]["train"]["epochs"] = 60
    spec["trial"]["data"]["n_train"] = 10_000  # slow enough to be seen running (~0.3 s an epoch)
    write_spec(tmp_path, spec)
    log = tmp_path / "run.log"
    proc = start_cli(["run", "spec.yaml"], cwd=tmp_path, log=log)
    try:
        running = wait_for(lambda: (lambda s: s if s.get("state") == "running" and s.get("trials_running", 0) > 0
                                    and 0 < s.get("progress", 0) < 0.5 else None)(status(tmp_path, "watched")),
                           timeout=240, what="the sweep to be seen running with progress", interval=1.0)
        assert running["trials_total"] == 4 and running["epochs_total"] == 240
        assert running["trials_finished"] + running["trials_running"] + running["trials_pending"] <= 4
        assert running["eta_s"] is not None and running["eta_s"] > 0
        assert running["driver_host"] and running["job"] is None
        # A local driver (no Ray job): `stop` sends it SIGTERM through its lease; it stops resumably.
        stopped = run_cli(["stop", "watched"], cwd=tmp_path, timeout=60)
        assert stopped.returncode == 0 and "SIGTERM" in stopped.stdout, stopped.stdout + stopped.stderr
        assert proc.wait(timeout=120) == 143, log.read_text()[-3000:]
        interrupted = status(tmp_path, "watched")
        assert interrupted["state"] == "interrupted" and interrupted["trials_finished"] < 4
        assert "mixup-sweep resume watched" in interrupted["note"]
        resumed = run_cli(["resume", "watched"], cwd=tmp_path, timeout=400)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()

    done = status(tmp_path)  # no NAME: the newest sweep
    assert done["name"] == "watched" and done["state"] == "finished"
    assert (done["trials_finished"], done["trials_running"], done["trials_pending"]) == (4, 0, 0)
    assert done["progress"] == 1.0 and done["epochs_done"] == done["epochs_total"] == 240
    assert done["best"]["n"] == 2 and not done["best"]["provisional"]
    text = run_cli(["status", "watched"], cwd=tmp_path, timeout=60).stdout
    assert "watched" in text and "4 finished" in text and "100%" in text

    # `resume` of a finished sweep: nothing to do, said at once, without starting Ray.
    import time

    started = time.monotonic()
    again = run_cli(["resume", "watched"], cwd=tmp_path, timeout=120)
    assert again.returncode == 0 and "nothing to resume" in again.stderr, again.stderr[-2000:]
    assert "Started a local Ray instance" not in again.stderr
    assert time.monotonic() - started < 60

    listed = run_cli(["list", "--json"], cwd=tmp_path, timeout=60)
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["watched"]
    assert rows[0]["state"] == "finished" and rows[0]["trials_total"] == 4
    assert rows[0]["best_stop_epoch"] in ("0", "never")  # recorded by `best` at the end of `run`


def test_status_list_logs_stop_refuse_bad_input_in_one_line(tmp_path: Path):
    cases = [
        (["status", "nope"], "no MLflow database"),  # no store here yet
        (["list"], "no MLflow database"),
        (["status", "x", "--tracking-uri", "http://127.0.0.1:1"], "127.0.0.1:1"),
        (["logs", "nope"], "no MLflow database"),
        (["stop", "nope"], "no MLflow database"),
    ]
    for args, says in cases:
        proc = run_cli(args, cwd=tmp_path, timeout=60)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, (args, proc.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
