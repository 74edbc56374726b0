"""Generation pointed at a Ray cluster by address: a Ray head started by the test (`ray start --head`,
one CPU, no dashboard) on 127.0.0.1, and the build's generation step run against it.

The generator runs on the cluster's actors, not in a Ray started in-process: the cluster's job table
shows this process's driver, and its actor table the GeneratorWorker actors. The candidates must equal
what the in-process path writes for the same checkpoint (per-object seeds), so the Ray path is the same
code path, only placed elsewhere.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import trimesh

from .local_services import start_ray_head

from dga_engine.build import BuildConfig, generate_candidates
from dga_engine.dataset.schema import pose_table
from dga_engine.dataset.store import Dataset
from dga_engine.generate.config import SampleConfig
from dga_engine.layout import Layout
from dga_engine.objects.store import ObjectStore, write_simple_object


@pytest.fixture
def ray_address(tmp_path, monkeypatch):
    """The address of a Ray head started for the test; this process gets the cluster's auth token."""
    svc, address, auth, ray_tmp = start_ray_head(tmp_path / "ray")
    try:
        for k, v in auth.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        yield address
    finally:
        svc.stop(timeout=5)  # Ray would drain for up to 30 s after SIGTERM; a test cluster needs no drain
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _micro_generator():
    """The tiny preset shrunk to seconds per epoch on one core (same architecture)."""
    from dga_engine.generate.config import DiffusionConfig, ModelConfig, tiny_config

    cfg = tiny_config()
    cfg.model = ModelConfig(n_points=256, n_groups=8, group_size=16, point_mlp=(16, 32), encoder_layers=1,
                            width=32, heads=2, blocks=2, pose_tokens=2, mlp_ratio=2)
    cfg.diffusion = DiffusionConfig(steps=8)
    cfg.train.epochs = 1
    cfg.train.batch_size = 32
    cfg.train.sdf_resolution = 32
    cfg.sample.sdf_resolution = 32
    cfg.sample.batch_size = 32
    cfg.preset = "micro"
    return cfg


def _random_grasps(object_id: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return pose_table(object_id, rng.normal(scale=0.1, size=(n, 3)), q, rng.uniform(0.0, 0.8, size=(n, 24)),
                      source="synthesis", source_record_id=[f"ray-test:{seed}:{i}" for i in range(n)])


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
        ds.write_shard(_random_grasps(oid, 32, seed=i), f"seed-{i}")
    train(layout, 1, _micro_generator(), device="cpu")
    return layout, sorted(ids)


@pytest.mark.slow
def test_generation_runs_on_the_ray_cluster_at_the_address(trained_root, ray_address, tmp_path):
    import ray

    from dga_engine.generate import stage

    layout, ids = trained_root
    local = Layout.at(tmp_path / "copy")
    shutil.copytree(layout.root, local.root)  # the same checkpoint and objects, for the in-process reference

    # The build's own generation step (dga_engine.build.generate_candidates, what the flow's generate task runs).
    assert not ray.is_initialized()
    cfg = BuildConfig.for_profile("demo", generate_per_object=4, ray_address=ray_address)
    n = generate_candidates(layout, cfg, 1, ids)
    assert n == 8
    assert not ray.is_initialized()  # the step connected for its own run and disconnected

    ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
    try:
        from ray._private import state

        jobs = [j for j in state.jobs() if j["DriverPid"] == os.getpid()]
        assert any(j["IsDead"] for j in jobs), jobs  # the generation driver came and went
        actors = state.actors().values()
        assert any("GeneratorWorker" in a.get("ActorClassName", "") for a in actors), list(actors)
    finally:
        ray.shutdown()

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
