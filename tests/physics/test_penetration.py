"""Penetration metrics on cases whose depth is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from dga_engine.hand import HandModel, rotations
from dga_engine.physics.penetration import (
    DGA_PEN_POINTS,
    ObjectCloud,
    dga_pen_cloud,
    dga_pen_mm,
    hand_collision,
    hand_into_object_depths,
    hand_into_object_mm,
    object_into_hand_depths_mm,
    object_into_hand_mm,
    object_into_hand_sum_mm,
)


@pytest.fixture(scope="module")
def hand():
    return HandModel(dtype=torch.float64)


def _sample(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return pts, mesh.face_normals[face]


def _pose(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, generator=g, dtype=torch.float64) * 0.1, rotations.random_rotations(1, g, torch.float64)


def _link_frame(hand, fk, link: str) -> tuple[np.ndarray, np.ndarray]:
    i = hand.link_names.index(link)
    return fk.rot[0, i].numpy(), fk.pos[0, i].numpy()


# ---- hand into object --------------------------------------------------------------------------


def test_hand_points_in_box_have_their_face_distance_as_depth():
    box = trimesh.creation.box(extents=[0.1, 0.1, 0.1])
    pts, nrm = _sample(box, 40000)
    far = [0.2, 0.2, 0.2]
    hand_points = np.array(
        [
            [[0.0, 0.0, 0.03], [0.0, 0.0, 0.07], far],  # 20 mm below the +z face
            [far, [0.0, 0.06, 0.0], [-0.051, 0.0, 0.0]],  # all outside
            [[0.045, 0.01, -0.01], far, [0.0, -0.048, 0.0]],  # 5 mm and 2 mm deep: max 5 mm
        ]
    )
    mm = hand_into_object_mm(hand_points, pts, nrm)
    np.testing.assert_allclose(mm, [20.0, 0.0, 5.0], atol=0.3)
    depths = hand_into_object_depths(hand_points, pts, nrm)
    assert depths.shape == (3, 3)
    assert depths[2, 2] == pytest.approx(0.002, abs=3e-4)
    assert depths[0, 1] == 0.0 and depths[1].max() == 0.0


def test_hand_in_sphere_matches_analytic_sphere_depth(hand):
    """A real posed hand whose index fingertip sits inside a sphere: compare with the exact sphere SDF."""
    t, rot = _pose(1)
    q = ((hand.lower + hand.upper) / 2)[None]
    fk = hand.forward_kinematics(t, rot, q)
    radius = 0.03
    tip = hand.fingertips(fk)[0, 0].numpy()
    r_d, _ = _link_frame(hand, fk, "ffdistal")
    centre = tip + r_d @ np.array([0.0, -1.0, 0.0]) * 0.02  # sphere centre 2 cm toward the pad side
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=radius)
    pts, nrm = _sample(sphere, 20000)
    pts = pts + centre
    surface = hand.surface_points(fk).numpy()
    expected = np.maximum(radius - np.linalg.norm(surface - centre, axis=-1), 0).max(axis=1) * 1000
    assert expected[0] > 5.0  # really penetrating, by several millimetres
    cloud = ObjectCloud(pts, nrm)
    got = hand_into_object_mm(hand.surface_points(fk), cloud)  # torch input, prebuilt tree
    np.testing.assert_allclose(got, expected, atol=0.3)
    # numpy input and one cloud per grasp give the same numbers
    np.testing.assert_allclose(hand_into_object_mm(surface, pts, nrm), got)
    np.testing.assert_allclose(hand_into_object_mm(surface, pts[None], nrm[None]), got)
    # the same hand 30 cm away does not penetrate
    assert hand_into_object_mm(surface + np.array([0.3, 0.0, 0.0]), cloud)[0] == 0.0


def test_hand_into_object_rejects_bad_input():
    pts = np.zeros((5, 3))
    with pytest.raises(ValueError, match="normals"):
        hand_into_object_mm(np.zeros((1, 4, 3)), pts)
    with pytest.raises(ValueError, match="NaN"):
        hand_into_object_mm(np.full((1, 4, 3), np.nan), pts, pts)
    with pytest.raises(ValueError, match="batch"):
        hand_into_object_mm(np.zeros((2, 4, 3)), np.zeros((3, 5, 3)), np.zeros((3, 5, 3)))


# ---- object into hand --------------------------------------------------------------------------


@pytest.mark.parametrize("depth_mm", [0.0, 1.0, 4.0])
def test_sphere_sinks_known_depth_into_distal_capsule(hand, depth_mm):
    """A sphere under the index pad, its surface reaching `depth` past the distal capsule's surface."""
    t, rot = _pose(2)
    fk = hand.forward_kinematics(t, rot, torch.zeros(1, 24, dtype=torch.float64))
    geoms = hand_collision()
    g = geoms.names.index("C_ffdistal")
    r_cap, half = geoms.size[g][:2]
    r_link, p_link = _link_frame(hand, fk, "ffdistal")
    radius = 0.015
    # Centre beside the far end of the capsule's segment, on the pad side (-y of the link).
    seg_end = geoms.pos[g] + np.array([0.0, 0.0, half])
    local_centre = seg_end + np.array([0.0, -(r_cap + radius - depth_mm / 1000), 0.0])
    centre = p_link + r_link @ local_centre
    pts, _ = _sample(trimesh.creation.icosphere(subdivisions=5, radius=radius), 20000, seed=3)
    per_geom = object_into_hand_depths_mm(pts + centre, fk, hand)
    assert per_geom.shape == (1, len(geoms.names))
    assert per_geom[0, g] == pytest.approx(depth_mm, abs=0.05)
    others = np.delete(per_geom[0], g)
    assert others.max() == 0.0, dict(zip(np.delete(np.array(geoms.names), g), others))
    assert object_into_hand_mm(pts + centre, fk)[0] == pytest.approx(depth_mm, abs=0.05)


