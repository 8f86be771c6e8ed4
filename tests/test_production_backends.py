"""The production topology on loopback: `mixup-sweep cluster up --backend postgres --artifacts s3` (a real
PostgreSQL server for MLflow's store, a real S3 endpoint, SeaweedFS, for MLflow's artifacts and Ray
Tune's storage, a head that runs no trials and two worker nodes that share no disk), one sweep
submitted as a Ray job, and the faults a real cluster has, one after the other while it runs:

  1. the S3 endpoint down for 20 s; 2. the MLflow server restarted; 3. PostgreSQL restarted;
  4. a worker node SIGKILLed mid-trial and its disk wiped (a lost machine): the trial resumes on the
     other node from its S3 checkpoint; the node comes back empty;
  5. a worker node sent SIGTERM (a spot preemption, a KubeRay eviction), its disk wiped too: its trials
     resume elsewhere;
  6. the driver SIGKILLed and the head's local copy of the experiment deleted: `submit --resume`
     continues from the S3 state.

Then: trials ran on at least two nodes; every trial's history in PostgreSQL has one value per epoch;
the checkpoints are in S3 (intact) and on no node's disk, the MLflow artifacts in S3; `best --json`
equals the same sweep on the embedded default (local Ray, SQLite, CPU, same seeds), run beside it.

One cluster and one sweep for the module (~4 min on 2 cores); each property is its own test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest
from sweep_support import TINY_TRIAL, cli_command, kill, tiny_spec, user_env, write_spec
from test_fault_tolerance import comparable
from test_local_cluster import (
    clean_environ, listening_sockets_of, local_cluster, processes_of, read_env_file, session_pids,
)

pytestmark = pytest.mark.cluster

NAME = "prod"
EPOCHS = 36
SEEDS = [0, 1, 2]
STOP_EPOCHS = [3, None]
EPOCH_KEYS = ("train_loss", "val_acc", "test_acc", "mixup_active")
SAVED = ("checkpoint", "branch_point")  # an attempt's `from` when it continued from a saved state


def sweep_spec() -> dict:
    trial = json.loads(json.dumps(TINY_TRIAL))
    trial["data"]["n_train"] = 16000  # ~0.2 s an epoch: the sweep outlasts the faults
    trial["train"]["epochs"] = EPOCHS
    return tiny_spec(NAME, trial=trial, grid={"seed": SEEDS, "mixup.stop_epoch": STOP_EPOCHS},
                     max_concurrent=2, max_failures=30)


@dataclass
class ProdCluster:
    state_dir: Path
    env: dict[str, str]
    up_output: str

    @property
    def state(self) -> dict:
        return json.loads((self.state_dir / "cluster.json").read_text())

    def node_id(self, name: str) -> str:
        return self.state["node_ids"][name]

    def session(self, component: str) -> int:
        return self.state["components"][component]["sid"]


@pytest.fixture(scope="module")
def prod():
    # Short: Ray's Unix sockets live under STATE/ray. Under /tmp: PostgreSQL (run as `postgres` when we
    # are root) must be able to search its way to STATE/postgres.
    state_dir = Path(tempfile.mkdtemp(prefix="mxp-", dir="/tmp"))
    up = local_cluster("up", "--state-dir", str(state_dir), "--workers", "2", "--num-cpus", "1",
                       "--head-cpus", "0", "--backend", "postgres", "--artifacts", "s3")
    state_file = state_dir / "cluster.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"components": {}}
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        yield ProdCluster(state_dir, {**clean_environ(), **read_env_file(state_dir / "env")}, up.stdout + up.stderr)
    finally:
        sessions = {info["sid"] for info in json.loads(state_file.read_text())["components"].values()} \
            if state_file.exists() else {info["sid"] for info in state["components"].values()}
        down = local_cluster("down", "--state-dir", str(state_dir), "--purge", timeout=120)
        left = processes_of(state_dir, sessions)
        assert down.returncode == 0, f"down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, "processes left behind by `down`:\n" + "\n".join(left)
        assert not [p for p in Path("/tmp").glob("seaweedfs-*.sock")
                    if p.name.rsplit("-", 1)[-1].removesuffix(".sock") in {str(v) for v in state.get("ports", {}).values()}]
        shutil.rmtree(state_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# reading the backends directly (not through the MLflow server, which a fault takes away)


def pg_rows(prod: ProdCluster, query: str, *args: Any) -> Optional[list[tuple]]:
    """Rows of a query on the cluster's PostgreSQL, or None while it does not answer."""
    import psycopg2

    uri = prod.env["MLFLOW_BACKEND_STORE_URI"].replace("postgresql+psycopg2://", "postgresql://")
    try:
        with psycopg2.connect(uri, connect_timeout=3) as conn, conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()
    except psycopg2.Error:
        return None


