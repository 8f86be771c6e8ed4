"""`mixup-sweep cluster` end to end: a Ray head and a worker node as separate `ray start` processes plus
an MLflow server, all on 127.0.0.1 with Ray token authentication on; a small sweep submitted to it
both ways (`mixup-sweep run --address` and `ray job submit`); trials spread over both nodes, their
runs and artifacts on the MLflow server; `down` leaves no process behind.

One cluster for the module (starting one costs ~30 s on 2 cores).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[1]
LOCAL_CLUSTER = REPO / "cluster" / "local-cluster"  # the old path: a wrapper of `mixup-sweep cluster`
BIN = Path(sys.executable).parent
# A sweep small enough for 2 cores: 4 trials x 3 epochs, 1 CPU each, 2 at a time (one per node).
SMALL_SWEEP = [
    "--set", "train.epochs=3",
    "--set", "data.n_train=200",
    "--set", "data.n_test=400",
    "--set", "grid.seed=[0,1]",
    "--set", "grid.mixup.stop_epoch=[0,null]",
    "--set", "resources.cpu=1",
    "--set", "max_concurrent=2",
]


@dataclass
class Cluster:
    state_dir: Path
    state: dict
    env: dict[str, str]  # the client environment from STATE/env, over a clean os.environ

    @property
    def tracking_uri(self) -> str:
        return self.env["MLFLOW_TRACKING_URI"]

    @property
    def node_ids(self) -> dict[str, str]:
        return self.state["node_ids"]


def clean_environ() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            values[key] = value
    return values


def local_cluster(*args: str, timeout: float = 300, wrapper: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, str(LOCAL_CLUSTER)] if wrapper else [str(BIN / "mixup-sweep"), "cluster"]
    return subprocess.run([*command, *args], env=clean_environ(), capture_output=True, text=True, timeout=timeout)


def process_table() -> list[str]:
    """`ps -eo pid,sid,stat,args` lines; read from /proc where procps is not installed."""
    if shutil.which("ps"):
        ps = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True, check=True)
        return ps.stdout.splitlines()
    lines = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        lines.append(f"{proc.name} {fields[3]} {fields[0]} {args}")
    return lines


def processes_of(state_dir: Path, sessions: set[int]) -> list[str]:
    """Live processes in the cluster's sessions or naming its state dir (Ray's temp dir is inside)."""
    marks = [str(state_dir) + "/"]
    left = []
    for line in process_table():
        pid, sid, stat, args = (line.split(None, 3) + [""])[:4]
        if stat.startswith("Z") or int(pid) == os.getpid():
            continue  # a zombie is already dead; only its parent can reap it
        if int(sid) in sessions or any(m in args for m in marks):
            left.append(line.strip())
    return left


@pytest.fixture(scope="module")
def cluster():
    # A short state dir: Ray keeps Unix sockets under its temp dir (STATE/ray), limited to 107 bytes.
    state_dir = Path(tempfile.mkdtemp(prefix="mxc-", dir="/tmp"))
    up = local_cluster("up", "--state-dir", str(state_dir), "--workers", "1", "--num-cpus", "1")
    state_file = state_dir / "cluster.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {"components": {}}
    sessions = {info["sid"] for info in state["components"].values()}
    try:
        assert up.returncode == 0, f"up failed:\n{up.stdout}\n{up.stderr}"
        yield Cluster(state_dir, state, {**clean_environ(), **read_env_file(state_dir / "env")})
    finally:
        down = local_cluster("down", "--state-dir", str(state_dir), timeout=120)
        left = processes_of(state_dir, sessions)
        assert down.returncode == 0, f"down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, "processes left behind by `down`:\n" + "\n".join(left)
        assert not (state_dir / "cluster.json").exists()
        shutil.rmtree(state_dir, ignore_errors=True)


def dashboard_get(cluster: Cluster, path: str, token: str | None) -> tuple[int, dict | None]:
    request = urllib.request.Request(cluster.env["RAY_DASHBOARD_ADDRESS"] + path)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, None


def listening_sockets_of(pids: set[int]) -> list[tuple[str, int]]:
    """(local address, port) of every TCP socket in LISTEN state owned by one of `pids` (from /proc)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            if len(raw) == 4:
                ip = ".".join(str(b) for b in raw[::-1])
            else:  # IPv6: four little-endian 32-bit words; ::ffff:a.b.c.d is IPv4-mapped
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                ip = ("::ffff:" + ".".join(str(b) for b in words[12:])) if words[:12] == bytes(10) + b"\xff\xff" \
                    else words.hex()
            found.append((ip, int(hex_port, 16)))
    return found


