"""Fixtures for the generator's tests: a micro model config, objects and grasp-like training data."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import micro_config

torch.set_num_threads(1)  # the tests share two cores; one thread avoids oversubscription stalls


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
