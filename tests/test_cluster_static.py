"""Static checks of the deployment files (no Docker, no Kubernetes here): docker/, cluster/ray-cluster.yaml,
cluster/kuberay/. They parse, carry the fields their tools require, name one image and one Ray
version, run commands and specs that exist in this repository, publish nothing beyond 127.0.0.1 and
hold no credentials."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from sweeps.usage_reporting import USAGE_REPORTING_OFF

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
COMPOSE = REPO / "docker" / "compose.yaml"
LAUNCHER = REPO / "cluster" / "ray-cluster.yaml"
RAYCLUSTER = REPO / "cluster" / "kuberay" / "raycluster.yaml"
RAYJOB = REPO / "cluster" / "kuberay" / "rayjob.yaml"
IMAGE_APP_DIR = "/home/ray/app/"  # where docker/Dockerfile puts the repository's sources
DEPLOYMENT_FILES = [DOCKERFILE, COMPOSE, LAUNCHER, RAYCLUSTER, RAYJOB, REPO / "docker" / ".env.example",
                    REPO / "docker" / "README.md", REPO / "docs" / "cluster.md"]
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN|ACCESS_KEY)", re.I)


def load(path: Path):
    return yaml.safe_load(path.read_text())


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def expected_image() -> str:
    return f"mixup-sweeps:{pyproject()['project']['version']}"


def dockerfile_arg(name: str) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert match, f"docker/Dockerfile has no default for ARG {name}"
    return match.group(1)


def kube_containers(doc: dict) -> list[dict]:
    """Every container of a RayCluster (head + worker groups) or of a RayJob's submitter."""
    spec = doc["spec"]
    if doc["kind"] == "RayJob":
        return spec["submitterPodTemplate"]["spec"]["containers"]
    pods = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    return [c for pod in pods for c in pod["spec"]["containers"]]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# ----------------------------------------------------------------------------------------------
# they parse and carry what their tools require


@pytest.mark.parametrize("path", [COMPOSE, LAUNCHER, RAYCLUSTER, RAYJOB], ids=lambda p: p.name)
def test_yaml_parses_to_a_mapping(path: Path):
    assert isinstance(load(path), dict)


def test_kuberay_manifests_have_kind_api_version_metadata():
    for path, kind in ((RAYCLUSTER, "RayCluster"), (RAYJOB, "RayJob")):
        doc = load(path)
        assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])  # DNS-1123 label
        for container in kube_containers(doc):
            assert container["name"] and container["image"]


def test_raycluster_has_a_head_and_a_gpu_worker_group():
    spec = load(RAYCLUSTER)["spec"]
    assert spec["rayVersion"] == dockerfile_arg("RAY_VERSION")
    assert "rayStartParams" in spec["headGroupSpec"]
    gpu_groups = []
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and "rayStartParams" in group
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        for container in group["template"]["spec"]["containers"]:
            limits = container["resources"]["limits"]
            if int(limits.get("nvidia.com/gpu", 0)) >= 1:
                # Kubernetes requires requests == limits for extended resources such as GPUs.
                assert container["resources"].get("requests", {}).get("nvidia.com/gpu", limits["nvidia.com/gpu"]) \
                    == limits["nvidia.com/gpu"]
                gpu_groups.append(group["groupName"])
    assert gpu_groups, "no worker group with an nvidia.com/gpu limit"


