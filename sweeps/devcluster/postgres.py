"""The cluster's PostgreSQL server: Debian's (or any) server binaries, its own data directory
(STATE/postgres), TCP on 127.0.0.1 only (no Unix socket: nothing outside the state dir), password
(SCRAM) authentication with the cluster's generated password.

PostgreSQL refuses to run as root: under root the server runs as the unprivileged account
`postgres` (Debian's package creates it), else `nobody`, and owns its data directory."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path
from typing import Optional

from .processes import HOST, ClusterError, cluster_processes, run_in_new_session, stop_leader, wait_until
from .state import DATABASE, DATABASE_USER, save_state

COMPONENT = "postgres"
SEARCH_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
INSTALL_HINT = ("install PostgreSQL's server (Debian: apt-get install postgresql) or pass --postgres-bin "
                "DIR (the directory of initdb and postgres)")


def server_binaries(bin_dir: Optional[str]) -> Path:
    """The directory holding `initdb`, `postgres` and `pg_isready`: --postgres-bin, else PATH, else
    Debian's /usr/lib/postgresql/<newest>/bin."""
    def complete(directory: Path) -> bool:
        return all((directory / tool).is_file() for tool in ("initdb", "postgres", "pg_isready", "psql"))

    if bin_dir:
        if not complete(Path(bin_dir)):
            raise ClusterError(f"--postgres-bin {bin_dir}: no initdb, postgres, pg_isready and psql there")
        return Path(bin_dir)
    candidates = [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p] + SEARCH_DIRS
    for directory in candidates:
        if complete(directory):
            return directory
    raise ClusterError(f"no PostgreSQL server binaries found: {INSTALL_HINT}")


def server_account() -> Optional[str]:
    """The account the server runs as: None (this user) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ClusterError("running as root, and no unprivileged account (postgres, nobody) to run PostgreSQL as")


def _reachable_by(account: str, path: Path) -> bool:
    """Whether `account` can walk down to `path` (every parent searchable by it)."""
    info = pwd.getpwnam(account)
    for parent in [*reversed(path.parents)]:
        st = parent.stat()
        if st.st_uid == info.pw_uid:
            if not st.st_mode & 0o100:
                return False
        elif st.st_gid == info.pw_gid:
            if not st.st_mode & 0o010:
                return False
        elif not st.st_mode & 0o001:
            return False
    return True


def data_dir(state: dict) -> Path:
    return Path(state["state_dir"]) / "postgres"


def _prepare_data_dir(state: dict, account: Optional[str]) -> Path:
    data = data_dir(state)
    data.mkdir(mode=0o700, exist_ok=True)
    if account is not None:
        state_dir = Path(state["state_dir"])
        state_dir.chmod(state_dir.stat().st_mode | 0o001)  # searchable (not listable) by the server's account
        if not _reachable_by(account, data):
            raise ClusterError(
                f"running as root, PostgreSQL runs as '{account}', which cannot reach {data}: use a --state-dir "
                f"whose parent directories others may search (e.g. under /tmp)")
        info = pwd.getpwnam(account)
        os.chown(data, info.pw_uid, info.pw_gid)  # what is inside, initdb makes as that account
    return data


def initialise(state: dict, bin_dir: Path, password: str, account: Optional[str]) -> None:
    """initdb, once per state dir: the superuser `mlflow` with the cluster's password."""
    data = _prepare_data_dir(state, account)
    cluster_dir = data / "data"
    if (cluster_dir / "PG_VERSION").exists():
        return
    pwfile = data / ".initdb-password"  # initdb reads it before it fills the directory
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    if account is not None:
        info = pwd.getpwnam(account)
        os.chown(pwfile, info.pw_uid, info.pw_gid)
    log = Path(state["state_dir"]) / "logs" / "postgres-initdb.log"
    try:
        with open(log, "ab") as out:
            done = subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(cluster_dir), "-U", DATABASE_USER, f"--pwfile={pwfile}",
                 "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(data),
                user=account, group=pwd.getpwnam(account).pw_gid if account else None, timeout=120,
            )
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ClusterError(f"initdb failed (exit {done.returncode}); see {log}")


def _ready(bin_dir: Path, port: int) -> bool:
    done = subprocess.run([str(bin_dir / "pg_isready"), "-q", "-h", HOST, "-p", str(port), "-t", "2"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return done.returncode == 0


def start(state: dict, bin_dir: Path, password: str, timeout_s: float) -> None:
    """Start the server in its own session (idempotent initdb first), wait until it accepts
    connections, and create the MLflow database if it is missing."""
    account = server_account()
    initialise(state, bin_dir, password, account)
    port = state["ports"]["postgres"]
    log = Path(state["state_dir"]) / "logs" / "postgres.log"
    cmd = [str(bin_dir / "postgres"), "-D", str(data_dir(state) / "data"),
           "-c", f"listen_addresses={HOST}", "-c", f"port={port}", "-c", "unix_socket_directories=",
           "-c", "max_connections=100", "-c", "shared_buffers=32MB"]
    env = {"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}
    proc = run_in_new_session(cmd, env, log, cwd=data_dir(state), user=account)
    state["components"][COMPONENT] = {"sid": proc.pid, "log": str(log)}
    state["postgres_bin"] = str(bin_dir)
    save_state(Path(state["state_dir"]), state)
    wait_until(lambda: _ready(bin_dir, port), "the PostgreSQL server", timeout_s, proc, log)
    _create_database(bin_dir, port, password, log)


def _create_database(bin_dir: Path, port: int, password: str, log: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "PGPASSWORD": password, "LC_ALL": "C"}
    psql = [str(bin_dir / "psql"), "-h", HOST, "-p", str(port), "-U", DATABASE_USER, "-d", "postgres",
            "-tA", "-v", "ON_ERROR_STOP=1"]
    found = subprocess.run([*psql, "-c", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"],
                           env=env, capture_output=True, text=True, timeout=30)
    if found.returncode != 0:
        raise ClusterError(f"cannot connect to PostgreSQL on port {port}: {found.stderr.strip()}; see {log}")
    if found.stdout.strip() != "1":
        made = subprocess.run([*psql, "-c", f"CREATE DATABASE {DATABASE}"], env=env, capture_output=True,
                              text=True, timeout=30)
        if made.returncode != 0:
            raise ClusterError(f"cannot create the database {DATABASE}: {made.stderr.strip()}")


def stop(state: dict, grace_s: float = 15.0) -> list[dict]:
    """A fast shutdown (SIGINT to the postmaster: clients are disconnected, the data is consistent)."""
    if not cluster_processes(state).get(COMPONENT):
        return []
    return stop_leader(state, COMPONENT, signal.SIGINT, grace_s)
