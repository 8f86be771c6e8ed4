"""One driver per sweep: a lease in the sweep's storage (the Ray experiment path STORAGE/NAME).

A driver (`mixup-sweep run` / `resume`) acquires the lease before it changes anything (no MLflow run
touched, no Ray started), renews it from a background thread every RENEW_S seconds and releases it
when it exits (normally, on an error, Ctrl-C or SIGTERM). A second driver of a live sweep is refused
with one line naming the holder (host, pid, since when). A holder that died without releasing (SIGKILL,
a lost machine) stops renewing: its lease expires EXPIRY_S after its last renewal and no longer
blocks; on the holder's own host a dead pid is recognised at once (pid and the process's start time).

The lease is one JSON file, STORAGE/NAME/.mixup-sweep-lease.json:
  {"host", "pid", "pid_start", "token", "command", "started", "renewed", "expiry_s"}
(`started`/`renewed`: seconds since the epoch, the holder's clock; readers on other hosts compare
with theirs, so clocks must agree within a few seconds, which NTP gives).

Why acquisition is race-free:
  * local (or mounted POSIX) storage: check-and-set runs under an exclusive `fcntl.flock` of a lock
    file beside the lease (STORAGE/NAME/.mixup-sweep-lease.lock). The lock file is removed at the end
    of each critical section; a process that locked a file since unlinked (or replaced) sees that its
    descriptor's inode is no longer the path's and retries, so two processes are never both inside. The
    lease itself is written to a temporary name and renamed into place (readers see all of it or
    none). The kernel drops a dead process's flock: no stale lock. Two drivers started at the same
    moment: exactly one writes its lease, the other reads it and is refused.
  * object storage (s3://, gs://, through pyarrow.fs: no locks, no create-if-absent in pyarrow):
    Fischer's timed mutual exclusion. A contender reads the lease; if it is live, it is refused; else
    it writes its own lease with a unique token, waits SETTLE_S, reads it back and holds the lease
    only if its token is still there (otherwise it was refused by the later writer, whom it names).
    Object stores are strongly read-after-write consistent (S3 since 2020, GCS always), so the
    last writer's token is what every later read returns. Guarantee: mutual exclusion holds when
    every contender's read-then-write takes less than SETTLE_S (2 s by default; one small PUT).
    A renewal that finds another token there means the lease was lost (the holder stalled for
    longer than EXPIRY_S): the driver says so and stops the sweep resumably (as Ctrl-C would).

Tuning for tests: MIXUP_SWEEP_LEASE_RENEW_S, MIXUP_SWEEP_LEASE_EXPIRY_S, MIXUP_SWEEP_LEASE_SETTLE_S.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from mixup_core import ConfigError

LEASE_FILE = ".mixup-sweep-lease.json"
LOCK_FILE = ".mixup-sweep-lease.lock"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def renew_s() -> float:
    return _env_float("MIXUP_SWEEP_LEASE_RENEW_S", 10.0)


def expiry_s() -> float:
    return _env_float("MIXUP_SWEEP_LEASE_EXPIRY_S", 45.0)


def settle_s() -> float:
    return _env_float("MIXUP_SWEEP_LEASE_SETTLE_S", 2.0)


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds (or last held) a sweep's lease."""

    host: str
    pid: int
    started: float  # when the holder acquired it (seconds since the epoch)
    renewed: float  # its last renewal
    expiry_s: float  # the holder's expiry: the lease is void expiry_s after `renewed`
    token: str = ""
    command: str = ""  # run | resume
    pid_start: Optional[int] = None  # the holder process's start time (Linux clock ticks since boot)

    def expired(self, now: Optional[float] = None) -> bool:
        return (time.time() if now is None else now) > self.renewed + self.expiry_s

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()

    def dead(self) -> bool:
        """Known dead: on this host, no such process (or a different one under the same pid)."""
        if not self.on_this_host():
            return False
        return not _process_alive(self.pid, self.pid_start)

    def live(self, now: Optional[float] = None) -> bool:
        """Blocks another driver: not expired and not known dead."""
        return not self.expired(now) and not self.dead()

    def describe(self) -> str:
        def at(t: float) -> str:
            return datetime.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")

        return (f"{self.command or 'a driver'} on host {self.host}, pid {self.pid}, since {at(self.started)} "
                f"(renewed {max(0.0, time.time() - self.renewed):.0f} s ago)")