def test_rayjob_targets_the_raycluster_and_passes_the_tracking_uri():
    job, cluster = load(RAYJOB)["spec"], load(RAYCLUSTER)
    assert job["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    assert shlex.split(job["entrypoint"])[:2] == ["mixup-sweep", "run"]
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["env_vars"]["MLFLOW_TRACKING_URI"].startswith("http")
    assert "paper_early_stop_cifar10.yaml" in job["entrypoint"]


def test_launcher_config_passes_rays_own_validation():
    from ray.autoscaler._private.util import fillout_defaults, validate_config

    config = load(LAUNCHER)
    validate_config(fillout_defaults(config))  # what `ray up` checks before touching the cloud
    node_types = config["available_node_types"]
    assert config["head_node_type"] in node_types
    workers = [t for name, t in node_types.items() if name != config["head_node_type"]]
    assert any(t.get("resources", {}).get("GPU", 0) >= 1 and t["max_workers"] >= 1 for t in workers)


# ----------------------------------------------------------------------------------------------
# one image, one Ray version, commands and specs that exist


def compose_services_using_the_image(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if "build" in s or "mixup-sweeps" in s.get("image", "")}


def test_image_names_agree_everywhere():
    image = expected_image()
    dockerfile = DOCKERFILE.read_text()
    assert f'org.opencontainers.image.version="{image.split(":")[1]}"' in dockerfile
    assert f"-t {image} ." in dockerfile  # the documented build command
    ours = compose_services_using_the_image(load(COMPOSE))
    assert {"mlflow", "ray-head", "ray-gpu-worker"} <= set(ours)
    for name, service in ours.items():
        assert service["image"] == image, name
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert (COMPOSE.parent / service["build"]["context"]).resolve() == REPO
    assert load(LAUNCHER)["docker"]["image"] == image
    for path in (RAYCLUSTER, RAYJOB):
        assert {c["image"] for c in kube_containers(load(path))} == {image}, path.name


def test_dockerfile_installs_the_project_as_a_non_root_user():
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M).group(1)
    assert base.startswith("pytorch/pytorch:") and "cuda" in base and "cudnn" in base
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0", "0:0"), "the image must end as a non-root USER"
    assert re.search(r"^RUN pip install --no-deps \.", text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (REPO / item).exists(), f"Dockerfile copies {item}, missing in the repository"
            assert f"!{item.rstrip('/')}" in (REPO / "docker" / "Dockerfile.dockerignore").read_text()


def test_entry_points_exist():
    scripts = pyproject()["project"]["scripts"]
    assert {"mixup-sweep", "mixup-train"} <= set(scripts)
    commands = [shlex.split(load(RAYJOB)["spec"]["entrypoint"])[0]]
    commands += re.findall(r"^RUN .*?&& (mixup-\w+) --help", DOCKERFILE.read_text(), re.M)
    commands += re.findall(r"(mixup-\w+) ", "\n".join(load(LAUNCHER)["setup_commands"]))
    assert commands and set(commands) <= set(scripts)
    for name, target in scripts.items():
        module = target.split(":")[0]
        assert (REPO / (module.replace(".", "/") + ".py")).exists(), f"{name} -> {target}: no such module"


def test_named_specs_exist():
    """Every `mixup-sweep run X` in the deployment files names a spec of this repository."""
    named = []
    for path in DEPLOYMENT_FILES:
        for spec in re.findall(r"mixup-sweep run\s+([^\s\\'\"`]+)", path.read_text()):
            if spec.isupper() or spec.startswith(("$", "-", "<")):
                continue  # a placeholder (SPEC, $SPEC) in prose
            named.append((path.name, spec))
            if spec.endswith(".yaml"):
                relative = spec[len(IMAGE_APP_DIR):] if spec.startswith(IMAGE_APP_DIR) else spec
                assert (REPO / relative).is_file(), f"{path.name}: {spec} does not exist"
            else:
                assert (REPO / "sweeps" / "specs" / f"{spec}.yaml").is_file(), f"{path.name}: no bundled spec {spec}"
    assert len(named) >= 4, named


# ----------------------------------------------------------------------------------------------
# loopback only, no credentials


def test_compose_publishes_only_on_loopback():
    compose = load(COMPOSE)
    published = 0
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
            published += 1
    assert published >= 3  # MLflow, Ray dashboard, MinIO console


def test_no_credential_literals():
    compose = load(COMPOSE)
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        for key, value in env.items():
            if SECRET_NAME.search(key) or (isinstance(value, str) and "://" in value and "@" in value):
                assert "${" in str(value), f"compose {name}.{key} holds a literal credential"
    for path in (RAYCLUSTER, RAYJOB):
        for container in kube_containers(load(path)):
            for key, entry in env_of(container).items():
                if SECRET_NAME.search(key):
                    assert "secretKeyRef" in entry.get("valueFrom", {}) and "value" not in entry, (path.name, key)
    for line in (REPO / "docker" / ".env.example").read_text().splitlines():
        key, _, value = line.partition("=")
        if SECRET_NAME.search(key) and not line.startswith("#"):
            assert value.startswith("replace"), f".env.example: {key} must be a placeholder"
    # Nothing that looks like a secret in any deployment file: key = long random-looking value.
    literal = re.compile(r"(?i)(password|secret|token)[\w-]*\s*[:=]\s*['\"]?(?![$<{])([A-Za-z0-9+/_-]{12,})")
    for path in DEPLOYMENT_FILES:
        for match in literal.finditer(path.read_text()):
            assert match.group(2).startswith(("replace", "secretKeyRef", "mixup-ray-auth")), \
                f"{path.name}: possible credential literal {match.group(0)!r}"


def test_env_file_is_gitignored_and_untracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    ignored = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO)
    assert ignored.returncode == 0, "docker/.env must be gitignored"
    tracked = subprocess.run(["git", "ls-files", "docker/.env", ".cluster"], cwd=REPO, capture_output=True, text=True)
    assert tracked.stdout.strip() == ""


