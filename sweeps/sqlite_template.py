"""A new SQLite MLflow store made by copying an empty, already migrated one.

MLflow builds a new SQLite store by running every schema migration since its first release (about 70
alembic steps: about 1 s of a sweep's start on 2 cores, every time a sweep starts in a new directory).
The result is the same file for one set of migrations. So the first new store is built by MLflow as
usual, and a copy of it with its one row of content removed (the Default experiment, whose artifact
location names the directory MLflow was started in) is kept in the user's cache
(`$XDG_CACHE_HOME/mixup-sweeps`, else `~/.cache/mixup-sweeps`) as the template, named by the MLflow
version and a digest of its migration files; every later new store is a copy of that template. MLflow
opens the copy as any store at its schema's head and creates the Default experiment in it, with the
artifact location it gives a store it builds itself.

Everything here only saves time: a cache that cannot be written or read, or a template that fails its
checks, means the store is built by MLflow's migrations as before (and a bad template is replaced).
The caller holds the store's lock (tracking._store_lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Callable


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mixup-sweeps"


def template_path() -> Path:
    """Named by what decides the schema: MLflow's version and its migration scripts."""
    import mlflow

    migrations = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    names = sorted(p.name for p in migrations.glob("*.py")) if migrations.is_dir() else []
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:12]
    return cache_dir() / f"mlflow-{mlflow.__version__}-{digest}-empty.db"


class _NotATemplate(sqlite3.Error):
    pass


def _check(db: sqlite3.Connection) -> None:
    """An intact SQLite database with one schema version and no experiment in it."""
    if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        raise _NotATemplate("damaged")
    if db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] != 1 or \
            db.execute("SELECT count(*) FROM experiments").fetchone()[0] != 0:
        raise _NotATemplate("not an empty MLflow store")


def _empty(db: sqlite3.Connection) -> None:
    # A store MLflow has just built holds the Default experiment alone: the rows naming it go, and
    # VACUUM leaves no trace of them (its artifact path) in the file's free pages.
    db.execute("DELETE FROM experiment_tags")
    db.execute("DELETE FROM experiments")
    db.commit()
    db.execute("VACUUM")


def _copy(source: Path, target: Path, edit: Callable[[sqlite3.Connection], None], mode: int) -> bool:
    """`source` copied through SQLite's backup API (a consistent copy even of a database in use), `edit`
    applied to the copy, which then appears at `target` whole (a hard link: never over a file that is
    there by now, e.g. a store an `mlflow server` created meanwhile). False when `target` exists."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        os.chmod(tmp, mode)
        read_only = f"{source.resolve().as_uri()}?mode=ro"  # never creates or writes the source
        with contextlib.closing(sqlite3.connect(read_only, uri=True)) as src, \
                contextlib.closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)
            edit(dst)
        try:
            os.link(tmp, target)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for an instant in which another
    thread's new file gets mode 0666); where /proc cannot say, the strictest."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o077


def copy_template(db_path: Path) -> bool:
    """Create the store at `db_path` (which does not exist) from the template, with the mode MLflow's
    own file would get (the process's umask: MIXUP_SWEEP_UMASK); False when there is no usable template
    or the file appeared meanwhile (the caller lets MLflow open or build the store)."""
    try:
        template = template_path()
        if not template.is_file():
            return False
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    try:
        return _copy(template, db_path, _check, 0o666 & ~_umask())
    except sqlite3.Error:  # damaged, not a template, not a database at all: never again
        discard_template()
        return False
    except OSError:  # the store's directory, not the template: nothing to hold against it
        return False


def keep_as_template(db_path: Path) -> None:
    """After MLflow built a new store at `db_path` (nothing logged into it yet): keep its empty copy as
    the template (the user's alone), unless one is there already."""
    try:
        template = template_path()
        if template.is_file():
            return
        template.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _copy(db_path, template, _empty, 0o600)
    except (OSError, sqlite3.Error):
        pass  # no template: the next new store is built by MLflow again


def discard_template() -> None:
    with contextlib.suppress(OSError):
        template_path().unlink()


def remove_store(db_path: Path) -> None:
    for path in (db_path, *(Path(f"{db_path}{suffix}") for suffix in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(OSError):
            path.unlink()
