"""The sweep lease (sweeps/lease.py) on its own, with real processes: exactly one of many drivers
started at the same moment gets it (local filesystem: flock; object-store protocol: Fischer's timed
write-and-read-back, run here through a pyarrow filesystem), the others are refused naming the
holder; a dead holder's lease stops blocking (at once on its host, after expiry elsewhere); release
leaves nothing behind. The lease inside real sweeps (two drivers, resume during a run, SIGKILL,
SIGTERM): test_sweep_lease.py."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps import lease


def _contend(path: str, barrier, remote: bool, queue) -> None:
    fs = None
    if remote:  # an object store publishes an object whole: so does this local filesystem
        from sweeps.atomic_storage import storage_filesystem

        fs = storage_filesystem(path)
    barrier.wait()
    try:
        held = lease.acquire(path, "s", "run", filesystem=fs)
    except lease.LeaseRefused as e:
        queue.put(("refused", str(e), e.holder.pid))
        return
    queue.put(("held", os.getpid(), None))
    time.sleep(8 if remote else 1.5)  # hold it while the others look (settle, then read back)
    held.release()


@pytest.mark.parametrize("remote", [False, True], ids=["local-flock", "object-store-protocol"])
def test_exactly_one_of_drivers_started_at_once_gets_the_lease(tmp_path, remote, monkeypatch):
    # The object-store protocol's guarantee holds while each contender's read-then-write takes less
    # than the settle time: a loaded 2-core CI machine needs a margin (production default: 2 s).
    monkeypatch.setenv("MIXUP_SWEEP_LEASE_SETTLE_S", "3.5")
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3 if not remote else 1):
        path = str(tmp_path / f"r{round_}" / "s")
        n = 4
        barrier, queue = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_contend, args=(path, barrier, remote, queue)) for _ in range(n)]
        for p in procs:
            p.start()
        results = [queue.get(timeout=60) for _ in range(n)]
        for p in procs:
            p.join(timeout=60)
        held = [r for r in results if r[0] == "held"]
        refused = [r for r in results if r[0] == "refused"]
        assert len(held) == 1, results
        assert len(refused) == n - 1
        for _, message, pid in refused:
            # Locally the refusal names the holder. On an object store a refused contender names the
            # writer its read-back found, which may be another contender that lost in turn.
            named = [held[0][1]] if not remote else [p.pid for p in procs]
            assert any(f"pid {n}" in message for n in named) and socket.gethostname() in message, message
            assert "one driver per sweep" in message
        assert lease.read_lease(path) is None  # released
        assert not os.path.exists(path) or os.listdir(path) == []  # no lease, no lock file left


def test_read_lease_names_the_holder_and_release_removes_what_acquiring_created(tmp_path):
    path = tmp_path / "storage" / "sweep"
    held = lease.acquire(str(path), "sweep", "resume")
    holder = lease.read_lease(str(path))
    assert (holder.host, holder.pid, holder.command) == (socket.gethostname(), os.getpid(), "resume")
    assert holder.started <= holder.renewed <= time.time() and holder.live()
    assert oct((path / lease.LEASE_FILE).stat().st_mode & 0o777) == "0o600"
    with pytest.raises(lease.LeaseRefused, match=f"pid {os.getpid()}"):
        lease.acquire(str(path), "sweep", "run")
    held.release()
    assert lease.read_lease(str(path)) is None
    assert not (tmp_path / "storage").exists()  # created by acquire, empty again: removed


def test_the_lease_is_renewed_while_held(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXUP_SWEEP_LEASE_RENEW_S", "0.2")
    with lease.acquire(str(tmp_path / "s"), "s") as held:
        first = lease.read_lease(str(tmp_path / "s")).renewed
        time.sleep(1.0)
        assert lease.read_lease(str(tmp_path / "s")).renewed > first
        assert held.lost is None


def _write(path: Path, **fields) -> None:
    path.mkdir(parents=True, exist_ok=True)
    now = time.time()
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "renewed": now, "expiry_s": 45,
           "token": "x", "command": "run", "pid_start": None, **fields}
    (path / lease.LEASE_FILE).write_text(json.dumps(doc))


def test_a_dead_holder_on_this_host_does_not_block(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write(tmp_path / "s", pid=dead.pid)
    assert lease.read_lease(str(tmp_path / "s")).dead()
    lease.acquire(str(tmp_path / "s"), "s").release()


def test_a_reused_pid_does_not_keep_a_dead_holders_lease(tmp_path):
    _write(tmp_path / "s", pid=os.getpid(), pid_start=1)  # this pid, but a process started at tick 1
    assert not lease.read_lease(str(tmp_path / "s")).live()


def test_another_hosts_lease_blocks_until_it_expires(tmp_path):
    _write(tmp_path / "s", host="elsewhere.example", pid=1, expiry_s=1.5)
    with pytest.raises(lease.LeaseRefused, match="host elsewhere.example, pid 1, since"):
        lease.acquire(str(tmp_path / "s"), "s", "resume")
    time.sleep(1.7)
    lease.acquire(str(tmp_path / "s"), "s", "resume").release()


def test_a_holder_that_lost_its_lease_is_told(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXUP_SWEEP_LEASE_RENEW_S", "0.2")
    lost = []
    held = lease.acquire(str(tmp_path / "s"), "s", on_lost=lost.append)
    _write(tmp_path / "s", host="elsewhere.example", pid=7)  # taken over (this holder stalled past expiry)
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost and lost[0].host == "elsewhere.example"
    held.release()  # does not delete the new holder's lease
    assert lease.read_lease(str(tmp_path / "s")).host == "elsewhere.example"


def test_loopback_addresses_keep_the_drivers_ray_on_loopback(monkeypatch):
    """Every loopback --address gets what the embedded Ray gets (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
    set before ray is imported), so ray.init does not swap 127.0.0.1 for the external IP."""
    from sweeps import cli

    for address, kept in [("127.0.0.1:6379", True), ("127.8.9.1:6379", True), ("localhost:6379", True),
                          ("[::1]:6379", True), ("ray://127.0.0.1:10001", True), ("ray://localhost:10001", True),
                          (None, True), ("10.1.2.3:6379", False), ("head.example:6379", False)]:
        monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        cli._keep_embedded_ray_on_loopback(address)
        assert (os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") == "0") == kept, address