def test_token_auth_is_configured_everywhere():
    for path in (RAYCLUSTER, RAYJOB):
        for container in kube_containers(load(path)):
            env = env_of(container)
            assert env["RAY_AUTH_MODE"]["value"] == "token", (path.name, container["name"])
            assert "RAY_AUTH_TOKEN" in env, (path.name, container["name"])
    compose = load(COMPOSE)
    for name in ("ray-head", "ray-gpu-worker"):
        env = compose["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN")
    launcher = load(LAUNCHER)
    assert "--env RAY_AUTH_MODE=token" in launcher["docker"]["run_options"]
    assert any(dest.endswith("/.ray/auth_token") for dest in launcher["file_mounts"])


def test_usage_reporting_is_off_everywhere():
    """MLflow's telemetry and Ray's usage statistics off in every container (sweeps/usage_reporting.py
    sets the same defaults in every process that imports the package)."""
    wanted = dict(USAGE_REPORTING_OFF)
    for container in kube_containers(load(RAYCLUSTER)):
        env = env_of(container)
        assert {k: env.get(k, {}).get("value") for k in wanted} == wanted, container["name"]
    compose = load(COMPOSE)
    for name in ("ray-head", "ray-gpu-worker"):
        env = compose["services"][name]["environment"]
        assert {k: env.get(k) for k in wanted} == wanted, name
    dockerfile = DOCKERFILE.read_text()  # the image's ENV: the MLflow server's container too
    assert all(f"{k}={v}" in dockerfile for k, v in wanted.items())
    options = load(LAUNCHER)["docker"]["run_options"]
    assert all(f"--env {k}={v}" in options for k, v in wanted.items())


def test_local_cluster_script_is_executable_and_documents_itself():
    script = REPO / "cluster" / "local-cluster"
    assert os.access(script, os.X_OK) and script.read_text().startswith("#!/usr/bin/env python3")
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and all(cmd in out.stdout for cmd in ("up", "status", "down"))


