"""Fixtures for the generator's tests: a micro model config, objects and grasp-like training data."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)  # the tests share two cores; one thread avoids oversubscription stalls


def micro_config():
    """Smaller than the tiny preset: seconds per epoch on one core, still the full architecture."""
    from dga_engine.generate.config import DiffusionConfig, ModelConfig, tiny_config

    cfg = tiny_config()
    cfg.model = ModelConfig(n_points=256, n_groups=8, group_size=16, point_mlp=(16, 32), encoder_layers=1,
                            width=32, heads=2, blocks=2, pose_tokens=2, mlp_ratio=2)
    cfg.diffusion = DiffusionConfig(steps=20)
    cfg.train.batch_size = 32
    cfg.train.lr = 2e-3
    cfg.train.sdf_resolution = 32
    cfg.train.checkpoint_every = 1
    cfg.sample.sdf_resolution = 32
    cfg.sample.batch_size = 32
    cfg.preset = "micro"
    return cfg


@pytest.fixture
def cfg():
    return micro_config()


@pytest.fixture
def cube(object_store):
    import trimesh

    from dga_engine.objects.store import write_simple_object

    return write_simple_object(object_store, trimesh.creation.box(extents=[0.06, 0.06, 0.06]), "cube 6 cm")


@pytest.fixture
def cylinder(object_store):
    import trimesh

    from dga_engine.objects.store import write_simple_object

    return write_simple_object(object_store, trimesh.creation.cylinder(radius=0.03, height=0.1), "cylinder")
