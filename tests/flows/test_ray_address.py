"""Generation pointed at a Ray cluster by address: a Ray head started by the test (`ray start --head`,
one CPU, no dashboard) on 127.0.0.1, and the build's generation step run against it.

The generator runs on the cluster's actors, not in a Ray started in-process: the cluster's job table
shows the driver process's job, and its actor table the GeneratorWorker actors. The candidates must equal
what the in-process path writes for the same checkpoint (per-object seeds), so the Ray path is the same
code path, only placed elsewhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from dga_engine.build import BuildConfig
from dga_engine.dataset.store import Dataset
from dga_engine.generate.config import SampleConfig
from dga_engine.layout import Layout
from dga_engine.objects.store import ObjectStore, write_simple_object
from tests.helpers import make_grasps, micro_config

from .local_services import start_ray_head


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head started for the test: its address and the environment a driver needs (auth token)."""
    svc, address, auth, ray_tmp = start_ray_head(tmp_path / "ray")
    try:
        yield address, auth
    finally:
        svc.stop(timeout=5)  # Ray would drain for up to 30 s after SIGTERM; a test cluster needs no drain
        shutil.rmtree(ray_tmp, ignore_errors=True)


# The driver runs in its own process: Ray keeps the first auth token it sees for the life of a process,
# and this cluster's token would break any later local Ray in the test session.
_DRIVER = """
import json, os, sys
import ray
from ray._private import state
from dga_engine.build import BuildConfig, generate_candidates
from dga_engine.layout import Layout
root, address, ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
cfg = BuildConfig.for_profile("demo", generate_per_object=4, ray_address=address)
n = generate_candidates(Layout.at(root), cfg, 1, ids)
connected_after = ray.is_initialized()
ray.init(address=address, include_dashboard=False, log_to_driver=False)
jobs = [j for j in state.jobs() if j["DriverPid"] == os.getpid()]
actors = [a.get("ActorClassName", "") for a in state.actors().values()]
ray.shutdown()
print(json.dumps({"n": n, "connected_after": connected_after, "driver_jobs_dead": [j["IsDead"] for j in jobs],
                  "actors": actors}))
"""


def _micro_generator():
    """The suite's micro generator, trained for one epoch with 8 diffusion steps."""
    from dga_engine.generate.config import DiffusionConfig

    cfg = micro_config()
    cfg.diffusion = DiffusionConfig(steps=8)
    cfg.train.epochs = 1
    return cfg


@pytest.fixture
def trained_root(tmp_path):
    """A local root with two objects, round-0 shards and a micro round-1 generator."""
    import torch

    from dga_engine.generate.train import train

    torch.set_num_threads(1)
    layout = Layout.at(tmp_path / "root")
    store = ObjectStore(layout)
    ids = [write_simple_object(store, trimesh.creation.box(extents=[0.06, 0.06, 0.06]), "cube").object_id,
           write_simple_object(store, trimesh.creation.cylinder(radius=0.03, height=0.1), "cylinder").object_id]
    ds = Dataset(layout)
    for i, oid in enumerate(ids):
        ds.write_shard(make_grasps({oid: 32}, seed=i, filtered=False), f"seed-{i}")
    train(layout, 1, _micro_generator(), device="cpu")
    return layout, sorted(ids)


@pytest.mark.slow
def test_generation_runs_on_the_ray_cluster_at_the_address(trained_root, ray_head, tmp_path):
    from dga_engine.generate import stage

    layout, ids = trained_root
    address, auth = ray_head
    local = Layout.at(tmp_path / "copy")
    shutil.copytree(layout.root, local.root)  # the same checkpoint and objects, for the in-process reference

    # The build's own generation step (dga_engine.build.generate_candidates, what the flow's generate task runs).
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(auth)
    done = subprocess.run([sys.executable, "-c", _DRIVER, layout.root, address, ",".join(ids)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["n"] == 8
    assert result["connected_after"] is False  # the step connected for its own run and disconnected
    assert any(result["driver_jobs_dead"]), result  # the generation driver came and went
    assert any("GeneratorWorker" in a for a in result["actors"]), result["actors"]
    from dga_engine import runs

    records = [runs.read_record(layout, "generate", u) for u in runs.done_units(layout, "generate")]
    assert records and all(len(r["worker"]["node_id"]) == 56 and r["worker"]["pid"] for r in records), records

    cfg = BuildConfig.for_profile("demo", generate_per_object=4)
    sample = SampleConfig.preset(cfg.generator_preset)
    sample.seed = cfg.seed
    reference = stage.generate(local, 1, 4, ids, sample=sample, device="cpu")
    assert reference.backend == "local" and reference.grasps_written == 8

    def ordered(table):
        return table.sort_by([("object_id", "ascending"), ("source_record_id", "ascending")])

    on_ray = ordered(Dataset(layout).candidates("generator"))
    in_process = ordered(Dataset(local).candidates("generator"))
    assert on_ray.num_rows == in_process.num_rows == 8
    assert on_ray.column("grasp_id").to_pylist() == in_process.column("grasp_id").to_pylist()
    np.testing.assert_allclose(np.asarray(on_ray.column("joints").to_pylist()),
                               np.asarray(in_process.column("joints").to_pylist()), atol=1e-4)
