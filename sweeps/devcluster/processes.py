"""Processes of the development cluster: started each in its own Unix session, found again through
/proc by session id, so that nothing outside the recorded sessions is ever signalled."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

HOST = "127.0.0.1"


class ClusterError(Exception):
    """A user-facing failure: printed as one line, exit code 1."""


def find_executable(name: str, hint: str = "activate the project's venv") -> str:
    """Prefer the interpreter's own environment, so the nodes run the venv the project lives in."""
    own = Path(sys.executable).parent / name
    if own.is_file() and os.access(own, os.X_OK):
        return str(own)
    found = shutil.which(name)
    if found is None:
        raise ClusterError(f"cannot find the '{name}' executable ({hint})")
    return found


def free_ports(count: int, reserved: set[int]) -> list[int]:
    """Distinct free ports on 127.0.0.1; sockets stay bound until all are chosen so none repeats."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port not in reserved and port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((HOST, port)) == 0


def http_get(url: str, token: Optional[str] = None, timeout: float = 3.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except (urllib.error.URLError, OSError):
        return 0, b""


def run_in_new_session(cmd: list[str], env: dict, log: Path, cwd: Optional[Path] = None,
                       user: Optional[str] = None) -> subprocess.Popen:
    """Start `cmd` as the leader of a new session (its pid is the session id of all it spawns).
    `user`: run as that account (PostgreSQL refuses to run as root)."""
    extra = {}
    if user is not None:
        import pwd

        account = pwd.getpwnam(user)
        extra = dict(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(cwd or os.getcwd()), **extra,
        )


def list_processes() -> list[dict]:
    """Live (non-zombie) processes: pid, session id, command line."""
    processes = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # The command name in field 2 may contain spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        state, session = fields[0], int(fields[3])
        if state in ("Z", "X"):  # already dead, only waiting to be reaped by its parent
            continue
        processes.append({"pid": int(entry.name), "sid": session, "cmd": cmdline.strip()})
    return processes


def cluster_processes(state: dict) -> dict[str, list[dict]]:
    """Live processes per component: members of its session, plus strays naming our Ray temp dir."""
    sessions = {component: info["sid"] for component, info in state["components"].items()}
    by_sid = {sid: component for component, sid in sessions.items()}
    found: dict[str, list[dict]] = {component: [] for component in sessions}
    ray_temp = state.get("ray_temp_dir")
    me = os.getpid()
    for proc in list_processes():
        if proc["pid"] == me:
            continue
        if proc["sid"] in by_sid:
            found[by_sid[proc["sid"]]].append(proc)
        elif ray_temp and ray_temp.rstrip("/") + "/" in proc["cmd"]:
            found.setdefault("stray", []).append(proc)
    return found


def signal_all(processes: list[dict], sig: int) -> None:
    for proc in processes:
        try:
            os.kill(proc["pid"], sig)
        except ProcessLookupError:
            pass


def stop_processes(state: dict, grace_s: float, components: Optional[list[str]] = None,
                   first_signal: int = signal.SIGTERM) -> list[dict]:
    """Signal every process of the given components (default: the whole cluster, strays included) at
    once, SIGKILL what outlives the grace period. Returns the survivors (none, unless a process is
    stuck in the kernel). Ray's own graceful shutdown can take 20 s (the GCS waits for its raylets);
    nothing of a throwaway local cluster needs that."""

    def alive() -> list[dict]:
        found = cluster_processes(state)
        names = found if components is None else components
        return [p for name in names for p in found.get(name, [])]

    signal_all(alive(), first_signal)
    deadline = time.monotonic() + grace_s
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    # A process may have forked after the first signal: signal whatever is there now.
    signal_all(alive(), signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive()


def stop_leader(state: dict, component: str, sig: int, grace_s: float) -> list[dict]:
    """Signal only a component's session leader (a server that stops its own children: PostgreSQL's
    postmaster on SIGINT is a fast shutdown), then SIGKILL the session after the grace period."""
    sid = state["components"][component]["sid"]
    try:
        os.kill(sid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace_s
    while cluster_processes(state).get(component) and time.monotonic() < deadline:
        time.sleep(0.2)
    return stop_processes(state, 0.0, [component])


def wait_until(ready, what: str, timeout_s: float, proc: Optional[subprocess.Popen] = None,
               log: Optional[Path] = None, interval_s: float = 0.25) -> None:
    """Poll `ready()` until it is true; a process that exits first, or the timeout, is a ClusterError."""
    deadline = time.monotonic() + timeout_s
    where = f"; see {log}" if log else ""
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ClusterError(f"{what} exited (code {proc.returncode}){where}")
        if ready():
            return
        time.sleep(interval_s)
    raise ClusterError(f"{what} was not ready within {timeout_s:.0f}s{where}")
