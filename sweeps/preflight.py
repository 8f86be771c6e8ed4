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


# HTTP/2 client preface and an empty SETTINGS frame: every gRPC server (a Ray GCS, a Ray client
# server) answers with its own SETTINGS frame at once; anything else answers otherwise or not at all.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS = 0x04


def _speaks_grpc(target: tuple[str, int], timeout: float = PROBE_TIMEOUT_S) -> Optional[str]:
    """None when a gRPC (HTTP/2) server answers at target, else what answered instead."""
    with socket.create_connection(target, timeout=timeout) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(_H2_PREFACE)
            head = b""
            while len(head) < 9:
                chunk = sock.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
        except socket.timeout:
            return f"it accepts connections but sent nothing within {timeout:g} s"
        except OSError as e:
            return f"it closed the connection ({e.strerror or type(e).__name__})"
    if len(head) == 9 and head[3] == _H2_SETTINGS:
        return None
    if head.startswith(b"HTTP/"):
        return f"an HTTP/1 server answers ({head.decode(errors='replace').split()[0]}), not Ray's gRPC"
    return "it closed the connection without a gRPC handshake" if not head else "it does not speak gRPC"


def check_ray_address(address: Optional[str]) -> None:
    """--address (else $RAY_ADDRESS): well formed, something listens there, and it speaks gRPC as a
    Ray GCS (HOST:PORT) or a Ray client server (ray://) does: a port that accepts TCP but is something
    else made `ray.init` wait for minutes."""
    flag = "--address" if address else "$RAY_ADDRESS"
    address = cluster_address(address)
    if not address or address in ("auto", "local"):
        return
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    target = None if "://" in rest or "/" in rest else _split_host_port(rest)
    if target is None:
        raise ConfigError(f"{flag} {address}: not a Ray address; {RAY_HINT}")
    try:
        other = _speaks_grpc(target)
    except OSError as e:
        raise ConfigError(
            f"{flag} {address}: no Ray cluster answers there ({e.strerror or type(e).__name__}); start one "
            f"(cluster/local-cluster up, or ray start --head) or fix the address"
        ) from None
    if other is not None:
        what = "Ray client server (ray://, port 10001)" if address.startswith("ray://") else "Ray head (GCS, port 6379)"
        raise ConfigError(f"{flag} {address}: not a {what}: {other}; {RAY_HINT}")