def test_the_image_pins_a_ray_inside_the_tested_range():
    """pyproject.toml caps ray at what ray_compat's canaries were run against; the image must install a
    version in that range (and the driver's installed Ray is one too)."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_req = next(Requirement(d) for d in deps if Requirement(d).name == "ray")
    assert ray_req.specifier.contains(dockerfile_arg("RAY_VERSION")), (ray_req, dockerfile_arg("RAY_VERSION"))
    assert ray_req.specifier.contains(version("ray"))
    assert any(s.operator == "<" for s in ray_req.specifier), f"{ray_req}: no upper bound"


# ----------------------------------------------------------------------------------------------
# what is documented is what is tested: the deployment files use the flags, env names and storage
# layout of `mixup-sweep cluster up --backend postgres --artifacts s3` (tests/test_production_backends.py)


def topology_under_test() -> dict:
    """The MLflow server's flags and environment, and the nodes' S3 environment, as the development
    cluster builds them for the production backends."""
    from sweeps.devcluster import mlflow_server, state

    topology = {"state_dir": "/state", "backend": "postgres", "artifacts": "s3",
                "ports": {"postgres": 5432, "s3": 9000, "mlflow": 5000}}
    creds = {"postgres_password": "p", "s3_access_key": "k", "s3_secret_key": "s"}
    return {
        "server_env": mlflow_server.server_env(topology, {}, creds),
        "node_env": state.s3_env(topology, creds),
        "storage": state.SWEEP_STORAGE,
        "buckets": (state.MLFLOW_BUCKET, state.RAY_BUCKET),
        "destination": f"s3://{state.MLFLOW_BUCKET}/",
    }


def test_compose_runs_the_tested_mlflow_server():
    tested = topology_under_test()
    mlflow = load(COMPOSE)["services"]["mlflow"]
    flags = " ".join(mlflow["command"])
    assert "--serve-artifacts" in flags and f"--artifacts-destination={tested['destination']}" in flags
    env = mlflow["environment"]
    # The same variables the tested server gets (values: compose's own hosts and credentials).
    assert set(tested["server_env"]) - {"AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"} <= set(env), \
        set(tested["server_env"]) - set(env)
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert tested["server_env"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert str(env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"]).lower() == "false"


def test_compose_ray_nodes_use_the_tested_storage_layout():
    tested = topology_under_test()
    compose = load(COMPOSE)
    for name in ("ray-head", "ray-gpu-worker"):
        env = compose["services"][name]["environment"]
        assert set(tested["node_env"]) <= set(env), (name, set(tested["node_env"]) - set(env))
        assert env["MIXUP_SWEEP_STORAGE"] == tested["storage"]
        assert env["AWS_DEFAULT_REGION"] == tested["node_env"]["AWS_DEFAULT_REGION"]
    head = compose["services"]["ray-head"]["command"]
    assert "--num-cpus=0" in head  # as `cluster up --head-cpus 0`: the head runs the driver, no trials
    buckets = " ".join(compose["services"]["minio-buckets"]["command"])
    for bucket in tested["buckets"]:
        assert f"store/{bucket}" in buckets


def test_kuberay_uses_the_tested_env_names_and_layout():
    tested = topology_under_test()
    doc = load(RAYCLUSTER)
    assert doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    for container in kube_containers(doc):
        env = env_of(container)
        storage = env["MIXUP_SWEEP_STORAGE"]["value"]
        assert storage.startswith("s3://") and storage.endswith("/" + tested["storage"].rsplit("/", 1)[1])
        assert "AWS_DEFAULT_REGION" in env
        # The keys come from the Secret mixup-s3 under the names every S3 client reads.
        assert {"secretRef": {"name": "mixup-s3"}} in container["envFrom"]
    text = RAYCLUSTER.read_text()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert key in text, key
    assert f"--storage-path {storage}" in " ".join(load(RAYJOB)["spec"]["entrypoint"].split())


def test_the_image_installs_the_servers_drivers_of_the_extras():
    extras = pyproject()["project"]["optional-dependencies"]
    dockerfile = DOCKERFILE.read_text()
    for extra in ("postgres", "s3"):
        for requirement in extras[extra]:
            package = re.split(r"[<>=\[]", requirement)[0]
            assert package in dockerfile, f"docker/Dockerfile does not install {package} (extra [{extra}])"