def test_box_face_pressed_into_palm(hand):
    """A box whose face lies 3 mm inside the palm box, parallel to its palm-side face."""
    t, rot = _pose(3)
    fk = hand.forward_kinematics(t, rot, torch.zeros(1, 24, dtype=torch.float64))
    geoms = hand_collision()
    g = geoms.names.index("C_palm0")
    half = geoms.size[g]
    depth = 0.003
    extents = np.array([0.03, 0.04, 0.03])  # well inside the palm face in x and z, clear of the thumb
    box = trimesh.creation.box(extents=extents)
    pts, nrm = _sample(box, 30000, seed=4)
    local_centre = geoms.pos[g] + np.array([0.0, -(half[1] + extents[1] / 2 - depth), 0.024])
    r_link, p_link = _link_frame(hand, fk, "palm")
    world = (pts + local_centre) @ r_link.T + p_link
    per_geom = object_into_hand_depths_mm(world, fk, hand)
    assert per_geom[0, g] == pytest.approx(3.0, abs=1e-6)  # flat face: exact up to float error
    assert np.delete(per_geom[0], g).max() == 0.0
    # the same box 50 cm away: nothing inside, in a batch with the pressed pose
    fk2 = hand.forward_kinematics(
        torch.cat([t, t + 0.5]), torch.cat([rot, rot]), torch.zeros(2, 24, dtype=torch.float64)
    )
    np.testing.assert_allclose(object_into_hand_mm(ObjectCloud(world), fk2), [3.0, 0.0], atol=1e-6)


def test_forearm_hull_depth_matches_mesh_signed_distance(hand):
    """Points inside the forearm's convex hull: depth equals trimesh's exact distance to the hull."""
    from dga_engine.hand.mjcf import hand_model

    m = hand_model()
    geoms = hand_collision()
    g = geoms.names.index("C_forearm")
    gid = m.geom("robot0:C_forearm").id
    mid = m.geom_dataid[gid]
    verts = m.mesh_vert[m.mesh_vertadr[mid] : m.mesh_vertadr[mid] + m.mesh_vertnum[mid]].astype(np.float64)
    hull = trimesh.Trimesh(verts).convex_hull
    rng = np.random.default_rng(5)
    local = rng.uniform(hull.bounds[0], hull.bounds[1], size=(400, 3))
    local = local[hull.contains(local)][:50]
    expected = trimesh.proximity.signed_distance(hull, local)  # positive inside
    got = -geoms.signed_distance(g, local)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    # one of these points, placed in the world through FK, gives that depth for its grasp
    t, rot = _pose(4)
    fk = hand.forward_kinematics(t, rot, torch.zeros(1, 24, dtype=torch.float64))
    r_link, p_link = _link_frame(hand, fk, "forearm")
    k = int(np.argmax(expected))
    world = (geoms.rot[g] @ local[k] + geoms.pos[g]) @ r_link.T + p_link
    per_geom = object_into_hand_depths_mm(world[None], fk)
    assert per_geom[0, g] == pytest.approx(expected[k] * 1000, abs=1e-3)