def session_pids(state: dict) -> set[int]:
    sessions = {info["sid"] for info in state["components"].values()}
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[3]) in sessions:
            pids.add(int(stat.parent.name))
    return pids


def test_cluster_is_up_on_loopback_with_token_auth(cluster: Cluster):
    status = local_cluster("status", "--state-dir", str(cluster.state_dir))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "ray nodes alive  2 of 2" in status.stdout
    assert "mlflow server    healthy" in status.stdout
    assert set(cluster.node_ids) == {"head", "worker_1"}
    assert len(set(cluster.node_ids.values())) == 2

    # A second `up` on the same state dir refuses and starts nothing.
    again = local_cluster("up", "--state-dir", str(cluster.state_dir))
    assert again.returncode == 1 and "already up" in again.stderr

    # Token authentication is on: the dashboard API refuses a request without the token.
    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    assert cluster.env["RAY_AUTH_MODE"] == "token"
    assert dashboard_get(cluster, "/api/v0/nodes", None)[0] == 401
    assert dashboard_get(cluster, "/api/v0/nodes", "not-the-token")[0] == 403
    code, body = dashboard_get(cluster, "/api/v0/nodes", token)
    assert code == 200
    nodes = body["data"]["result"]["result"]
    assert {n["node_ip"] for n in nodes} == {"127.0.0.1"}

    # Every server of the cluster listens on loopback only.
    sockets = listening_sockets_of(session_pids(cluster.state))
    assert len(sockets) >= 10, sockets  # GCS, 2 raylets, agents, dashboard, MLflow, ...
    outside = [(ip, port) for ip, port in sockets if ip not in ("127.0.0.1", "::ffff:127.0.0.1")]
    assert not outside, f"listening beyond 127.0.0.1: {outside}"


def trial_runs(tracking_uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} on {tracking_uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("mixup_sweep.role") == "sweep"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    return client, parents[0], children


def test_sweep_spreads_over_both_nodes_and_logs_to_the_server(cluster: Cluster, tmp_path: Path):
    # Run from an empty directory: nothing may land beside the client (no mlflow.db, no mlartifacts).
    storage = cluster.state_dir / "ray_results"  # one disk for all nodes here; a URI or NFS on real clusters
    result = subprocess.run(
        [str(BIN / "mixup-sweep"), "run", "quickstart",
         "--address", cluster.env["RAY_ADDRESS"], "--tracking-uri", cluster.tracking_uri,
         "--storage-path", str(storage), "--set", "name=cluster_cli", *SMALL_SWEEP],
        cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    client, parent, children = trial_runs(cluster.tracking_uri, "cluster_cli")
    assert len(children) == 4
    assert {c.info.status for c in children} == {"FINISHED"}

    # Placement, as Ray recorded it: the trial actors ran on both nodes.
    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    code, body = dashboard_get(cluster, "/api/v0/actors?limit=1000&detail=1", token)
    assert code == 200
    actors = body["data"]["result"]["result"]
    # Tune's function-trainable actor: "ImplicitFunc", or qualified ("wrap_function.<locals>.ImplicitFunc").
    trial_nodes = {a["node_id"] for a in actors if a["class_name"].rsplit(".", 1)[-1] == "ImplicitFunc"}
    assert trial_nodes == set(cluster.node_ids.values()), [(a["class_name"], a["state"], a["node_id"][:8]) for a in actors]

    # ... and as each child run records it (tag set by the trainable from Ray's runtime context).
    run_nodes = [c.data.tags.get("mixup_sweep.node_id") for c in children]
    assert None not in run_nodes, "child runs lack the tag mixup_sweep.node_id"
    assert set(run_nodes) <= set(cluster.node_ids.values())
    assert len(set(run_nodes)) == 2, f"all trials ran on one node: {run_nodes}"

    # Artifacts went through the server (mlflow-artifacts:/ URIs) into its artifact store, and come
    # back through the client.
    artifact_store = Path(cluster.state["mlflow_dir"]) / "artifacts"
    for child in children:
        assert child.info.artifact_uri.startswith("mlflow-artifacts:/")
        local = Path(client.download_artifacts(child.info.run_id, "summary.json", str(tmp_path / child.info.run_id)))
        summary = json.loads(local.read_text())
        assert summary["epochs"] == 3 and summary["status"] == "finished"
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"summary.json", "metrics.jsonl", "config.yaml"} <= names
        assert list(artifact_store.rglob(f"{child.info.run_id}/artifacts/summary.json"))
        history = client.get_metric_history(child.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == [1, 2, 3]


def test_ray_job_submit_runs_a_sweep_on_the_cluster(cluster: Cluster, tmp_path: Path):
    storage = cluster.state_dir / "ray_results"
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": cluster.tracking_uri}}
    entrypoint = ["mixup-sweep", "run", "quickstart", "--storage-path", str(storage),
                  "--set", "name=cluster_job", *[{"grid.seed=[0,1]": "grid.seed=[0]"}.get(a, a) for a in SMALL_SWEEP]]
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", cluster.env["RAY_DASHBOARD_ADDRESS"],
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint],
        cwd=tmp_path, env=cluster.env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout + result.stderr

    _, _, children = trial_runs(cluster.tracking_uri, "cluster_job")
    assert len(children) == 2
    assert {c.info.status for c in children} == {"FINISHED"}


def test_down_and_status_without_a_cluster(tmp_path: Path):
    status = local_cluster("status", "--state-dir", str(tmp_path))
    assert status.returncode == 3 and "down" in status.stdout
    old_path = local_cluster("status", "--state-dir", str(tmp_path), wrapper=True)
    assert old_path.returncode == 3 and "down" in old_path.stdout
    down = local_cluster("down", "--state-dir", str(tmp_path))
    assert down.returncode == 0 and "nothing to stop" in down.stdout


# ---------------------------------------------------------------------------------------------
# The cluster user's commands: submit, status, stop, resume, list


def sweep_cli(cluster: Cluster, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "mixup-sweep"), *args], cwd=cwd, env=cluster.env, capture_output=True,
                          text=True, timeout=timeout)


