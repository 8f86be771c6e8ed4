"""A new SQLite MLflow store is a copy of an empty, migrated template kept in the user's cache
(sweeps/sqlite_template.py): the same store MLflow would have built, without its migrations.
Real MLflow, real files; each test has its own cache directory (XDG_CACHE_HOME)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sweeps import sqlite_template
from sweeps.tracking import client_for

BUILDING = "Creating initial MLflow database tables"  # MLflow's log line when it migrates a new store


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "mixup-sweeps"


REPO = Path(__file__).resolve().parents[1]


def open_store_in_new_process(db: Path, cache_home: Path, umask: int = 0o077, check: bool = True):
    """Open the store as the driver does, in a fresh interpreter (MLflow caches engines per process),
    under `umask`; returns the finished process (its stderr: what MLflow and we logged)."""
    code = "import os, sys; os.umask(int(sys.argv[2], 8)); from sweeps.tracking import client_for; client_for(sys.argv[1])"
    done = subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}", oct(umask)], capture_output=True, text=True,
                          env={"XDG_CACHE_HOME": str(cache_home), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
                          cwd=db.parent, timeout=120)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def schema(db: Path) -> tuple[list, list]:
    with sqlite3.connect(db) as c:
        tables = sorted(c.execute("select type, name, sql from sqlite_master where name not like 'sqlite_%'"))
        version = c.execute("select version_num from alembic_version").fetchall()
    return tables, version


def test_the_first_new_store_is_built_by_mlflow_and_kept_empty_as_the_template(tmp_path, cache):
    client = client_for(f"sqlite:///{tmp_path / 'a.db'}")
    template = sqlite_template.template_path()
    assert template.parent == cache and template.is_file()
    assert template.stat().st_mode & 0o077 == 0  # the user's own
    with sqlite3.connect(template) as c:
        assert c.execute("select count(*) from experiments").fetchone() == (0,)
    assert schema(template) == schema(tmp_path / "a.db")
    assert [e.name for e in client.search_experiments()] == ["Default"]


def test_a_store_from_the_template_is_the_store_mlflow_builds(tmp_path, cache):
    built, copied = tmp_path / "built" / "mlflow.db", tmp_path / "copied" / "mlflow.db"
    built.parent.mkdir()
    copied.parent.mkdir()
    assert BUILDING in open_store_in_new_process(built, cache.parent).stderr  # no template yet: MLflow migrates
    assert BUILDING not in open_store_in_new_process(copied, cache.parent).stderr  # copied: no migration
    assert schema(copied) == schema(built)
    # MLflow made the Default experiment in the copy as in a store it builds (./mlruns of its directory)
    with sqlite3.connect(built) as b, sqlite3.connect(copied) as c:
        query = "select experiment_id, name, artifact_location, lifecycle_stage from experiments"
        (built_row,), (copied_row,) = b.execute(query).fetchall(), c.execute(query).fetchall()
    assert copied_row[:2] == built_row[:2] == (0, "Default")
    assert copied_row[2].startswith(str(copied.parent)) and built_row[2].startswith(str(built.parent))
    # and it works as a store
    client = client_for(f"sqlite:///{copied}")
    eid = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(eid)
    client.log_metric(run.info.run_id, "val_acc", 0.5, step=1)
    assert client.get_metric_history(run.info.run_id, "val_acc")[0].value == 0.5


@pytest.mark.parametrize("damage", ["not a database", "a store with an experiment"])
def test_a_bad_template_is_discarded_and_the_store_built_by_mlflow(tmp_path, cache, damage):
    client_for(f"sqlite:///{tmp_path / 'first.db'}")
    template = sqlite_template.template_path()
    if damage == "not a database":
        template.write_bytes(b"\0garbage" * 1000)
    else:
        with sqlite3.connect(template) as c:
            c.execute("insert into experiments (experiment_id, name, lifecycle_stage) values (7, 'left', 'active')")
    client = client_for(f"sqlite:///{tmp_path / 'second.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    # replaced by a good one, made from the store MLflow has just built
    with sqlite3.connect(template) as c:
        assert c.execute("select count(*) from experiments").fetchone() == (0,)


def test_a_cache_that_cannot_be_written_changes_nothing_but_the_time(tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))  # mkdir under a file fails
    client = client_for(f"sqlite:///{tmp_path / 'a.db'}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert not sqlite_template.template_path().exists()


def test_a_copied_store_has_the_mode_mlflow_gives_a_new_store(tmp_path, cache):
    for name in ("built", "copied"):
        (tmp_path / name).mkdir()
        open_store_in_new_process(tmp_path / name / "mlflow.db", cache.parent, umask=0o027)
    modes = {name: (tmp_path / name / "mlflow.db").stat().st_mode & 0o777 for name in ("built", "copied")}
    assert modes == {"built": 0o640, "copied": 0o640}
    assert sqlite_template.template_path().stat().st_mode & 0o777 == 0o600  # the cache is the user's alone
    # and no trace of the first store's directory in the template
    assert str(tmp_path / "built").encode() not in sqlite_template.template_path().read_bytes()


def test_a_template_mlflow_refuses_is_removed_with_the_store_and_the_next_run_works(tmp_path, cache):
    first = tmp_path / "first" / "mlflow.db"
    first.parent.mkdir()
    open_store_in_new_process(first, cache.parent)
    with sqlite3.connect(sqlite_template.template_path()) as c:  # passes our checks, not MLflow's
        c.execute("update alembic_version set version_num = 'deadbeef0000'")
    second = tmp_path / "second" / "mlflow.db"
    second.parent.mkdir()
    refused = open_store_in_new_process(second, cache.parent, check=False)
    assert refused.returncode != 0 and "run the command again" in refused.stderr
    assert not second.exists() and not sqlite_template.template_path().exists()
    again = open_store_in_new_process(second, cache.parent)
    assert BUILDING in again.stderr and second.is_file() and sqlite_template.template_path().is_file()


def test_new_stores_created_at_once_all_work(tmp_path, cache):
    """Several drivers starting in new directories at once, with no template yet: each store is whole,
    one template is kept."""
    dbs = []
    for i in range(4):
        (tmp_path / str(i)).mkdir()
        dbs.append(tmp_path / str(i) / "mlflow.db")
    code = "import sys; from sweeps.tracking import client_for; client_for(sys.argv[1]).search_experiments()"
    env = {"XDG_CACHE_HOME": str(cache.parent), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}"], env=env, cwd=db.parent,
                              stderr=subprocess.PIPE, text=True) for db in dbs]
    for proc in procs:
        assert proc.wait(timeout=180) == 0, proc.stderr.read()
    for db in dbs:
        with sqlite3.connect(db) as c:
            assert c.execute("select name from experiments").fetchall() == [("Default",)]
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] == [sqlite_template.template_path().name]
