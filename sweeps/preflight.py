"""Up-front checks of the places a sweep talks to, BEFORE anything is created (no MLflow store,
experiment or run, no Ray results, no Ray started): a malformed or unreachable Ray address or tracking
URI is one clear line and exit code 2, not a hang, a traceback or a half-created sweep.

Short timeouts on purpose: these are "is anything listening" probes. Once a sweep runs, MLflow's own
HTTP retries ride out a server that goes away for a while (docs/failure_recovery.md).
"""

from __future__ import annotations

import os
import socket
import tempfile
import urllib.error
import urllib.request
from typing import Optional

from mixup_core import ConfigError

from .ray_address import cluster_address, uses_cluster

PROBE_TIMEOUT_S = 3.0
# MLflow tracking stores a sweep can use (SQLAlchemy URIs may name a driver: postgresql+psycopg2).
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")
RAY_HINT = ("use HOST:PORT of the head node (e.g. 127.0.0.1:6379), ray://HOST:10001, or leave --address "
            "out for an embedded local Ray")


def _split_host_port(text: str) -> Optional[tuple[str, int]]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return host, int(port)


def check_ray_address(address: Optional[str]) -> None:
    """--address (else $RAY_ADDRESS): well formed and something listens there."""
    flag = "--address" if address else "$RAY_ADDRESS"
    address = cluster_address(address)
    if not address or address in ("auto", "local"):
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    target = None if "://" in rest or "/" in rest else _split_host_port(rest)
    if target is None:
        raise ConfigError(f"{flag} {address}: not a Ray address; {RAY_HINT}")
    try:
        socket.create_connection(target, timeout=PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ConfigError(
            f"{flag} {address}: no Ray cluster answers there ({e.strerror or type(e).__name__}); start one "
            f"(cluster/local-cluster up, or ray start --head) or fix the address"
        ) from None


def check_tracking_uri(uri: str, flag: str = "--tracking-uri") -> None:
    """A known MLflow store scheme, and for a server: it answers /health."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"{flag} {uri}: not an MLflow tracking URI; use sqlite:///PATH.db or http://HOST:PORT of an "
            f"MLflow server (or postgresql://, mysql://)"
        )
    if scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_S):
            return
    except urllib.error.HTTPError:  # something answers (auth, proxy): MLflow will say more
        return
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        reason = getattr(reason, "strerror", None) or str(reason) or type(e).__name__
        raise ConfigError(
            f"{flag} {uri}: no MLflow server answers there ({reason}); start it (mlflow server --host "
            f"127.0.0.1 --port PORT) or fix the URI"
        ) from None


def check_storage_path(storage_path: Optional[str]) -> None:
    """A local --storage-path must be a directory this process can create (Ray would fail later, after
    the MLflow runs exist). Probed by creating a uniquely named directory in the deepest existing
    ancestor and removing it: never the path itself, which a sweep started beside this one may be
    creating or filling at this moment (probing the path itself raced with exactly that)."""
    if storage_path and "://" in storage_path:
        return  # s3://, gs://: Ray checks those itself
    path = os.path.abspath(os.path.expanduser(storage_path or "ray_results"))
    flag = f"--storage-path {storage_path}" if storage_path else f"storage {path}"
    probe = path
    while not os.path.isdir(probe):
        if os.path.lexists(probe) and not os.path.isdir(probe):  # re-checked: it may just have been made
            raise ConfigError(f"{flag}: {probe} is not a directory; pass a writable directory")
        probe = os.path.dirname(probe)
    if probe == path:
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mixup-sweep-probe-", dir=probe))
    except OSError as e:
        raise ConfigError(f"{flag}: cannot create {path} ({e.strerror}); pass a writable directory") from None


def check_trial_data(sweep, address: Optional[str]) -> None:
    """npz data files of the sweep's trials, checked on the driver like mixup-train checks them. On an
    existing cluster (--address) a path missing here may exist on the nodes: only files present here
    are checked then."""
    from mixup_core import load_npz_arrays  # numpy and torch: only when a sweep uses npz data

    remote = uses_cluster(address)
    configs = [sweep.trial_config(point) for point in sweep.grid_points() or [{}]]
    roots = {cfg.data.root for cfg in configs if cfg.data.name == "npz"}
    for root in sorted(roots):
        path = os.path.abspath(os.path.expanduser(root))
        if remote and not os.path.exists(path):
            continue
        try:
            load_npz_arrays(path)
        except ConfigError as e:
            raise ConfigError(f"trial.data.root: {e}") from None


def check_local_resources(sweep, address: Optional[str]) -> Optional[str]:
    """On the embedded Ray (no --address), a trial that asks for more CPUs or GPUs than this machine has
    would wait for ever (Ray only warns): refuse it up front. A pack that `pack: auto` chose too big for
    this machine is made smaller instead (returns a note saying so). A cluster may autoscale: not
    checked. Imports ray: call it after cli._keep_embedded_ray_on_loopback."""
    if uses_cluster(address):
        return None
    from .ray_compat.resources import embedded_ray_cpus

    res = sweep.spec.resources
    have_cpu = embedded_ray_cpus()
    have_gpu = 0
    if res.gpu > 0:
        import torch

        have_gpu = torch.cuda.device_count()
    note = None
    if sweep.pack_auto and res.pack > 1:
        fits = largest_fitting_pack(res.cpu, res.gpu, res.pack, have_cpu, have_gpu)
        if fits < res.pack:
            note = (f"resources.pack: auto lowered to {fits}: a pack of {res.pack} trials needs {res.cpu * res.pack:g} "
                    f"CPU, this machine has {have_cpu:g}")
            res.pack = fits
    cpu, gpu = res.cpu * res.pack, res.gpu * res.pack
    if cpu <= have_cpu and gpu <= have_gpu:
        return note
    who = f"a pack of {res.pack} trials" if res.pack > 1 else "a trial"
    raise ConfigError(
        f"resources: {who} needs {cpu:g} CPU + {gpu:g} GPU, but the embedded Ray on this machine has "
        f"{have_cpu:g} CPU + {have_gpu} GPU; lower resources.cpu/gpu{'/pack' if res.pack > 1 else ''}, "
        f"or run on a cluster that has them (--address)"
    )


def largest_fitting_pack(cpu: float, gpu: float, pack: int, have_cpu: float, have_gpu: float) -> int:
    """The largest pack size up to `pack` whose trials (each `cpu`, `gpu`) fit on one machine; 1 when
    none does (then a lone trial is checked as usual)."""
    for size in range(pack, 1, -1):
        if cpu * size <= have_cpu and gpu * size <= have_gpu:
            return size
    return 1