def test_capsule_and_box_signed_distance_are_exact():
    geoms = hand_collision()
    cap = geoms.names.index("C_ffproximal")
    r, h = geoms.size[cap][:2]
    pts = np.array([[0, 0, 0], [r, 0, 0], [0, 0, h + r], [0, 0.5 * r, h], [2 * r, 0, h + r], [0, 0, -h - 3 * r]])
    expected = [-r, 0, 0, -0.5 * r, np.hypot(2 * r, r) - r, 2 * r]
    np.testing.assert_allclose(geoms.signed_distance(cap, pts), expected, atol=1e-12)
    box = geoms.names.index("C_palm0")
    s = geoms.size[box]
    pts = np.array([[0, 0, 0], [s[0] - 0.001, 0, 0], [s[0] + 0.003, s[1] + 0.004, 0]])
    np.testing.assert_allclose(geoms.signed_distance(box, pts), [-s[1], -0.001, 0.005], atol=1e-12)


def test_object_into_hand_validates_input(hand):
    fk = hand.forward_kinematics(
        torch.zeros(2, 3, dtype=torch.float64),
        torch.eye(3, dtype=torch.float64).expand(2, 3, 3),
        torch.zeros(2, 24, dtype=torch.float64),
    )
    with pytest.raises(ValueError, match="batch"):
        object_into_hand_mm(np.zeros((3, 10, 3)), fk)
    with pytest.raises(ValueError, match="link poses"):
        object_into_hand_mm(np.zeros((10, 3)), (fk.rot, fk.pos[..., :2]))
    # (B, No, 3) per grasp works and matches the shared cloud
    pts = np.random.default_rng(0).normal(size=(10, 3)) * 0.05 + np.array([0, 0, 0.3])
    np.testing.assert_allclose(object_into_hand_mm(np.stack([pts, pts]), fk), object_into_hand_mm(pts, fk))


def test_exact_parts_inside_test_has_no_edge_false_alarm():
    """Next to a sharp box edge the nearest sample can sit on the adjacent face, whose normal sign calls
    an outside point inside; the convex-parts test does not, and still finds real penetration."""
    from dga_engine.physics.penetration import ObjectCloud, ObjectParts, hand_into_object_mm

    box = trimesh.creation.box(extents=[0.03, 0.03, 0.10])
    # A sparse cloud where the sample nearest to the probe lies on the top face, just past the +x edge.
    pts = np.array([[0.0149, 0.0, 0.05], [0.015, 0.0, -0.03], [-0.015, 0.0, 0.0], [0.0, 0.0, -0.05]])
    nrm = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    cloud, parts = ObjectCloud(pts, nrm), ObjectParts([box])
    outside = np.array([[[0.023, 0.0, 0.0495]]])  # 8 mm beyond the +x face, below the top face's plane
    assert hand_into_object_mm(outside, cloud)[0] == pytest.approx(8.1, abs=0.1)  # the sign test's false alarm
    assert hand_into_object_mm(outside, cloud, parts=parts)[0] == 0.0
    inside = np.array([[[-0.011, 0.0, 0.0]]])  # 4 mm under the -x face
    assert hand_into_object_mm(inside, cloud, parts=parts)[0] == pytest.approx(4.0, abs=1e-6)
    assert parts.contains(np.array([[0.0, 0.0, 0.0], [0.02, 0.0, 0.0]])).tolist() == [True, False]