TRIALS_SQL = """
    select r.run_uuid, r.status, coalesce(n.value, ''), coalesce(rt.value, ''), coalesce(max(m.step), 0)
    from runs r
    join experiments e on e.experiment_id = r.experiment_id and e.name = %s
    join tags t on t.run_uuid = r.run_uuid and t.key = 'mixup_sweep.role' and t.value = 'trial'
    left join tags n on n.run_uuid = r.run_uuid and n.key = 'mixup_sweep.node_id'
    left join tags rt on rt.run_uuid = r.run_uuid and rt.key = 'mixup_sweep.ray_trial_id'
    left join metrics m on m.run_uuid = r.run_uuid and m.key = 'train_loss'
    where r.lifecycle_stage = 'active'
    group by r.run_uuid, r.status, n.value, rt.value"""


@dataclass
class TrialRow:
    run_id: str
    status: str
    node_id: str
    ray_trial_id: str
    last_epoch: int


def trials(prod: ProdCluster) -> list[TrialRow]:
    return [TrialRow(*row) for row in (pg_rows(prod, TRIALS_SQL, NAME) or [])]


def s3_client(prod: ProdCluster):
    import boto3

    return boto3.client("s3", endpoint_url=prod.env["AWS_ENDPOINT_URL"], region_name=prod.env["AWS_DEFAULT_REGION"],
                        aws_access_key_id=prod.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=prod.env["AWS_SECRET_ACCESS_KEY"])


def s3_keys(prod: ProdCluster, bucket: str, prefix: str = "") -> list[str]:
    pages = s3_client(prod).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def attempts(prod: ProdCluster, run_id: str) -> list[dict]:
    """The run's mixup_sweep.attempts tag: where each attempt ran and from which epoch it continued."""
    rows = pg_rows(prod, "select value from tags where run_uuid = %s and key = 'mixup_sweep.attempts'", run_id)
    return json.loads(rows[0][0]) if rows else []


# ---------------------------------------------------------------------------------------------
# the scenario


