import mujoco
import numpy as np
import pytest
import torch

from dga_engine.hand import JOINT_NAMES, HandModel, rotations
from dga_engine.hand.mjcf import FINGERTIP_SITES, PREFIX, hand_spec


@pytest.fixture(scope="module")
def hand64():
    return HandModel(dtype=torch.float64)


def _mujoco_with_free_root():
    spec = hand_spec()
    spec.body(PREFIX + "hand mount").add_freejoint()
    m = spec.compile()
    return m, mujoco.MjData(m)


def test_fk_matches_mujoco(hand64):
    m, d = _mujoco_with_free_root()
    g = torch.Generator().manual_seed(0)
    n = 16
    q = hand64.lower + (hand64.upper - hand64.lower) * torch.rand(n, 24, generator=g, dtype=torch.float64)
    rot = rotations.random_rotations(n, g, torch.float64)
    t = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.2
    fk = hand64.forward_kinematics(t, rot, q)
    tips = hand64.fingertips(fk)
    root = m.body(PREFIX + "forearm").id
    for b in range(n):
        d.qpos[:3] = t[b].numpy()
        d.qpos[3:7] = rotations.matrix_to_quat(rot[b]).numpy()
        for k, name in enumerate(JOINT_NAMES):
            d.qpos[m.jnt_qposadr[m.joint(PREFIX + name).id]] = q[b, k].item()
        mujoco.mj_kinematics(m, d)
        np.testing.assert_allclose(fk.pos[b].numpy(), d.xpos[root:], atol=1e-5)
        np.testing.assert_allclose(fk.rot[b].numpy(), d.xmat[root:].reshape(-1, 3, 3), atol=1e-5)
        site = np.stack([d.site_xpos[m.site(PREFIX + s).id] for s in FINGERTIP_SITES])
        np.testing.assert_allclose(tips[b].numpy(), site, atol=1e-5)


def test_fk_float32_matches_float64(hand64):
    hand32 = HandModel()
    g = torch.Generator().manual_seed(1)
    q = hand64.lower + (hand64.upper - hand64.lower) * torch.rand(8, 24, generator=g, dtype=torch.float64)
    rot = rotations.random_rotations(8, g, torch.float64)
    t = torch.randn(8, 3, generator=g, dtype=torch.float64) * 0.1
    p64 = hand64.surface_points(hand64.forward_kinematics(t, rot, q))
    p32 = hand32.surface_points(hand32.forward_kinematics(t.float(), rot.float(), q.float()))
    assert p32.dtype == torch.float32
    assert (p64 - p32.double()).abs().max() < 1e-5


def test_fk_is_differentiable(hand64):
    q = ((hand64.lower + hand64.upper) / 2).unsqueeze(0).clone().requires_grad_(True)
    t = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    pts = hand64.surface_points(hand64.forward_kinematics(t, torch.eye(3, dtype=torch.float64)[None], q))
    pts.sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    assert torch.allclose(t.grad, torch.full((1, 3), float(pts.shape[1]), dtype=torch.float64))


def test_point_sets_are_deterministic_and_sized():
    a, b = HandModel(seed=3), HandModel(seed=3)
    assert torch.equal(a.surface_local, b.surface_local)
    assert torch.equal(a.inner_local, b.inner_local)
    assert a.surface_link.numel() == 64 * len(a.surface_links)
    assert len(a.surface_links) == 19
    c = HandModel(seed=4)
    assert not torch.equal(a.surface_local, c.surface_local)


def test_surface_points_lie_on_link_geoms(hand64):
    """Every surface point sits on its own link's collision geometry (distance to that surface ~ 0)."""
    m = hand64.mj_model
    fk = hand64.forward_kinematics(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[None],
                                   torch.zeros(1, 24, dtype=torch.float64))
    pts = hand64.surface_points(fk)[0].numpy()
    d = mujoco.MjData(m)
    mujoco.mj_kinematics(m, d)
    # distance from each point to the nearest hand collision geom surface, via mj_geomDistance with a tiny sphere
    spec = hand_spec()
    for i in range(0, len(pts), 97):
        spec.worldbody.add_geom(
            type=mujoco.mjtGeom.mjGEOM_SPHERE, size=[1e-4, 0, 0], pos=pts[i], contype=0, conaffinity=0, name=f"probe{i}"
        )
    mp = spec.compile()
    dp = mujoco.MjData(mp)
    mujoco.mj_kinematics(mp, dp)
    mujoco.mj_collision(mp, dp)
    links = hand64.surface_link.numpy()
    for i in range(0, len(pts), 97):
        probe = mp.geom(f"probe{i}").id
        body = mp.body(PREFIX + hand64.link_names[links[i]]).id
        own = [g for g in range(mp.ngeom) if mp.geom_bodyid[g] == body and mp.geom(g).name.startswith(PREFIX + "C_")]
        dist = min(mujoco.mj_geomDistance(mp, dp, probe, g, 0.05, None) for g in own)
        assert abs(dist + 1e-4) < 1.5e-3, (i, dist)


def test_inner_points_face_the_palm_side(hand64):
    """With the hand open, finger inner points face -y (the side the fingers close toward)."""
    fk = hand64.forward_kinematics(torch.zeros(1, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64)[None],
                                   torch.zeros(1, 24, dtype=torch.float64))
    links = [hand64.link_names.index(n) for n in ("ffdistal", "mfmiddle", "rfproximal", "palm")]
    sel = torch.isin(hand64.inner_link, torch.tensor(links))
    normals = (fk.rot[0, hand64.inner_link[sel]] @ hand64.inner_normal[sel].unsqueeze(-1)).squeeze(-1)
    assert (normals[:, 1] < -0.5).all()


def test_keypoint_pairs_exclude_same_and_adjacent_links(hand64):
    mask = hand64.keypoint_pair_mask
    links = [hand64.link_names[i] for i in hand64.keypoint_link.tolist()]
    for i, a in enumerate(links):
        assert not mask[i, i]
        for j, b in enumerate(links):
            if {a, b} in ({"ffproximal", "ffmiddle"}, {"thmiddle", "thproximal"}) or a == b:
                assert not mask[i, j]
    assert mask[links.index("fftip" if "fftip" in links else "ffdistal"), links.index("thdistal")]


def test_bad_shapes_are_refused(hand64):
    with pytest.raises(ValueError, match="expected translation"):
        hand64.forward_kinematics(torch.zeros(1, 3), torch.eye(3)[None], torch.zeros(1, 22))


def test_grouped_placement_matches_per_point_transform(hand64):
    g = torch.Generator().manual_seed(5)
    q = hand64.lower + (hand64.upper - hand64.lower) * torch.rand(4, 24, generator=g, dtype=torch.float64)
    fk = hand64.forward_kinematics(torch.randn(4, 3, generator=g, dtype=torch.float64),
                                   rotations.random_rotations(4, g, torch.float64), q)
    assert torch.allclose(hand64.surface_points(fk), fk.transform(hand64.surface_link, hand64.surface_local))
    assert torch.allclose(hand64.inner_points(fk), fk.transform(hand64.inner_link, hand64.inner_local))
    normals = hand64.surface_normals(fk)
    expected = (fk.rot[:, hand64.surface_link] @ hand64.surface_normal.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(normals, expected)
    assert torch.allclose(normals.norm(dim=-1), torch.ones_like(normals[..., 0]))
