"""Security defaults, as shipped:

- every server of an embedded sweep (Ray's GCS, raylet, object manager, workers, ...) listens on
  127.0.0.1 only (the local multi-node cluster and its MLflow server are checked in
  test_local_cluster.py::test_cluster_is_up_on_loopback_with_token_auth, which also checks that Ray
  token authentication is on and refuses requests without the token; test_cluster_static.py checks
  token auth in every manifest and that compose publishes on loopback only);
- a checkpoint is data, never code: a pickle with a malicious `__reduce__` placed as state.pt is
  refused with the clear error, and its payload does not run;
- a trial's outputs are owner-only: `mixup-train` creates its output directory and checkpoints 0700
  and every file 0600 (an existing directory keeps its mode);
- no credential from the environment ends up in MLflow params, tags, metric names, artifacts, the
  MLflow database, Ray's result directory, Ray's session logs or the sweep's console output;
- no process of a sweep reports usage to MLflow's or Ray's vendors (sweeps/usage_reporting.py).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from sweep_support import TINY_TRIAL, cli_command, client, descendants, sweep_runs, tiny_spec, trial_epochs_logged, \
    user_env, wait_for, write_spec
from test_local_cluster import listening_sockets_of

from mixup_core.checkpoint import CheckpointError, load_checkpoint

SECRETS = {
    "AWS_SECRET_ACCESS_KEY": "planted-secret-123",
    "MLFLOW_TRACKING_PASSWORD": "planted-password-456",
    "MLFLOW_TRACKING_TOKEN": "planted-token-789",
}
# The variables by which MLflow recognises CI or a test, and then keeps its telemetry off.
CI_MARKERS = {"PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "CIRCLECI", "GITLAB_CI", "JENKINS_URL", "TRAVIS", "TF_BUILD",
              "BITBUCKET_BUILD_NUMBER", "CODEBUILD_BUILD_ARN", "BUILDKITE", "TEAMCITY_VERSION", "CLOUD_RUN_EXECUTION",
              "RUNBOT_HOST_URL", "RUNBOT_BUILD_NAME", "RUNBOT_WORKER_ID"}
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "00000000000000000000000000000001"}  # last: ::1 as /proc prints it


class Payload:
    """Runs `touch MARKER` when unpickled by a loader that allows arbitrary code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "out" / "checkpoints" / "epoch_0001"
    folder.mkdir(parents=True)
    torch.save({"model": Payload(marker), "epoch": 1}, folder / "state.pt")

    with pytest.raises(CheckpointError, match="cannot be loaded as a checkpoint"):
        load_checkpoint(folder)
    res = subprocess.run([sys.executable, "-m", "mixup_core.cli", "feature_noise", "--out", str(tmp_path / "out"),
                          "--resume", "--quiet"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "state.pt: cannot be loaded as a checkpoint" in res.stderr
    assert not marker.exists()

    # The file really is hostile: an unrestricted load runs the payload (so the checks above can fail).
    torch.load(folder / "state.pt", weights_only=False)
    assert marker.exists()


def test_trial_outputs_are_owner_only_and_an_existing_directory_keeps_its_mode(tmp_path):
    tiny = ["--quiet", "--set", "data.n_train=40", "--set", "data.n_test=40", "--set", "train.batch_size=20",
            "--set", "train.epochs=2", "--set", "train.checkpoint_interval_s=0", "--set", "train.keep_checkpoints=2"]
    out = tmp_path / "new" / "trial"
    res = subprocess.run([sys.executable, "-m", "mixup_core.cli", "feature_noise", "--out", str(out), *tiny],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700  # created by the trial: its own too
    found = list(out.rglob("*"))
    assert any(p.name == "state.pt" for p in found) and any(p.name == "SHA256SUMS" for p in found)
    for path in [out, *found]:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    (shared / "notes.txt").write_text("mine")
    (shared / "notes.txt").chmod(0o644)
    res = subprocess.run([sys.executable, "-m", "mixup_core.cli", "feature_noise", "--out", str(shared), *tiny],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "notes.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((shared / "metrics.jsonl").stat().st_mode) == 0o600
    assert stat.S_IMODE((shared / "checkpoints").stat().st_mode) == 0o700


def outside_ci_env() -> dict[str, str]:
    """A user's environment outside CI (MLflow keeps its telemetry off in CI and under pytest), with
    MLflow's telemetry logging on: a telemetry client, in the driver or a trial, prints there as it
    tries to reach its vendor's host (no network here)."""
    env = {k: v for k, v in user_env().items() if k not in CI_MARKERS and k != "DO_NOT_TRACK"}
    env["_MLFLOW_TELEMETRY_LOGGING"] = "true"
    return env


@pytest.fixture(scope="module")
def secret_sweep(tmp_path_factory):
    """A 2-trial sweep run with credentials in its environment; the listening sockets of every process
    it started are read while the trials train. Ray gets a private temp dir so its logs can be read."""
    tmp = tmp_path_factory.mktemp("secret_sweep")
    trial = {**TINY_TRIAL, "data": {**TINY_TRIAL["data"], "n_train": 1500}, "train": {**TINY_TRIAL["train"], "epochs": 8}}
    write_spec(tmp, tiny_spec("secrets", trial=trial))
    ray_tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {**outside_ci_env(), **SECRETS, "RAY_TMPDIR": str(ray_tmp)}
    driver = subprocess.Popen(cli_command() + ["run", "spec.yaml"], cwd=tmp, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: os.umask(0o022))  # a permissive user umask
    sockets: list[tuple[str, int]] = []
    try:
        wait_for(lambda: any(e >= 2 for _, e in trial_epochs_logged(tmp / "mlflow.db").values()), timeout=180,
                 what="a trial's 2nd epoch")
        pids = {driver.pid, *descendants(driver.pid)}
        sockets = listening_sockets_of(pids)
        out, err = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            for pid in [driver.pid, *descendants(driver.pid)]:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
    yield tmp, ray_tmp, driver.returncode, out, err, sockets
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_embedded_ray_listens_on_loopback_only(secret_sweep):
    _, _, rc, _, err, sockets = secret_sweep
    assert rc == 0, err[-3000:]
    assert len(sockets) >= 3, sockets  # GCS, raylet, object manager at least: the probe saw them
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets


def test_no_credential_in_mlflow_ray_results_logs_or_output(secret_sweep):
    tmp, ray_tmp, rc, out, err, _ = secret_sweep
    assert rc == 0, err[-3000:]
    secrets = [s.encode() for s in SECRETS.values()]

    def leaks(text: str | bytes) -> list[bytes]:
        data = text if isinstance(text, bytes) else text.encode()
        return [s for s in secrets if s in data]

    c = client(tmp)
    parents, children = sweep_runs(c, "secrets")
    assert len(parents) == 1 and len(children) == 2
    for run in parents + children:
        for key, value in {**run.data.params, **run.data.tags}.items():
            assert not leaks(f"{key}={value}"), (run.info.run_id, key)
        assert not leaks(" ".join(run.data.metrics)), run.info.run_id
    assert not leaks(out) and not leaks(err)

    scanned = 0
    for root in (tmp, ray_tmp):  # mlflow.db, mlartifacts/, ray_results/, Ray's session logs
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    data = path.read_bytes()
                except OSError:  # a socket or a file Ray removed meanwhile
                    continue
                assert not leaks(data), path
                scanned += 1
    assert (tmp / "mlflow.db").exists() and any((tmp / "mlartifacts").rglob("metrics.jsonl"))
    assert any((tmp / "ray_results" / "secrets").rglob("result.json"))
    assert scanned > 20, scanned


def test_no_process_of_a_sweep_reports_usage_to_mlflow_or_ray(secret_sweep):
    """MLflow 3 starts a telemetry client at import in every process (it fetches its configuration from
    config.mlflow-telemetry.io, then sends usage events); Ray's head sends usage statistics. Neither
    does here: nothing in the driver's output, nor in the trials' (their workers' stdout and stderr in
    Ray's session logs), nor in any Ray log, speaks of either."""
    _, ray_tmp, rc, out, err, _ = secret_sweep
    assert rc == 0, err[-3000:]
    # Not vacuous: in this environment MLflow's own check would turn its telemetry on, but for the
    # defaults sweeps sets.
    mlflow_alone = subprocess.run([sys.executable, "-c", "from mlflow.telemetry.utils import is_telemetry_disabled as off; "
                                   "print(off())"], env=outside_ci_env(), capture_output=True, text=True, timeout=120)
    assert mlflow_alone.stdout.split()[-1:] == ["False"], (
        "MLflow keeps its telemetry off in this environment by itself (a CI marker it knows, or a dev version "
        "of MLflow): add the marker to CI_MARKERS, or this test cannot tell. "
        f"{mlflow_alone.stdout[-500:]} {mlflow_alone.stderr[-1500:]}")
    # what MLflow's telemetry prints (its logger, its host), not the UI hint's MLFLOW_DISABLE_TELEMETRY=true
    trace = re.compile(r"mlflow[.-]telemetry|usage-stats\.ray\.io")
    assert not trace.search(out + err), [line for line in (out + err).splitlines() if trace.search(line)][:5]
    worker_files = [p for p in ray_tmp.rglob("worker-*") if p.suffix in (".out", ".err")]
    assert len(worker_files) >= 2, worker_files  # the trials' own output, to be read
    for path in [*worker_files, *ray_tmp.rglob("*.log")]:
        assert not trace.search(path.read_text(errors="replace")), path


def test_sweep_files_are_owner_only_and_no_lock_file_is_left(secret_sweep):
    """The SQLite store, MLflow's artifacts and Ray's storage (checkpoints included) of a sweep run with
    a permissive umask carry no group or other permission bits; the store's lock leaves no file."""
    tmp, _, rc, _, err, _ = secret_sweep
    assert rc == 0, err[-3000:]
    checked = 0
    for root in (tmp / "mlflow.db", tmp / "mlartifacts", tmp / "ray_results"):
        for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
            if path.is_symlink() or path.is_socket():
                continue
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))
            checked += 1
    assert checked > 20
    import hashlib

    uri = f"sqlite:///{tmp / 'mlflow.db'}"  # where the old per-store lock file would have been
    assert not (Path(tempfile.gettempdir()) / f"mixup-sweep-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock").exists()
    assert not [p for p in tmp.iterdir() if p.name.endswith(".lock")]