def wait_for(condition, timeout: float, what: str, interval: float = 0.5, driver: Optional["Job"] = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver is not None:
            driver.check_alive()
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Job:
    """A `mixup-sweep submit --follow`: its output is the driver's, its exit code the driver's."""
    proc: subprocess.Popen
    log: Path
    expect_alive: bool = True

    def check_alive(self) -> None:
        if self.expect_alive and self.proc.poll() is not None:
            raise AssertionError(f"the sweep's job ended early ({self.proc.returncode}):\n{self.output()[-5000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def submit(prod: ProdCluster, args: list[str], cwd: Path, log_name: str) -> Job:
    log = cwd / log_name
    proc = subprocess.Popen(cli_command() + ["submit", *args, "--address", prod.env["RAY_DASHBOARD_ADDRESS"],
                                             "--follow"],
                            cwd=cwd, env=prod.env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return Job(proc, log)


def cluster_cmd(prod: ProdCluster, *args: str, timeout: float = 180) -> str:
    done = local_cluster(*args, "--state-dir", str(prod.state_dir), timeout=timeout)
    assert done.returncode == 0, f"cluster {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def lose_node(prod: ProdCluster, name: str, sig: int) -> None:
    """Signal every process of a worker node (SIGKILL: a lost machine; SIGTERM: a preemption, SIGKILL
    after 10 s), then wipe its disk: working dir, HOME, TMPDIR and Ray temp dir."""
    sid = prod.session(f"ray-{name}")
    pids = session_pids({"components": {"n": {"sid": sid}}})
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while session_pids({"components": {"n": {"sid": sid}}}) and time.monotonic() < deadline:
        time.sleep(0.2)
    kill(list(session_pids({"components": {"n": {"sid": sid}}})))
    shutil.rmtree(prod.state_dir / "nodes" / name, ignore_errors=True)
    shutil.rmtree(Path(prod.state["ray_temp_dir"]) / name, ignore_errors=True)


def driver_pids(prod: ProdCluster) -> list[int]:
    """The sweep's driver: the job's entrypoint (`python -m sweeps.cli run|resume ...`), which Ray starts
    in its own session, in a working directory under the head node's Ray temp dir."""
    head = str(Path(prod.state["ray_temp_dir"]) / "head") + "/"
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if b"sweeps.cli" in args and (b"run" in args or b"resume" in args) and (cwd + "/").startswith(head):
            found.append(int(proc.name))
    return found


def mid_trial_on(prod: ProdCluster, node: str, min_epoch: int = 2, before: int = EPOCHS - 8) -> Optional[TrialRow]:
    node_id = prod.node_id(node)
    for row in trials(prod):
        if row.status == "RUNNING" and row.node_id == node_id and min_epoch <= row.last_epoch <= before:
            return row
    return None


def progressed(prod: ProdCluster, since: dict[str, int], by: int = 2) -> bool:
    """Some trial logged `by` more epochs than at `since` (run id -> last epoch), or a new trial did."""
    return any(row.last_epoch >= since.get(row.run_id, 0) + by for row in trials(prod))


def never_sent_back_to_the_start(later: list[dict], logged: int) -> bool:
    """A trial that had logged epoch `logged` >= 3 had epochs 1 and 2 checkpointed in storage (each
    epoch is logged just before its checkpoint is saved), and Ray's driver knew of one of them at least
    (it learns of a checkpoint a moment after the trial saved it; a driver killed and resumed knows
    what its last experiment snapshot held): every later attempt continued from a saved state."""
    return logged < 3 or all(a["from"] in SAVED and a["from_epoch"] >= 1 for a in later)


def epochs_logged_between(prod: ProdCluster, start: float, end: float) -> dict[str, list[int]]:
    """Run id -> the epochs a trial logged between two wall-clock times (MLflow's client-side
    timestamps, same machine)."""
    rows = pg_rows(prod, """
        select m.run_uuid, array_agg(distinct m.step order by m.step) from metrics m
        join runs r on r.run_uuid = m.run_uuid
        join experiments e on e.experiment_id = r.experiment_id and e.name = %s
        where m.key = 'train_loss' and m.timestamp between %s and %s
        group by m.run_uuid""", NAME, int(start * 1000), int(end * 1000))
    assert rows is not None, "PostgreSQL did not answer"
    return {run_id: [int(step) for step in steps] for run_id, steps in rows}


class PortWatch:
    """When a TCP port on 127.0.0.1 stopped and started accepting connections (wall-clock seconds),
    polled while the `with` block runs."""

    def __init__(self, port: int):
        self.port, self.down, self.up = port, None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def __enter__(self) -> "PortWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                if self.down is not None and self.up is None:
                    self.up = time.time()
            except OSError:
                if self.down is None:
                    self.down = time.time()
            time.sleep(0.1)

    def window(self) -> tuple[float, float]:
        assert self.down is not None and self.up is not None, f"port {self.port} never went down and up"
        return self.down, self.up


def snapshot(prod: ProdCluster) -> dict[str, int]:
    return {row.run_id: row.last_epoch for row in trials(prod)}


def dump_ray_state(prod: ProdCluster, path: Path) -> None:
    """Ray's view (nodes, placement groups, actors) when the scenario fails: what a trial waits for."""
    import urllib.request

    token = Path(prod.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    found = {}
    for what in ("nodes", "placement_groups", "actors", "tasks"):
        request = urllib.request.Request(f"{prod.env['RAY_DASHBOARD_ADDRESS']}/api/v0/{what}?limit=200&detail=1")
        request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                found[what] = json.loads(response.read())["data"]["result"]["result"]
        except OSError as e:
            found[what] = str(e)
    path.write_text(json.dumps(found, indent=1, default=str))
    print(f"Ray's state written to {path}")


@dataclass
class Scenario:
    events: dict[str, Any] = field(default_factory=dict)
    best_cluster: str = ""
    best_reference: str = ""
    final_output: str = ""


@pytest.fixture(scope="module")
def scenario(prod: ProdCluster, tmp_path_factory) -> Scenario:
    work = tmp_path_factory.mktemp("prod")
    write_spec(work, sweep_spec())
    seen = Scenario()
    ev = seen.events
    t0 = time.monotonic()
    ev["timeline"] = []

    def mark(what: str) -> None:
        ev["timeline"].append((what, round(time.monotonic() - t0, 1)))

    # The same sweep on the embedded default (local Ray, SQLite, local storage), beside the cluster's.
    ref_dir = tmp_path_factory.mktemp("embedded")
    write_spec(ref_dir, sweep_spec())
    reference = subprocess.Popen(cli_command() + ["run", "spec.yaml"], cwd=ref_dir, env=user_env(),
                                 stdout=(ref_dir / "run.log").open("w"), stderr=subprocess.STDOUT)
    job = submit(prod, ["spec.yaml"], work, "submit.log")
    try:
        # 1-3. the S3 endpoint away for 20 s, then the MLflow server, then PostgreSQL restarted
        wait_for(lambda: [r for r in trials(prod) if r.status == "RUNNING" and r.last_epoch >= 2], 240,
                 "trials training", driver=job)
        for component, down_for in (("s3", 20), ("mlflow", 5), ("postgres", 5)):
            # a trial well past its first checkpoint (see never_sent_back_to_the_start)
            running = [r.run_id for r in wait_for(
                lambda: [r for r in trials(prod) if r.status == "RUNNING"] if any(
                    r.status == "RUNNING" and 3 <= r.last_epoch <= EPOCHS - 12 for r in trials(prod)) else [],
                120, f"a trial in training before {component} goes", driver=job)]
            at = snapshot(prod)
            before = {run_id: len(attempts(prod, run_id)) for run_id in running}
            started = time.monotonic()
            with PortWatch(prod.state["ports"][component]) as watch:
                cluster_cmd(prod, "restart", component, "--down-for", str(down_for), timeout=240)
            mark(component)
            ev[component] = {"down_s": round(time.monotonic() - started, 1), "before": at, "running": running,
                             "attempts": before, "window": watch.window()}
            wait_for(lambda: progressed(prod, at), 300, f"training after {component} came back", driver=job)
            ev[component]["after"] = {run_id: len(attempts(prod, run_id)) for run_id in running}

        # 4. a worker node lost mid-trial, with its disk; 5. one preempted (SIGTERM), with its disk.
        # Each trial resumes on the other node; the lost one comes back as a new, empty machine.
        for event, lost, other, sig in (("lost_node", "worker_1", "worker_2", signal.SIGKILL),
                                        ("preempted_node", "worker_2", "worker_1", signal.SIGTERM)):
            victim = wait_for(lambda: mid_trial_on(prod, lost), 240, f"a trial mid-way on {lost}", driver=job)
            lose_node(prod, lost, sig)
            mark(f"{lost} {event}")
            ev[event] = {"run_id": victim.run_id, "node_id": victim.node_id, "epoch": victim.last_epoch}
            wait_for(lambda: any(r.run_id == victim.run_id and r.node_id == prod.node_id(other)
                                 and r.last_epoch > victim.last_epoch for r in trials(prod)),
                     240, f"{lost}'s trial resumed on {other}", driver=job)
            cluster_cmd(prod, "restart", lost)

        # 6. the driver killed; the head's local copy of the experiment deleted; resumed from S3
        wait_for(lambda: [r for r in trials(prod) if r.status == "RUNNING" and r.last_epoch >= 3], 120,
                 "a running trial before the driver is killed", driver=job)
        pids = wait_for(lambda: driver_pids(prod), 30, "the driver process")
        # What each trial had done when the driver died (taken first: killed trials are no longer RUNNING).
        ev["driver_killed"] = {"attempts": {r.run_id: (r.status, len(attempts(prod, r.run_id)), r.last_epoch)
                                            for r in trials(prod)}}
        kill(pids)
        mark("driver killed")
        job.expect_alive = False
        assert job.proc.wait(timeout=120) != 0, job.output()[-3000:]
        for staged in Path(prod.state["ray_temp_dir"], "head").glob("session_*/artifacts"):
            shutil.rmtree(staged, ignore_errors=True)  # the driver's local staging of the experiment
        job = submit(prod, ["--resume", NAME], work, "resume.log")
        at = snapshot(prod)
        wait_for(lambda: progressed(prod, at), 240, "the resumed sweep training again", driver=job)


        mark("waiting for the end")
        rc = job.proc.wait(timeout=600)
        mark("sweep done")
        seen.final_output = job.output()
        assert rc == 0, seen.final_output[-6000:]
    except BaseException:
        dump_ray_state(prod, work / "ray_state.json")
        raise
    finally:
        for proc in (job.proc,):
            if proc.poll() is None:
                proc.kill()
    assert reference.wait(timeout=600) == 0, (ref_dir / "run.log").read_text()[-4000:]
    best = subprocess.run(cli_command() + ["best", NAME, "--json"], cwd=work, env=prod.env, capture_output=True,
                          text=True, timeout=300)
    assert best.returncode == 0, best.stderr[-3000:]
    ref = subprocess.run(cli_command() + ["best", NAME, "--json"], cwd=ref_dir, env=user_env(),
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    seen.best_cluster, seen.best_reference = best.stdout, ref.stdout
    (work / "best.json").write_text(best.stdout)
    mark("best")
    print("timeline:", ev["timeline"])
    (ref_dir / "best.json").write_text(ref.stdout)
    return seen


# ---------------------------------------------------------------------------------------------
# what the cluster itself promises


def test_credentials_are_generated_private_and_never_printed(prod: ProdCluster):
    secrets = json.loads((prod.state_dir / "secrets.json").read_text())
    for path in (prod.state_dir / "env", prod.state_dir / "secrets.json", prod.state_dir / "auth_token"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    for value in secrets.values():
        assert value not in prod.up_output
        assert value in (prod.state_dir / "env").read_text()
    status = cluster_cmd(prod, "status")
    assert not [v for v in secrets.values() if v in status]
    # The S3 endpoint checks signatures: other keys are refused, the cluster's accepted.
    import boto3
    from botocore.exceptions import ClientError

    stranger = boto3.client("s3", endpoint_url=prod.env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                            aws_access_key_id="AKIAIOSFODNN7EXAMPLE", aws_secret_access_key="wrong" * 8)
    with pytest.raises(ClientError):
        stranger.list_objects_v2(Bucket="ray-results")
    assert {b["Name"] for b in s3_client(prod).list_buckets()["Buckets"]} >= {"mlflow", "ray-results"}
    # PostgreSQL checks the password.
    import psycopg2

    wrong = prod.env["MLFLOW_BACKEND_STORE_URI"].replace(secrets["postgres_password"], "not-the-password")
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(wrong.replace("postgresql+psycopg2://", "postgresql://"), connect_timeout=3)
    # Every server of the cluster listens on 127.0.0.1 only.
    pids = session_pids(prod.state)
    listening = listening_sockets_of(pids)
    ports = {port for _, port in listening}
    state = prod.state
    assert {state["ports"][k] for k in ("postgres", "s3", "mlflow", "dashboard", "gcs")} <= ports
    outside = [(ip, port) for ip, port in listening if ip not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not outside, f"listening beyond 127.0.0.1: {outside}"


# ---------------------------------------------------------------------------------------------
# what the sweep on it shows


def test_trials_ran_on_two_nodes_that_share_no_disk(prod: ProdCluster, scenario: Scenario):
    nodes = {r.node_id for r in trials(prod)}
    assert len(nodes) >= 2, nodes
    assert prod.node_id("head") not in nodes  # --head-cpus 0: the head runs the driver only
    for name in ("head", "worker_1", "worker_2"):
        assert (prod.state_dir / "nodes" / name / "work").is_dir()
    # No checkpoint on any node's disk: they are in S3. The experiment's state exists locally only as
    # the live driver's staging copy on the head (Ray uploads it from there), which the scenario deleted
    # before `resume` read the state back from S3.
    checkpoints = [p for p in prod.state_dir.rglob("checkpoint_0*")]
    assert not checkpoints, checkpoints[:5]
    states = [p for p in prod.state_dir.rglob("experiment_state-*")]
    head = Path(prod.state["ray_temp_dir"]) / "head"
    assert all(p.is_relative_to(head) and p.parent.name == "driver_artifacts" for p in states), states


def test_every_trial_history_in_postgres_has_one_value_per_epoch(prod: ProdCluster, scenario: Scenario):
    rows = trials(prod)
    assert len(rows) == len(SEEDS) * len(STOP_EPOCHS)
    assert {r.status for r in rows} == {"FINISHED"}
    counts = pg_rows(prod, """
        select m.run_uuid, m.key, count(*), count(distinct m.step), min(m.step), max(m.step)
        from metrics m join runs r on r.run_uuid = m.run_uuid
        join experiments e on e.experiment_id = r.experiment_id and e.name = %s
        where m.key = any(%s) group by m.run_uuid, m.key""", NAME, list(EPOCH_KEYS))
    assert counts is not None
    by_run: dict[str, set[str]] = {}
    for run_id, key, n, distinct, first, last in counts:
        assert (n, distinct, first, last) == (EPOCHS, EPOCHS, 1, EPOCHS), (run_id, key, n, distinct, first, last)
        by_run.setdefault(run_id, set()).add(key)
    assert by_run == {r.run_id: set(EPOCH_KEYS) for r in rows}


def test_checkpoints_and_artifacts_are_in_s3_and_intact(prod: ProdCluster, scenario: Scenario):
    from mixup_core import verify_checkpoint

    keys = s3_keys(prod, "ray-results", f"sweeps/{NAME}/")
    assert any(k.startswith(f"sweeps/{NAME}/experiment_state-") for k in keys)
    checkpoints = sorted({k.rsplit("/", 1)[0] for k in keys if "/checkpoint_0" in k and not k.endswith("/")})
    assert checkpoints
    # Every checkpoint Ray recorded is complete: never a silently missing or partial one (the S3 outage).
    with tempfile.TemporaryDirectory() as tmp:
        for prefix in checkpoints:
            target = Path(tmp) / prefix
            target.mkdir(parents=True)
            for key in [k for k in keys if k.startswith(prefix + "/") and not k.endswith("/")]:
                s3_client(prod).download_file("ray-results", key, str(target / key[len(prefix) + 1:]))
            verify_checkpoint(target)
    # Each trial's MLflow artifacts (and the parent's selection) through the server into the bucket.
    artifacts = s3_keys(prod, "mlflow")
    for row in trials(prod):
        mine = [k for k in artifacts if f"/{row.run_id}/artifacts/" in k]
        names = {k.split("/artifacts/", 1)[1] for k in mine}
        assert {"config.yaml", "metrics.jsonl", "summary.json", "checkpoint/state.pt"} <= names, (row.run_id, names)
    assert any(k.endswith("/artifacts/selection/selection.json") for k in artifacts)


def test_best_equals_the_same_sweep_on_the_embedded_default(scenario: Scenario):
    cluster, embedded = comparable(scenario.best_cluster), comparable(scenario.best_reference)
    # data.root is where each side's data lives, not a training parameter: the embedded sweep's is its
    # driver's directory, the cluster's each trial's own node (~/data: the nodes share no disk).
    assert cluster["fixed_params"].pop("data.root") == "~/data"
    assert embedded["fixed_params"].pop("data.root").endswith("/data")
    differ = {k: (cluster.get(k), embedded.get(k)) for k in cluster.keys() | embedded.keys()
              if cluster.get(k) != embedded.get(k)}
    assert not differ, json.dumps(differ, indent=1, default=str)[:4000]


def assert_resumed_elsewhere(prod: ProdCluster, fault: dict, lost_node: str) -> None:
    """The attempt after the fault ran on another node and continued from a checkpoint (an epoch > 0,
    at most the epoch logged when the node went), downloaded from S3: the lost node's disk was wiped."""
    tried = attempts(prod, fault["run_id"])
    on_lost = [i for i, a in enumerate(tried) if a["node_id"] == lost_node]
    assert on_lost, tried
    after = tried[on_lost[-1] + 1:]
    assert after, f"no attempt after the node was lost: {tried}"
    nxt = after[0]
    assert nxt["node_id"] != lost_node and nxt["from"] in SAVED, tried
    assert 1 <= nxt["from_epoch"] <= fault["epoch"] + 1, (fault, tried)


def test_a_lost_worker_nodes_trial_resumed_elsewhere_from_its_s3_checkpoint(prod: ProdCluster, scenario: Scenario):
    fault = scenario.events["lost_node"]
    assert_resumed_elsewhere(prod, fault, fault["node_id"])


def test_a_preempted_nodes_trial_resumed_elsewhere(prod: ProdCluster, scenario: Scenario):
    fault = scenario.events["preempted_node"]
    assert_resumed_elsewhere(prod, fault, fault["node_id"])


def test_a_killed_driver_resumed_from_the_s3_state(prod: ProdCluster, scenario: Scenario):
    """`submit --resume` continued the same sweep (one parent run) from S3. It resumes from the driver's
    last experiment snapshot, so a trial that had finished after that snapshot (it was FINISHED in
    MLflow, Ray's snapshot still had it running) runs again from its newest checkpoint in the snapshot:
    never from the start, and none of its epochs is logged twice (the history test). Trials that were
    training continued from a checkpoint."""
    parents = pg_rows(prod, """select count(*) from runs r join experiments e on e.experiment_id = r.experiment_id
                               join tags t on t.run_uuid = r.run_uuid and t.key = 'mixup_sweep.role'
                               where e.name = %s and t.value = 'sweep'""", NAME)
    assert parents == [(1,)]
    at_kill = scenario.events["driver_killed"]["attempts"]
    finished = {run_id: n for run_id, (status, n, _) in at_kill.items() if status == "FINISHED"}
    interrupted = [run_id for run_id, (status, _, epoch) in at_kill.items() if status == "RUNNING" and epoch >= 3]
    assert interrupted, at_kill
    for run_id, n in finished.items():
        later = attempts(prod, run_id)[n:]
        assert all(a["from"] in SAVED and a["from_epoch"] >= 1 for a in later), (run_id, later)
    for run_id in interrupted:
        later = attempts(prod, run_id)[at_kill[run_id][1]:]
        assert later and never_sent_back_to_the_start(later, at_kill[run_id][2]), (run_id, later)


def test_the_s3_outage_stalled_trials_at_their_checkpoint_and_lost_nothing(prod: ProdCluster, scenario: Scenario):
    """With S3 away for 20 s no trial can save a checkpoint (one every epoch here). A trial past its
    first checkpoint gets at most one epoch further, the one whose checkpoint it was saving: Ray either
    retries the upload until S3 is back or fails the trial, which then continues from the last checkpoint
    that was saved, never from scratch. Either way no checkpoint goes silently missing (the checksum test)
    and no epoch is lost or logged twice (the history test)."""
    outage = scenario.events["s3"]
    down, up = outage["window"]
    assert up - down >= 19, outage["window"]
    in_outage = epochs_logged_between(prod, down, up)
    saved = [run_id for run_id in outage["running"] if outage["before"].get(run_id, 0) >= 3]
    assert saved, f"no trial past its first checkpoint was training when S3 went: {outage}"
    for run_id in saved:
        assert len(in_outage.get(run_id, ())) <= 1, (f"{run_id} trained past a checkpoint S3 could not take: "
                                                     f"epochs {in_outage[run_id]} logged while it was down")
    for run_id, before in outage["attempts"].items():
        later = attempts(prod, run_id)[before:]
        assert never_sent_back_to_the_start(later, outage["before"].get(run_id, 0)), (run_id, later)


@pytest.mark.parametrize("component", ["mlflow", "postgres"])
def test_tracking_outages_never_send_a_trial_back_to_the_start(prod: ProdCluster, scenario: Scenario,
                                                               component: str):
    """MLflow's HTTP retries carry most trials over a restart of the server or of its database; one that
    failed meanwhile continued from its checkpoint, never from epoch 0 (and no epoch was lost or logged
    twice: the history test)."""
    outage = scenario.events[component]
    assert outage["running"]
    for run_id, before in outage["attempts"].items():
        later = attempts(prod, run_id)[before:outage["after"][run_id]]
        assert never_sent_back_to_the_start(later, outage["before"].get(run_id, 0)), (run_id, later)


def test_an_s3_storage_path_that_cannot_take_a_write_is_refused_before_anything_starts(prod: ProdCluster,
                                                                                        tmp_path: Path):
    from mlflow import MlflowClient

    closed = subprocess.run(["python3", "-c", "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); "
                             "print(s.getsockname()[1])"], capture_output=True, text=True).stdout.strip()
    cases = [
        # (AWS answers HeadBucket 404: "the bucket ... does not exist"; SeaweedFS fails the write instead)
        ({}, "s3://no-such-bucket/sweeps", "'no-such-bucket'"),
        ({"AWS_SECRET_ACCESS_KEY": "not-the-key"}, prod.env["MIXUP_SWEEP_STORAGE"], "access denied"),
        ({"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}, prod.env["MIXUP_SWEEP_STORAGE"],
         "cannot reach the S3 endpoint"),
    ]
    for extra, storage, message in cases:
        done = subprocess.run(cli_command() + ["run", "quickstart", "--storage-path", storage,
                                               "--set", "name=refused_storage"],
                              cwd=tmp_path, env={**prod.env, **extra}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (extra, done.stdout[-2000:], done.stderr[-2000:])
        assert "cannot write there" in done.stderr and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert MlflowClient(prod.env["MLFLOW_TRACKING_URI"]).get_experiment_by_name("refused_storage") is None
    assert not s3_keys(prod, "ray-results", "sweeps/refused_storage")
