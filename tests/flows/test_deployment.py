"""flows/README.md, step by step, on 127.0.0.1: a Prefect server, the process work pool, `prefect deploy` of
flows/prefect.yaml, a worker, and `prefect deployment run build-dga/demo --watch` with tiny parameters.

Every command is the README's. The worker runs in a directory outside the checkout (it imports the flow
from the installed package) and the storage root is a bucket on moto's S3 server, reached through the
worker's environment only (FSSPEC_S3_*), as on a cluster. Afterwards the root must hold a dataset
`dga-engine shards verify` accepts and a round ledger whose round 0 is done.
"""

from __future__ import annotations

import json
import re
import uuid

import fsspec
import pytest

from .local_services import REPO, S3_KEY, S3_SECRET, Service, exe, http_json, run, s3_env, start_prefect_server

FLOW_PARAMETERS = ("root", "profile", "objects", "n_objects", "sources", "rounds", "seed_per_object",
                   "generate_per_object", "backend", "workers", "ray_address", "dataset", "seed", "refine",
                   "expand_objects", "n_expand", "top_up_below")


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    """A Prefect server with the work pool and both deployments of flows/prefect.yaml; yields (env, api, tmp)."""
    tmp = tmp_path_factory.mktemp("prefect")
    server, env = start_prefect_server(tmp)
    try:
        run([exe("prefect"), "work-pool", "create", "dga-process", "--type", "process"], env=env, timeout=120)
        out = run([exe("prefect"), "deploy", "--all", "--prefect-file", "flows/prefect.yaml", "--no-prompt"],
                  env=env, cwd=REPO, timeout=180)
        assert "build-dga/demo" in out.stdout and "build-dga/full" in out.stdout, out.stdout
        yield env, env["PREFECT_API_URL"], tmp
    finally:
        server.stop()


def test_deployments_are_registered_as_configured(prefect):
    _, api, _ = prefect
    for name, profile in (("demo", "demo"), ("full", "full")):
        d = http_json(f"{api}/deployments/name/build-dga/{name}")
        assert d["entrypoint"] == "flows.build_dga.build_dga"
        assert d["pull_steps"] == []  # nothing to clone or download: the worker imports the installed package
        assert d["work_pool_name"] == "dga-process"
        assert d["parameters"] == {"profile": profile}
        assert set(d["parameter_openapi_schema"]["properties"]) == set(FLOW_PARAMETERS)
    assert http_json(f"{api}/deployments/name/build-dga/full")["global_concurrency_limit"]["limit"] == 1
    pool = http_json(f"{api}/work_pools/dga-process")
    assert pool["type"] == "process"


@pytest.mark.slow
def test_demo_deployment_runs_on_a_process_worker(prefect, s3_endpoint, tmp_path):
    env, api, logs = prefect
    bucket = f"dga-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET).mkdir(bucket)
    root = f"s3://{bucket}/root"
    storage_env = {**env, **s3_env(s3_endpoint)}
    workdir = tmp_path / "worker"  # not the checkout: the flow comes from the installed package
    workdir.mkdir()
    worker = Service(
        "prefect-worker",
        [exe("prefect"), "worker", "start", "--pool", "dga-process", "--type", "process"],
        env=storage_env,
        cwd=workdir,
        log_dir=logs,
    )
    try:
        out = run([exe("prefect"), "deployment", "run", "build-dga/demo",
                   "--param", f"root={root}", "--param", "n_objects=1", "--param", "rounds=0",
                   "--param", "seed_per_object=8", "--param", "workers=1",
                   "--watch", "--watch-timeout", "400"],
                  env=env, cwd=tmp_path, timeout=480, check=False)
    finally:
        worker.stop()
    match = re.search(r"UUID: ([0-9a-f-]{36})", out.stdout)
    assert match, out.stdout
    state = http_json(f"{api}/flow_runs/{match.group(1)}")["state"]
    assert out.returncode == 0 and state["type"] == "COMPLETED", (
        f"{state}\n{out.stdout}\n--- worker log ---\n{worker.log()}"
    )

    verify = run([exe("dga-engine"), "--root", root, "shards", "verify", "--json"], env=storage_env, timeout=120)
    report = json.loads(verify.stdout[verify.stdout.index("{"):])
    assert report["ok"] and report["shards"] >= 1, report
    status = run([exe("dga-engine"), "--root", root, "rounds", "status", "--json"], env=storage_env, timeout=120)
    ledger = json.loads(status.stdout[status.stdout.index("{"):])
    assert [r["status"] for r in ledger["rounds"]] == ["done"] and ledger["complete"], ledger
    assert ledger["build"]["n_objects"] == 1 and ledger["build"]["rounds"] == 0
    top = fsspec.filesystem("s3", endpoint_url=s3_endpoint, key=S3_KEY, secret=S3_SECRET).ls(f"{bucket}/root")
    assert {p.rsplit("/", 1)[-1] for p in top} >= {"objects", "datasets", "runs"}, top
