"""Object fields: exact nearest point vs SDF grid, against analytic shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from dga_engine.physics.fields import ExactField, GridField

RADIUS = 0.04


@pytest.fixture(scope="module")
def sphere_cloud():
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    pts, face = trimesh.sample.sample_surface_even(mesh, 10240, seed=0)
    # Project onto the true sphere and use its exact normals: the reference cloud of an ideal sphere.
    pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) * RADIUS
    return pts, pts / RADIUS


@pytest.fixture(scope="module")
def sphere_grid():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=RADIUS)
    return GridField.from_mesh(sphere, [sphere])


def _queries(n: int = 2000, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    """Points in the grid's box (the sphere's bounding box padded by 3 cm: +-7 cm)."""
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(2, n // 2, 3, generator=g, dtype=dtype) - 0.5) * 0.14).to(dtype)


def test_exact_field_is_the_nearest_point_definition(sphere_cloud):
    pts, nrm = sphere_cloud
    q = _queries()
    sdf = ExactField(pts, nrm).sdf(q)
    true = q.norm(dim=-1) - RADIUS
    # distance to the nearest sample: off the surface by up to about the sample spacing (~1.4 mm here)
    assert (sdf - true).abs().max() < 1.5e-3
    assert torch.equal(sdf < 0, true < 0)
    # brute force on a few points: the nearest sample's distance, negative inside
    qq = q[0, :5].numpy()
    d = np.linalg.norm(qq[:, None] - pts[None], axis=-1)
    j = d.argmin(1)
    sign = np.where(np.einsum("ij,ij->i", pts[j] - qq, nrm[j]) > 0, -1.0, 1.0)
    np.testing.assert_allclose(sdf[0, :5].numpy(), sign * d.min(1), atol=1e-12)


def test_exact_field_searches_agree_with_chunking_and_per_grasp_clouds(sphere_cloud):
    pts, nrm = sphere_cloud
    q = _queries(400)
    ref = ExactField(pts, nrm, search="kdtree").sdf(q)
    for search in ("matmul", "kdtree"):
        # 500k scores per chunk: the matmul search splits the batch and, per grasp, the points
        shared = ExactField(pts, nrm, search=search, max_elements=500_000).sdf(q)
        per = ExactField(np.stack([pts, pts]), np.stack([nrm, nrm]), search=search, max_elements=500_000).sdf(q)
        torch.testing.assert_close(shared, ref)
        torch.testing.assert_close(per, ref)
    with pytest.raises(ValueError, match="per-grasp"):
        ExactField(np.stack([pts] * 3), np.stack([nrm] * 3)).sdf(q)
    with pytest.raises(ValueError, match="search"):
        ExactField(pts, nrm, search="brute")


def test_grid_from_mesh_matches_sphere_within_resolution(sphere_grid):
    q = _queries()
    voxel = float(sphere_grid.voxel_size.max())
    err = (sphere_grid.sdf(q) - (q.norm(dim=-1) - RADIUS)).abs()
    assert voxel < 0.0025
    assert err.max() < 0.5 * voxel
    assert err.mean() < 0.1 * voxel


def test_grid_from_points_agrees_with_exact_field(sphere_cloud):
    pts, nrm = sphere_cloud
    grid = GridField.from_points(pts, nrm)
    q = _queries(seed=1)
    diff = (grid.sdf(q) - ExactField(pts, nrm).sdf(q)).abs()
    assert diff.max() < float(grid.voxel_size.max())


def test_grid_outside_the_box_keeps_growing(sphere_grid):
    q = torch.tensor([[[0.5, 0.0, 0.0], [0.0, -0.3, 0.2], [0.08, 0.07, 0.0]]], dtype=torch.float64)
    true = q.norm(dim=-1) - RADIUS
    sdf = sphere_grid.sdf(q)
    assert (sdf > 0.05).all() and (sdf >= true - 1e-3).all()  # an upper bound out there, never inside
    q.requires_grad_(True)
    (g,) = torch.autograd.grad(sphere_grid.sdf(q).sum(), q)
    assert (g * q).sum(-1).gt(0).all()  # the gradient points away from the object


def test_scale_and_multi_object_index(sphere_grid, sphere_cloud):
    pts, nrm = sphere_cloud
    q = _queries(200)
    # the same sphere twice as large: sdf_2(p) = 2 sdf_1(p / 2)
    true2 = q.norm(dim=-1) - 2 * RADIUS
    assert (sphere_grid.sdf(q, scale=2.0) - true2).abs().max() < 2e-3
    per = sphere_grid.sdf(q, scale=torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(per[1], sphere_grid.sdf(q, scale=2.0)[1])
    assert (ExactField(pts, nrm).sdf(q, scale=2.0) - true2).abs().max() < 3e-3
    # two objects (small and large sphere) in one field, chosen per grasp
    big_sphere = trimesh.creation.icosphere(subdivisions=3, radius=2 * RADIUS)
    big = GridField.from_mesh(big_sphere, [big_sphere])
    both = GridField.stack([sphere_grid, big])
    assert both.num_objects == 2
    out = both.sdf(q, index=torch.tensor([1, 0]))
    torch.testing.assert_close(out[0], big.sdf(q)[0])
    torch.testing.assert_close(out[1], sphere_grid.sdf(q)[1])
    with pytest.raises(ValueError, match="index"):
        both.sdf(q)
    with pytest.raises(ValueError, match="index"):
        both.sdf(q, index=torch.tensor([0, 2]))
    rebuilt = GridField(**sphere_grid.arrays())
    torch.testing.assert_close(rebuilt.sdf(q), sphere_grid.sdf(q))


def test_grid_inside_comes_from_the_convex_parts():
    """An L of two boxes: inside/outside is decided by the parts (the simulated geometry), not by the mesh."""
    a = trimesh.creation.box(extents=[0.06, 0.02, 0.02])
    b = trimesh.creation.box(extents=[0.02, 0.06, 0.02])
    b.apply_translation([0.02, 0.02, 0.0])
    mesh = trimesh.boolean.union([a, b])
    grid = GridField.from_mesh(mesh, [a, b], resolution=48)
    voxel = float(grid.voxel_size.max())  # nodes beyond the narrow band are within about a voxel
    q = torch.tensor(
        [[[-0.02, 0.004, 0.0], [0.02, 0.04, 0.004], [-0.02, 0.03, 0.0], [0.0, 0.0, 0.03]]], dtype=torch.float64
    )
    sdf = grid.sdf(q)
    assert sdf[0, 0] == pytest.approx(-0.006, abs=1.2 * voxel)  # in the first box
    assert sdf[0, 1] == pytest.approx(-0.006, abs=1.2 * voxel)  # in the second
    assert sdf[0, 2] == pytest.approx(0.02, abs=1.2 * voxel)  # in the L's corner pocket: outside
    assert sdf[0, 3] == pytest.approx(0.02, abs=1.2 * voxel)


@pytest.mark.slow
def test_grid_from_a_20k_face_mesh_with_16_parts_has_bounded_memory():
    """Real-size input (20k+ faces, 16 convex parts): memory stays far below a gigabyte, values near exact.

    The old ray-cast inside test (trimesh contains on every grid node) passed 24 GB on a mesh like this.
    """
    import tracemalloc

    from dga_engine.physics.penetration import ObjectParts

    rng = np.random.default_rng(3)
    parts, centre = [], np.zeros(3)
    for k in range(16):  # a crooked chain of boxes and balls, ~12 cm long
        centre = centre + rng.normal(scale=0.008, size=3) + [0.007, 0, 0]
        part = (
            trimesh.creation.icosphere(2, radius=0.012)
            if k % 2
            else trimesh.creation.box(extents=rng.uniform(0.012, 0.025, 3))
        )
        part.apply_translation(centre)
        parts.append(part)
    mesh = trimesh.boolean.union(parts)
    while len(mesh.faces) < 20_000:
        mesh = mesh.subdivide()
    assert len(mesh.faces) >= 20_000 and mesh.is_watertight
    tracemalloc.start()
    grid = GridField.from_mesh(mesh, parts)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    pts = mesh.sample(3000, seed=0) + rng.normal(scale=0.003, size=(3000, 3))
    _, dist, _ = trimesh.proximity.closest_point(mesh, pts)
    exact = np.where(ObjectParts(parts).contains(pts), -dist, dist)
    err = np.abs(grid.sdf(torch.tensor(pts)[None]).numpy()[0] - exact)
    assert np.median(err) < 5e-4 and np.percentile(err, 90) < 1.5e-3


def test_gradients_float64(sphere_grid, sphere_cloud):
    pts, nrm = sphere_cloud
    q = _queries(20, seed=3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: sphere_grid.sdf(x), (q,), eps=1e-7, atol=1e-6)
    assert torch.autograd.gradcheck(lambda x: ExactField(pts, nrm).sdf(x), (q,), eps=1e-7, atol=1e-6)


def test_fields_follow_dtype_and_reject_bad_input(sphere_grid, sphere_cloud):
    pts, nrm = sphere_cloud
    q32 = _queries(100).float()
    for f in (sphere_grid, ExactField(pts, nrm)):
        assert f.sdf(q32).dtype == torch.float32
        with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
            f.sdf(q32[0])
    with pytest.raises(ValueError, match="normals"):
        ExactField(pts, nrm[:10])
    with pytest.raises(ValueError, match="NaN"):
        GridField(np.full((4, 4, 4), np.nan), np.zeros(3), np.ones(3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fields_on_cuda(sphere_grid, sphere_cloud):
    pts, nrm = sphere_cloud
    q = _queries(400)
    for f in (sphere_grid, ExactField(pts, nrm)):
        got = f.sdf(q.cuda().float())
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu().double(), f.sdf(q), atol=1e-5, rtol=0)