def test_parts_inside_test_equals_every_half_space_of_some_part():
    """The box pre-tests and chunks only skip work: on several overlapping parts, points around and inside them
    (and on a boundary, NaN, far away), the answer is exactly "inside every face plane of at least one part"."""
    from scipy.spatial import ConvexHull

    from dga_engine.physics.penetration import ObjectParts

    parts = [trimesh.creation.box(extents=[0.04, 0.02, 0.02]),
             trimesh.creation.icosphere(subdivisions=2, radius=0.015).apply_translation([0.02, 0.0, 0.0]),
             trimesh.creation.cylinder(radius=0.006, height=0.05, sections=24).apply_translation([-0.01, 0.01, 0.0])]
    rng = np.random.default_rng(3)
    pts = np.concatenate([rng.uniform(-0.04, 0.04, (4000, 3)), [[0.02, 0.0, 0.0], [0.02, 0.01, 0.0]],
                          [[np.nan, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    brute = np.zeros(len(pts), dtype=bool)
    for part in parts:
        eq = ConvexHull(np.asarray(part.vertices, dtype=np.float64)).equations
        with np.errstate(invalid="ignore"):
            brute |= ((pts @ eq[:, :3].T + eq[:, 3]) < -1e-6).all(axis=1)
    test = ObjectParts(parts)
    assert np.array_equal(test.contains(pts), brute)
    assert np.array_equal(test.contains(pts, max_elements=64), brute)  # tiny chunks: the same answer
    assert 100 < brute.sum() < 3000 and not test.contains(pts[-2:]).any()


# ---- the reference's Pen and DexGraspNet's summed depth ----------------------------------------------


def reference_compute_collision(obj_pcd_nor: np.ndarray, hand_pcd: np.ndarray) -> np.ndarray:
    """DGA's compute_collision, written out: every hand point takes its nearest object point (brute
    force), counts when (p_obj - p_hand) . n_obj > 0, and the grasp's value is the largest such distance."""
    obj, nor = obj_pcd_nor[:, :3], obj_pcd_nor[:, 3:6]
    dist = np.linalg.norm(hand_pcd[:, :, None, :] - obj[None, None], axis=-1)  # (B, Nh, No)
    nearest = dist.argmin(axis=2)
    d = np.take_along_axis(dist, nearest[..., None], axis=2)[..., 0]
    signs = (((obj[nearest] - hand_pcd) * nor[nearest]).sum(axis=2) > 0).astype(float)
    return (signs * d).max(axis=1)


def test_dga_pen_is_the_reference_formula_without_the_forearm(hand):
    # A box around the palm: the wrist, palm and fingers are partly inside it, the forearm is not
    # counted even where it would be (the box reaches down over it).
    box = trimesh.creation.box(extents=[0.06, 0.04, 0.5])
    pts, nrm = _sample(box, 10240, seed=5)
    q = torch.zeros(2, 24, dtype=torch.float64)
    q[1, 5] = 1.0
    t = torch.tensor([[0.0, 0.0, -0.25], [0.005, 0.01, -0.2]], dtype=torch.float64)
    fk = hand.forward_kinematics(t, torch.eye(3, dtype=torch.float64).expand(2, 3, 3), q)
    cloud = dga_pen_cloud(pts, nrm)
    assert len(cloud) == DGA_PEN_POINTS
    erf = hand.erf_points(fk).numpy()
    expected = reference_compute_collision(np.c_[pts[:4096], nrm[:4096]], erf) * 1000
    np.testing.assert_allclose(dga_pen_mm(hand, fk, cloud), expected, rtol=1e-9, atol=1e-9)
    assert expected.min() > 1.0  # the hand really is inside
    # the ERF set is the full surface set without the forearm's points, order kept
    forearm = hand.link_names.index("forearm")
    keep = hand.surface_link != forearm
    assert torch.equal(hand.erf_index, torch.nonzero(keep).flatten())
    np.testing.assert_array_equal(erf, hand.surface_points(fk).numpy()[:, keep.numpy()])
    assert hand.erf_index.numel() == hand.surface_link.numel() - hand.surface_points_per_link


def test_summed_object_depth_adds_every_inside_point(hand):
    """Object points placed at known depths under the index pad: the sum is the sum of their depths."""
    t, rot = _pose(2)
    fk = hand.forward_kinematics(t, rot, torch.zeros(1, 24, dtype=torch.float64))
    geoms = hand_collision()
    g = geoms.names.index("C_ffdistal")
    r_cap = geoms.size[g][0]
    r_link, p_link = _link_frame(hand, fk, "ffdistal")
    depths = np.array([0.0005, 0.001, 0.002, -0.003])  # the last one 3 mm outside
    local = geoms.pos[g] + np.stack([np.array([0.0, -(r_cap - d), 0.0]) for d in depths])
    pts = p_link + local @ r_link.T
    far = np.array([[1.0, 1.0, 1.0]])  # a point nowhere near the hand
    cloud = np.r_[pts, far]
    assert object_into_hand_sum_mm(cloud, fk, hand)[0] == pytest.approx(1000 * depths[:3].sum(), abs=1e-6)
    assert object_into_hand_mm(cloud, fk, hand)[0] == pytest.approx(2.0, abs=1e-6)