def check_tracking_uri(uri: str, flag: str = "--tracking-uri") -> None:
    """A known MLflow store scheme, and for a server: it answers /health."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in TRACKING_SCHEMES:
        raise ConfigError(
            f"{flag} {uri}: not an MLflow tracking URI; use sqlite:///PATH.db or http://HOST:PORT of an "
            f"MLflow server (or postgresql://, mysql://)"
        )
    if scheme == "sqlite":
        check_sqlite_store(uri, flag)
        return
    if scheme not in ("http", "https"):
        _check_database_driver(uri, scheme, flag)
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


# SQLAlchemy's default driver of each database scheme, and the module each named driver needs.
_DEFAULT_DRIVER = {"postgresql": "psycopg2", "mysql": "mysqldb", "mssql": "pyodbc"}
_DRIVER_MODULE = {"psycopg2": "psycopg2", "psycopg": "psycopg", "pg8000": "pg8000", "asyncpg": "asyncpg",
                  "mysqldb": "MySQLdb", "pymysql": "pymysql", "mysqlconnector": "mysql.connector",
                  "pyodbc": "pyodbc", "pymssql": "pymssql"}
_DEFAULT_PORT = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_PIP = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "mysql.connector": "mysql-connector-python"}


def _module_installed(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _check_database_driver(uri: str, scheme: str, flag: str) -> None:
    """A database store (postgresql://, mysql://, mssql://) needs its SQLAlchemy driver installed and a
    server listening; databricks:// needs the Databricks SDK. Otherwise MLflow fails with a traceback
    (or retries for minutes) after the sweep has started."""
    if scheme.startswith("databricks"):
        if not _module_installed("databricks.sdk"):
            raise ConfigError(f"{flag} {uri}: the Databricks SDK is not installed (pip install databricks-sdk)")
        configured = os.environ.get("DATABRICKS_HOST") or os.path.exists(
            os.environ.get("DATABRICKS_CONFIG_FILE") or os.path.expanduser("~/.databrickscfg"))
        if not configured:
            raise ConfigError(f"{flag} {uri}: no Databricks workspace is configured (set DATABRICKS_HOST and "
                              f"DATABRICKS_TOKEN, or write ~/.databrickscfg), or use an MLflow server (http://HOST:PORT)")
        return
    head = uri.split("://", 1)[0].lower()
    driver = head.split("+", 1)[1] if "+" in head else _DEFAULT_DRIVER.get(scheme, "")
    module = _DRIVER_MODULE.get(driver)
    if module is None:
        raise ConfigError(f"{flag} {uri}: unknown database driver {driver!r} for {scheme} "
                          f"(use {scheme}://USER:PASS@HOST:PORT/DB, or {scheme}+DRIVER://...)")
    if not _module_installed(module):
        raise ConfigError(f"{flag} {uri}: the {scheme} driver {module} is not installed "
                          f"(pip install {_PIP.get(module, module)}), or use an MLflow server (http://HOST:PORT)")
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(uri)
        host, port = parts.hostname, parts.port or _DEFAULT_PORT.get(scheme)
    except ValueError:
        raise ConfigError(f"{flag} {uri}: not a database URL ({scheme}://USER:PASS@HOST:PORT/DB)") from None
    if host and port:
        try:
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        except OSError as e:
            raise ConfigError(f"{flag} {uri}: no {scheme} server answers at {host}:{port} "
                              f"({e.strerror or type(e).__name__})") from None


_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_sqlite_store(uri: str, flag: str = "--tracking-uri") -> None:
    """A SQLite store: an SQLite database file (or none yet) in a directory this process can write
    (SQLite writes its journal beside the file). Never creates anything."""
    from . import tracking

    target = tracking.resolve_tracking(uri)
    db = target.sqlite_path
    if db is None:
        return
    where = f"{flag} {uri}"
    if db.is_dir():
        raise ConfigError(f"{where}: {db} is a directory, not an SQLite database file; name a file, e.g. {db}/mlflow.db")
    if db.exists():
        try:
            with open(db, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise ConfigError(f"{where}: cannot read {db} ({e.strerror})") from None
        if head and head != _SQLITE_MAGIC:
            raise ConfigError(f"{where}: {db} is not an SQLite database (an MLflow store); name another file")
        if not os.access(db, os.W_OK):
            raise ConfigError(f"{where}: {db} is not writable")
    parent = db.parent
    if not parent.is_dir():
        raise ConfigError(f"{where}: the directory {parent} does not exist; create it or name another path")
    _check_writable_dir(str(parent), f"{where}: cannot write in {parent}")


def _check_writable_dir(path: str, what: str) -> None:
    """Create and remove a uniquely named directory in `path` (root passes os.access everywhere)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".mixup-sweep-probe-", dir=path))
    except OSError as e:
        raise ConfigError(f"{what} ({e.strerror}); pass a writable directory") from None