class LeaseRefused(ConfigError):
    """Another driver holds the sweep's lease."""

    def __init__(self, message: str, holder: LeaseHolder):
        super().__init__(message)
        self.holder = holder


def _process_start(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _process_alive(pid: int, pid_start: Optional[int]) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, someone else's
    if pid_start is not None:
        now = _process_start(pid)
        if now is not None and now != pid_start:
            return False  # the pid was reused
    return True


# ---------------------------------------------------------------------------------------------
# Where the lease lives: a local directory, or a pyarrow filesystem for URIs


def _is_uri(path: str) -> bool:
    return "://" in path


class _Store:
    """Read / write / delete the lease file of one experiment path."""

    def __init__(self, experiment_path: str, filesystem=None):
        self.experiment_path = experiment_path.rstrip("/")
        if filesystem is not None or _is_uri(experiment_path):
            import pyarrow.fs as pafs

            if filesystem is None:
                filesystem, path = pafs.FileSystem.from_uri(self.experiment_path)
            else:
                path = self.experiment_path
            self.fs, self.dir = filesystem, path.rstrip("/")
        else:
            self.fs, self.dir = None, os.path.abspath(self.experiment_path)
        self.lease_path = f"{self.dir}/{LEASE_FILE}"

    @property
    def local(self) -> bool:
        return self.fs is None

    def read(self) -> Optional[LeaseHolder]:
        try:
            if self.local:
                with open(self.lease_path, "rb") as f:
                    data = f.read()
            else:
                with self.fs.open_input_stream(self.lease_path) as f:
                    data = f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as e:
            if not self.local and ("not found" in str(e).lower() or "does not exist" in str(e).lower()):
                return None
            raise
        try:
            doc = json.loads(data)
            return LeaseHolder(host=str(doc["host"]), pid=int(doc["pid"]), started=float(doc["started"]),
                               renewed=float(doc["renewed"]), expiry_s=float(doc["expiry_s"]),
                               token=str(doc.get("token", "")), command=str(doc.get("command", "")),
                               pid_start=doc.get("pid_start"))
        except (ValueError, KeyError, TypeError):
            return None  # damaged (never written by this module, which writes whole files): void

    def write(self, holder: LeaseHolder) -> None:
        data = json.dumps(asdict(holder)).encode()
        if self.local:
            tmp = f"{self.lease_path}.{holder.token}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.lease_path)
        else:
            with self.fs.open_output_stream(self.lease_path) as f:
                f.write(data)

    def delete(self) -> None:
        try:
            if self.local:
                os.unlink(self.lease_path)
            else:
                self.fs.delete_file(self.lease_path)
        except (FileNotFoundError, OSError):
            pass

    def make_dirs(self) -> list[str]:
        """Create the experiment directory (and parents); returns those created, deepest last."""
        if not self.local:
            self.fs.create_dir(self.dir, recursive=True)
            return []
        created = []
        path = self.dir
        while not os.path.isdir(path):
            created.append(path)
            path = os.path.dirname(path)
        for d in reversed(created):
            with contextlib.suppress(FileExistsError):
                os.mkdir(d, 0o700)
        return list(reversed(created))

    @contextlib.contextmanager
    def critical_section(self):
        """Local: exclusive flock of the lock file (see the module docstring). Remote: nothing (Fischer)."""
        if not self.local:
            yield
            return
        import fcntl

        lock_path = f"{self.dir}/{LOCK_FILE}"
        while True:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:  # unlinked by the previous holder after we opened it: try again
                    continue
                try:
                    yield
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(lock_path)
                return
            finally:
                os.close(fd)


# ---------------------------------------------------------------------------------------------
# The public API


def read_lease(experiment_path: str) -> Optional[LeaseHolder]:
    """The holder of a sweep's lease as its file says (None: no lease). Check `.live()` to know
    whether it still blocks: an expired lease, or one whose process is known dead, does not."""
    return _Store(experiment_path).read()


def _refusal(name: str, holder: LeaseHolder, command: str) -> LeaseRefused:
    return LeaseRefused(
        f"sweep {name!r} is being driven by another mixup-sweep ({holder.describe()}); one driver per sweep: "
        f"wait for it to end (or stop it), then `mixup-sweep resume {name}`; a lease whose holder died expires "
        f"{holder.expiry_s:.0f} s after its last renewal", holder)


class Lease:
    """A held lease; `release()` (or leaving the `with` block) gives it up. While held, a daemon thread
    renews it every `renew_s`; if a renewal finds the lease taken over, `on_lost` is called (default:
    one line on stderr and SIGINT to this process, which stops the sweep resumably)."""

    def __init__(self, store: _Store, holder: LeaseHolder, created_dirs: list[str], renew_every: float,
                 on_lost: Optional[Callable[[LeaseHolder], None]] = None):
        self._store = store
        self.holder = holder
        self._created_dirs = created_dirs
        self._renew_every = renew_every
        self._on_lost = on_lost or _interrupt_on_lost
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.lost: Optional[LeaseHolder] = None
        self._thread = threading.Thread(target=self._renew_loop, name="mixup-sweep-lease", daemon=True)
        self._thread.start()

    @property
    def experiment_path(self) -> str:
        return self._store.experiment_path

    def renew(self) -> bool:
        """Renew now; False (and `lost` set) when another holder's lease is there."""
        with self._lock:
            if self._stop.is_set():
                return True
            with self._store.critical_section():
                current = self._store.read()
                if current is not None and current.token != self.holder.token:
                    self.lost = current
                    return False
                self.holder = LeaseHolder(**{**asdict(self.holder), "renewed": time.time()})
                self._store.write(self.holder)
            return True

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._renew_every):
            try:
                ok = self.renew()
            except Exception as e:  # noqa: BLE001 - storage hiccup: try again next period
                print(f"mixup-sweep: warning: could not renew the sweep's lease ({e}); retrying", file=sys.stderr)
                continue
            if not ok:
                self._stop.set()
                self._on_lost(self.lost)
                return

    def release(self) -> None:
        with self._lock:
            if self._stop.is_set() and self.lost is not None:
                return
            self._stop.set()
            try:
                with self._store.critical_section():
                    current = self._store.read()
                    if current is not None and current.token == self.holder.token:
                        self._store.delete()
            except OSError:
                pass
            for d in reversed(self._created_dirs):  # only what acquiring created, only if empty now
                with contextlib.suppress(OSError):
                    os.rmdir(d)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _interrupt_on_lost(other: Optional[LeaseHolder]) -> None:
    who = other.describe() if other else "another driver"
    print(f"mixup-sweep: this driver lost the sweep's lease to {who}; stopping (resumable)", file=sys.stderr)
    os.kill(os.getpid(), signal.SIGINT)


def acquire(experiment_path: str, name: str, command: str = "run", filesystem=None,
            on_lost: Optional[Callable[[LeaseHolder], None]] = None) -> Lease:
    """Take the lease of the sweep at `experiment_path` (creating that directory if needed), or raise
    `LeaseRefused` (a ConfigError: exit 2) naming the live holder. `filesystem`: a pyarrow filesystem to
    use instead of the local one (tests of the object-store protocol)."""
    store = _Store(experiment_path, filesystem)
    created = store.make_dirs()
    now = time.time()
    me = LeaseHolder(host=socket.gethostname(), pid=os.getpid(), started=now, renewed=now, expiry_s=expiry_s(),
                     token=uuid.uuid4().hex, command=command, pid_start=_process_start(os.getpid()))
    try:
        with store.critical_section():
            current = store.read()
            if current is not None and current.live():
                raise _refusal(name, current, command)
            store.write(me)
        if not store.local:  # Fischer: wait, then see whose write survived
            time.sleep(settle_s())
            current = store.read()
            if current is None or current.token != me.token:
                raise _refusal(name, current or me, command)
    except BaseException:
        for d in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(d)
        raise
    return Lease(store, me, created, renew_s(), on_lost)
