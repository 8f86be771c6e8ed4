"""One driver per sweep, and SIGTERM = Ctrl-C, with real drivers (embedded Ray, SQLite MLflow, torch):

- two `run`s of one sweep started at the same moment: exactly one runs, the other exits 2 at once
  naming the holder (host, pid); a `resume` while it runs is refused the same way;
- SIGTERM to the running driver (Kubernetes, spot preemption, `ray job stop`): Ray saves its state,
  exit code 143, one line saying `mixup-sweep resume NAME`, the lease released, the parent run KILLED;
- the resumed driver SIGKILLed: its lease stays behind but no longer blocks (dead pid on this host; on
  other hosts it expires, test_lease.py), and the next `resume` finishes the sweep;
- in the end every trial's MLflow history has exactly one value per epoch and `best --json` equals
  that of an undisturbed sweep of the same spec.
"""

from __future__ import annotations

import pytest
import json
import signal
import socket

from sweep_support import client, run_cli, sql, tiny_spec, wait_for, write_spec
from test_fault_tolerance import assert_sweep_intact, comparable, kill_tree, progress, start, trial_with

from sweeps.lease import LEASE_FILE, read_lease

pytestmark = pytest.mark.e2e  # two drivers, SIGTERM, SIGKILL and resumes: ~2.5 min


def test_one_driver_per_sweep_sigterm_resumes_and_a_killed_driver_does_not_block(tmp_path):
    epochs = 8
    grid = {"mixup.stop_epoch": [0, 3], "seed": [0, 1]}
    for name in ("ref", "cut"):
        write_spec(tmp_path, tiny_spec(name, trial=trial_with(1000, epochs), grid=grid, max_concurrent=1,
                                       share_prefix=False), f"{name}.yaml")
    db = tmp_path / "mlflow.db"
    lease_dir = tmp_path / "ray_results" / "cut"
    ref = start(["run", "ref.yaml"], tmp_path, tmp_path / "ref.log")
    drivers = [start(["run", "cut.yaml"], tmp_path, tmp_path / f"cut{i}.log") for i in range(2)]
    try:
        # 1. Two drivers at once: one is refused, naming the other.
        loser = wait_for(lambda: next((d for d in drivers if d.poll() is not None), None), timeout=120,
                         what="one of two drivers of 'cut' to give up")
        winner = drivers[1 - drivers.index(loser)]
        loser_log = (tmp_path / f"cut{drivers.index(loser)}.log").read_text()
        assert loser.returncode == 2, loser_log[-3000:]
        lines = [line for line in loser_log.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in loser_log, loser_log
        assert f"host {socket.gethostname()}, pid {winner.pid}, since" in lines[0], lines[0]
        assert "one driver per sweep" in lines[0]
        holder = read_lease(str(lease_dir))
        assert (holder.pid, holder.command) == (winner.pid, "run") and holder.live()

        # 2. A resume while it runs: refused, nothing changed.
        wait_for(lambda: any(s == "RUNNING" and e >= 1 for s, e in progress(db, "cut")), timeout=180,
                 what="a trial of 'cut' under way")
        runs_before = sql(db, "select run_uuid, status from runs order by run_uuid")
        res = run_cli(["resume", "cut"], cwd=tmp_path, timeout=120)
        assert res.returncode == 2, res.stderr[-3000:]
        assert f"pid {winner.pid}" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
        statuses = dict(sql(db, "select run_uuid, status from runs"))
        assert all(statuses[run_id] == status or status == "RUNNING" for run_id, status in runs_before)

        # 3. SIGTERM mid-sweep: a resumable stop, exit 143.
        def finished_and_midway():
            assert winner.poll() is None, (tmp_path / f"cut{drivers.index(winner)}.log").read_text()[-3000:]
            runs = progress(db, "cut")
            return sum(s == "FINISHED" for s, _ in runs) >= 1 and any(s == "RUNNING" and e >= 2 for s, e in runs)

        wait_for(finished_and_midway, timeout=240, what="a finished trial of 'cut' and one mid-way")
        winner.send_signal(signal.SIGTERM)
        assert winner.wait(timeout=120) == 143, (tmp_path / f"cut{drivers.index(winner)}.log").read_text()[-3000:]
        log = (tmp_path / f"cut{drivers.index(winner)}.log").read_text()
        assert "stopped by SIGTERM" in log and "mixup-sweep resume cut" in log, log[-3000:]
        assert "SIGABRT" not in log and "core dumped" not in log.lower()
        assert read_lease(str(lease_dir)) is None and not (lease_dir / LEASE_FILE).exists()
        assert sql(db, """select r.status from runs r join tags t on t.run_uuid = r.run_uuid
                          and t.key = 'mixup_sweep.role' and t.value = 'sweep'
                          join experiments e on e.experiment_id = r.experiment_id and e.name = 'cut'""") == [("KILLED",)]
        assert ref.wait(timeout=300) == 0, (tmp_path / "ref.log").read_text()[-3000:]

        # 4. The resumed driver SIGKILLed: its lease is left behind, but does not block.
        again = start(["resume", "cut"], tmp_path, tmp_path / "resume1.log")
        wait_for(lambda: again.poll() is not None or any(s == "RUNNING" and e >= 1 for s, e in progress(db, "cut")),
                 timeout=180, what="the resumed sweep under way")
        assert again.poll() is None, (tmp_path / "resume1.log").read_text()[-3000:]
        kill_tree(again)
        stale = read_lease(str(lease_dir))
        assert stale is not None and stale.pid == again.pid and not stale.live()
        res = run_cli(["resume", "cut"], cwd=tmp_path, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert read_lease(str(lease_dir)) is None
    finally:
        for proc in (ref, *drivers):
            if proc.poll() is None:
                kill_tree(proc)

    # 5. Nothing lost, nothing twice: every epoch once, the undisturbed sweep's answer.
    c = client(tmp_path)
    assert_sweep_intact(c, "ref", 4, epochs)
    assert_sweep_intact(c, "cut", 4, epochs)
    best_ref = run_cli(["best", "ref", "--json"], cwd=tmp_path)
    best_cut = run_cli(["best", "cut", "--json"], cwd=tmp_path)
    assert best_ref.returncode == 0 and best_cut.returncode == 0, best_ref.stderr + best_cut.stderr
    assert comparable(best_cut.stdout) == comparable(best_ref.stdout)
    assert json.loads(best_cut.stdout)["n_used"] == 4