def check_storage_path(storage_path: Optional[str]) -> None:
    """A local --storage-path must be a directory this process can create (Ray would fail later, after
    the MLflow runs exist). Probed by creating a uniquely named directory in the deepest existing
    ancestor and removing it: never the path itself, which a sweep started beside this one may be
    creating or filling at this moment (probing the path itself raced with exactly that)."""
    flag = f"--storage-path {storage_path}" if storage_path else None
    if not storage_path and os.environ.get("MIXUP_SWEEP_STORAGE"):
        storage_path = os.environ["MIXUP_SWEEP_STORAGE"]
        flag = f"$MIXUP_SWEEP_STORAGE {storage_path}"
    if storage_path and storage_path.startswith("s3://"):
        check_object_storage(storage_path, flag)
        return
    if storage_path and "://" in storage_path:
        return  # gs://, ...: Ray checks those itself
    path = os.path.abspath(os.path.expanduser(storage_path or "ray_results"))
    flag = flag or f"storage {path}"
    probe = path
    while not os.path.isdir(probe):
        if os.path.lexists(probe) and not os.path.isdir(probe):  # re-checked: it may just have been made
            raise ConfigError(f"{flag}: {probe} is not a directory; pass a writable directory")
        probe = os.path.dirname(probe)
    if probe == path:  # it exists: can this process write in it? (a uniquely named probe, never the path)
        _check_writable_dir(path, f"{flag}: cannot write in {path}")
        return
    _check_writable_dir(probe, f"{flag}: cannot create {path}")


def check_object_storage(uri: str, flag: str) -> None:
    """An s3:// storage path must take a write now, not after Ray and MLflow runs have started: write
    and delete a uniquely named probe object under it (seconds at most: one attempt, short timeouts).
    The endpoint, region and keys are the ones Ray will use (AWS_ENDPOINT_URL, AWS_* or a role)."""
    import uuid

    import pyarrow.fs as pafs

    bucket_and_prefix = uri[len("s3://"):].split("?", 1)[0].rstrip("/")
    bucket = bucket_and_prefix.split("/")[0]
    endpoint = os.environ.get("AWS_ENDPOINT_URL")  # what Ray's pyarrow reads (from_uri); the constructor does not
    where = f" at {endpoint}" if endpoint else ""
    try:
        fs = pafs.S3FileSystem(endpoint_override=endpoint, connect_timeout=3, request_timeout=10,
                               retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1))
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise ConfigError(f"{flag}: cannot write there: the bucket {bucket!r} does not exist{where}")
        probe = f"{bucket_and_prefix}/.mixup-sweep-probe-{uuid.uuid4().hex}"
        with fs.open_output_stream(probe) as out:
            out.write(b"probe")
        fs.delete_file(probe)
    except (OSError, ValueError) as e:
        text = str(e)
        if "NoSuchBucket" in text or "NO_SUCH_BUCKET" in text or "does not exist" in text:
            why = f"the bucket {bucket!r} does not exist{where}"
        elif any(code in text for code in ("ACCESS_DENIED", "AccessDenied", "INVALID_ACCESS_KEY", "SIGNATURE",
                                           "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden")):
            why = f"access denied{where} (check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the role)"
        elif "NETWORK_CONNECTION" in text or "curlCode" in text or "Timeout" in text:
            why = f"cannot reach the S3 endpoint{where or ' (AWS_ENDPOINT_URL unset: AWS itself)'}"
        else:
            why = text.splitlines()[0][:300]
        raise ConfigError(f"{flag}: cannot write there: {why}") from None


def check_trial_data(sweep, address: Optional[str]) -> None:
    """npz data files of the sweep's trials, checked on the driver like mixup-train checks them. On an
    existing cluster (--address) a path missing here may exist on the nodes: only files present here
    are checked then."""
    from .spec import check_validation_split, data_configs

    remote = uses_cluster(address)
    sizes: dict[str, int] = {}
    for point, cfg in data_configs(sweep):
        if cfg.data.name != "npz":
            continue  # the configuration alone says how many examples there are: checked by spec.py
        path = os.path.abspath(os.path.expanduser(cfg.data.root))
        if remote and not os.path.exists(path):
            continue
        if path not in sizes:
            from mixup_core import load_npz_arrays  # numpy and torch: only when a sweep uses npz data

            try:
                sizes[path] = len(load_npz_arrays(path)["y_train"])
            except ConfigError as e:
                raise ConfigError(f"trial.data.root: {e}") from None
        check_validation_split(cfg, sizes[path], point, where=f"data.val_size (with {cfg.data.root})")


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
