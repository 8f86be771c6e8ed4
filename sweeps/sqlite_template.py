"""A new SQLite MLflow store made by copying an empty, already migrated one.

MLflow builds a new SQLite store by running every schema migration since its first release (about 70
alembic steps: 1 s of the driver's start on 2 cores, every time a sweep starts in a new directory).
The result is always the same file for one MLflow version. So the first new store of a version is
built by MLflow as usual, and a copy of it with its one row of content removed (the Default experiment,
whose artifact location names that store's directory) is kept in the user's cache
(`$XDG_CACHE_HOME/mixup-sweeps`, else `~/.cache/mixup-sweeps`) as the template; every later new store
is a copy of that template. MLflow opens the copy as any store at its schema's head and creates the
Default experiment in it, pointing at the new store's own artifact root.

Everything here only saves time: a cache that cannot be written or read, or a template MLflow does not
accept, means the store is built by MLflow's migrations as before (and a bad template is replaced).
The caller holds the store's lock (tracking._store_lock).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path
from typing import Callable, Optional


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mixup-sweeps"


def template_path() -> Path:
    import mlflow

    return cache_dir() / f"mlflow-{mlflow.__version__}-empty.db"


def _atomic_copy(source: Path, target: Path, edit: Optional[Callable[[sqlite3.Connection], None]] = None) -> None:
    """`source` copied to `target` through SQLite's backup API (a consistent copy even of a database in
    use), `edit` applied to the copy, then renamed into place: `target` is never seen half-written."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        read_only = f"{Path(source).resolve().as_uri()}?mode=ro"  # never creates or writes the source
        with contextlib.closing(sqlite3.connect(read_only, uri=True)) as src, \
                contextlib.closing(sqlite3.connect(tmp)) as dst:
            src.backup(dst)
            if edit is not None:
                edit(dst)
                dst.commit()
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _empty(db: sqlite3.Connection) -> None:
    # A store MLflow has just built holds the Default experiment alone: the rows naming it go.
    db.execute("DELETE FROM experiment_tags")
    db.execute("DELETE FROM experiments")


class _NotATemplate(sqlite3.Error):
    pass


def _check(db: sqlite3.Connection) -> None:
    """The copy is an intact SQLite database with a schema version and no experiment in it."""
    if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
        raise _NotATemplate("damaged")
    if db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] != 1 or \
            db.execute("SELECT count(*) FROM experiments").fetchone()[0] != 0:
        raise _NotATemplate("not an empty MLflow store")


def copy_template(db_path: Path) -> bool:
    """Create the store at `db_path` (which does not exist) from the template; False when there is no
    usable template (the caller lets MLflow build the store)."""
    try:
        template = template_path()
        if not template.is_file():
            return False
        db_path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_copy(template, db_path, _check)
        return True
    except _NotATemplate:
        discard_template()
        return False
    except (OSError, sqlite3.Error):  # sqlite3.DatabaseError: not a database at all
        discard_template()
        return False


def keep_as_template(db_path: Path) -> None:
    """After MLflow built a new store at `db_path` (nothing logged into it yet): keep its empty copy as
    the template, unless one is there already."""
    try:
        template = template_path()
        if template.is_file():
            return
        template.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _atomic_copy(db_path, template, _empty)
    except (OSError, sqlite3.Error):
        pass  # no template: the next new store is built by MLflow again


def discard_template() -> None:
    """A store copied from the template was refused by MLflow (a damaged cache file): remove it."""
    with contextlib.suppress(OSError):
        template_path().unlink()


def remove_store(db_path: Path) -> None:
    with contextlib.suppress(OSError):
        db_path.unlink()
    for suffix in ("-journal", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{db_path}{suffix}").unlink()


