"""Small meshes and configs for the object-ingestion tests (fast: convex fast path, low CoACD limits)."""

from __future__ import annotations

import pytest
import trimesh


@pytest.fixture
def fast_config():
    from dga_engine.objects.ingest import IngestConfig

    # coarse repair grid and short CoACD search: enough to exercise every step on tiny meshes
    return IngestConfig(remesh_resolution=20, coacd_timeout_s=60, coacd_mcts_iterations=30, coacd_resolution=500)


@pytest.fixture
def mesh_dir(tmp_path):
    """A folder with one small graspable mesh per supported format (distinct shapes, so distinct ids)."""
    d = tmp_path / "meshes"
    (d / "sub").mkdir(parents=True)
    trimesh.creation.box(extents=[0.04, 0.05, 0.09]).export(d / "box.obj")
    trimesh.creation.cylinder(radius=0.03, height=0.1, sections=24).export(d / "can.stl")
    trimesh.creation.icosphere(subdivisions=2, radius=0.035).export(d / "ball.ply")
    trimesh.creation.box(extents=[0.03, 0.06, 0.07]).export(d / "block.off")
    trimesh.creation.capsule(height=0.06, radius=0.02, count=[12, 12]).export(d / "sub" / "capsule.glb")
    (d / "notes.txt").write_text("not a mesh")
    return d