def status_json(cluster: Cluster, name: str, cwd: Path) -> dict:
    proc = sweep_cli(cluster, "status", name, "--json", "--tracking-uri", cluster.tracking_uri, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_for(predicate, what: str, timeout_s: float):
    from sweep_support import wait_for as wait

    return wait(predicate, timeout=timeout_s, what=what, interval=1.0)


def job_ids(cluster: Cluster) -> set[str]:
    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    code, body = dashboard_get(cluster, "/api/jobs/", token)
    assert code == 200
    return {j.get("submission_id") or j.get("job_id") for j in body}


def test_submit_status_stop_resume_list(cluster: Cluster, tmp_path: Path):
    name = "cluster_submit"
    storage = str(cluster.state_dir / "ray_results")
    flags = ["--tracking-uri", cluster.tracking_uri]
    # 2 seeds x (stop 0, never) x 100 epochs of 10,000 examples: long enough to be seen running and stopped.
    submitted = sweep_cli(cluster, "submit", "quickstart", "--address", cluster.env["RAY_DASHBOARD_ADDRESS"],
                          *flags, "--storage-path", storage, "--set", f"name={name}",
                          *[{"train.epochs=3": "train.epochs=100", "data.n_train=200": "data.n_train=10000"}.get(a, a)
                            for a in SMALL_SWEEP], cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    assert "Ray job mixup-sweep-cluster_submit-" in submitted.stdout
    assert f"mixup-sweep status {name}" in submitted.stdout

    running = wait_for(lambda: (lambda s: s if s.get("state") == "running" and s["trials_running"] > 0
                                and 0 < s["progress"] < 0.5 else None)(
        _status_or_empty(cluster, name, tmp_path)), "the sweep to run with progress", 240)
    assert running["job"]["id"].startswith("mixup-sweep-cluster_submit-")
    assert running["job"]["status"] == "RUNNING"
    assert running["trials_total"] == 4 and running["epochs_total"] == 400

    stopped = sweep_cli(cluster, "stop", name, *flags, cwd=tmp_path)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    interrupted = wait_for(lambda: (lambda s: s if s["state"] == "interrupted" and s["job"]["status"] == "STOPPED"
                                    else None)(status_json(cluster, name, tmp_path)), "the sweep and its job to stop", 120)
    assert interrupted["trials_finished"] < 4 and interrupted["trials_running"] == 0

    resumed = sweep_cli(cluster, "submit", "--resume", name, "--address", cluster.env["RAY_DASHBOARD_ADDRESS"],
                        *flags, "--storage-path", storage, "--follow", cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-3000:]
    final = status_json(cluster, name, tmp_path)
    assert final["state"] == "finished" and final["trials_finished"] == 4 and final["progress"] == 1.0

    client, _, children = trial_runs(cluster.tracking_uri, name)
    assert len(children) == 4
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert sorted(steps) == list(range(1, 101)), (child.info.run_name, sorted(steps))

    listed = sweep_cli(cluster, "list", "--json", *flags, cwd=tmp_path)
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows[name]["state"] == "finished" and rows[name]["trials_total"] == 4
    logs = sweep_cli(cluster, "logs", name, *flags, cwd=tmp_path)
    assert logs.returncode == 0 and f"sweep {name!r}: 4 trial(s) finished" in logs.stdout, logs.stdout[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing left beside the client


def _status_or_empty(cluster: Cluster, name: str, cwd: Path) -> dict:
    proc = sweep_cli(cluster, "status", name, "--json", "--tracking-uri", cluster.tracking_uri, cwd=cwd)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}  # the driver may not have started yet


def test_submit_refuses_bad_input_before_any_job_exists(cluster: Cluster, tmp_path: Path):
    before = job_ids(cluster)
    storage = str(cluster.state_dir / "ray_results")
    good = ["--address", cluster.env["RAY_DASHBOARD_ADDRESS"], "--tracking-uri", cluster.tracking_uri,
            "--storage-path", storage]
    (tmp_path / "bad.yaml").write_text("name: bad\ntrial: {mixup: {alpha: -1}}\n")
    no_token = {k: v for k, v in cluster.env.items() if k not in ("RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")}
    wrong_token = tmp_path.parent / f"{tmp_path.name}-wrong-token"
    wrong_token.write_text("0" * 64)
    cases = {
        "bad spec": (["submit", str(tmp_path / "bad.yaml"), *good], cluster.env, "mixup.alpha"),
        "unknown spec": (["submit", "no_such_spec", *good], cluster.env, "bundled"),
        "unreachable address": (["submit", "quickstart", *good, "--address", "http://127.0.0.1:1"], cluster.env,
                                "no Ray dashboard answers"),
        "not a Ray address (the MLflow server)": (["submit", "quickstart", *good, "--address", cluster.tracking_uri],
                                                  cluster.env, "not a Ray dashboard"),
        "the GCS port, not the dashboard": (["submit", "quickstart", *good, "--address", cluster.env["RAY_ADDRESS"]],
                                            cluster.env, "not an http(s):// address"),
        "missing token": (["submit", "quickstart", *good], no_token, "token"),
        "wrong token": (["submit", "quickstart", *good], {**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong_token)},
                        "token"),
        "no storage path": (["submit", "quickstart", *good[:4]], cluster.env, "--storage-path"),
        "relative storage path": (["submit", "quickstart", *good[:4], "--storage-path", "results"], cluster.env,
                                  "relative"),
    }
    for what, (args, env, says) in cases.items():
        proc = subprocess.run([str(BIN / "mixup-sweep"), *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)
        lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("note:")]
        assert proc.returncode == 2, (what, proc.stdout, proc.stderr)
        assert len(lines) == 1 and says in lines[0], (what, proc.stderr)
        assert "Traceback" not in proc.stderr, what
    wrong_token.unlink()
    assert job_ids(cluster) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_loopback_address_keeps_the_driver_on_loopback(cluster: Cluster, tmp_path: Path):
    """`--address 127.0.0.1:PORT` from a shell that lacks the dev cluster's env file: Ray would swap
    127.0.0.1 for the machine's external IP and connect the driver through it; mixup-sweep keeps every
    loopback address on loopback (the driver's node IP, as the cluster records it, is 127.0.0.1)."""
    env = {k: v for k, v in cluster.env.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    token = Path(cluster.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    before = {j.get("job_id") for j in dashboard_get(cluster, "/api/jobs/", token)[1]}
    host, port = cluster.env["RAY_ADDRESS"].rsplit(":", 1)
    for address in (f"127.0.0.1:{port}", f"localhost:{port}"):
        name = f"loopback_{address.split(':')[0].replace('.', '_')}"
        result = subprocess.run(
            [str(BIN / "mixup-sweep"), "run", "quickstart", "--address", address, "--tracking-uri", cluster.tracking_uri,
             "--storage-path", str(cluster.state_dir / "ray_results"), "--set", f"name={name}",
             *[{"grid.seed=[0,1]": "grid.seed=[0]"}.get(a, a) for a in SMALL_SWEEP]],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
        assert result.returncode == 0, result.stderr[-3000:]
    jobs = [j for j in dashboard_get(cluster, "/api/jobs/", token)[1] if j.get("job_id") not in before]
    drivers = [j["driver_info"]["node_ip_address"] for j in jobs if j.get("type") == "DRIVER" and j.get("driver_info")]
    assert len(drivers) == 2 and set(drivers) == {"127.0.0.1"}, jobs
