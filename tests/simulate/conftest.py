"""Fixtures of the filter's tests: a second object beside the shared ``box_object``. The grasps with known
outcomes on the box are in :mod:`tests.helpers`."""

from __future__ import annotations

import pytest


@pytest.fixture
def capsule_object(object_store):
    """A 3 cm radius, 8 cm long capsule (convex) as a second test object."""
    import trimesh

    from dga_engine.objects.store import write_simple_object

    mesh = trimesh.creation.capsule(height=0.08, radius=0.03, count=[16, 16])
    return write_simple_object(object_store, mesh, "capsule r3 h8 cm")
