"""SPF / ERF / SRF: hand-computed values on tiny cases, float64 gradient checks, full-hand smoke."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from dga_engine.hand import HandModel, rotations
from dga_engine.physics.fields import ExactField, GridField
from dga_engine.physics.objectives import (
    LossWeights,
    PhysicsLossConfig,
    PhysicsObjectives,
    erf,
    spf,
    srf,
)

T = torch.float64


def _plane_cloud(step: float = 0.001, half: float = 0.02) -> ExactField:
    """Points on a square of the plane z = 0 (normals +z): the half-space z < 0 is 'inside'."""
    ax = np.arange(-half, half + step / 2, step)
    x, y = np.meshgrid(ax, ax)
    pts = np.stack([x.ravel(), y.ravel(), np.zeros(x.size)], 1)
    return ExactField(pts, np.tile([0.0, 0.0, 1.0], (len(pts), 1)))


def test_spf_hand_computed():
    field = ExactField([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    pts = torch.tensor(
        [
            [[0.0, 0.0, 0.01], [0.0, 0.0, 0.05], [0.003, 0.0, -0.004]],  # 10 mm in, 50 mm out, 5 mm in
            [[0.5, 0.0, 0.0], [0.0, 0.0, 0.03], [1.0, 0.0, 0.019]],  # out, out, 19 mm in
        ],
        dtype=T,
    )
    eta = 1e-5
    term = spf(pts, field, threshold=0.02, eta=eta)
    np.testing.assert_allclose(term.per_grasp.numpy(), [0.015 / (2 + eta), 0.019 / (1 + eta)], rtol=1e-12)
    assert float(term.value) == pytest.approx(0.034 / (3 + eta), rel=1e-12)  # pooled over the batch
    # nothing within the threshold: zero, not NaN
    far = spf(pts + 1.0, field)
    assert torch.equal(far.per_grasp, torch.zeros(2, dtype=T)) and float(far.value) == 0.0


def test_erf_hand_computed_plane_and_box():
    field = _plane_cloud()
    pts = torch.tensor(
        [
            [[0.0, 0.0, -0.003], [0.001, 0.002, -0.001], [0.0, 0.0, 0.01]],  # 3 mm and 1 mm deep
            [[0.0, 0.0, 0.002], [0.005, 0.0, 0.02], [0.0, 0.003, 0.0005]],  # all outside
        ],
        dtype=T,
    )
    term = erf(pts, field)
    np.testing.assert_allclose(term.per_grasp.numpy(), [0.003, 0.0], atol=1e-12)
    assert float(term.value) == pytest.approx(0.0015, abs=1e-12)
    # A 4 cm box from its own vertices+face samples: a point 7 mm inside the +x face.
    box = trimesh.creation.box(extents=[0.04, 0.04, 0.04])
    g = np.stack(np.meshgrid(*[np.linspace(-0.02, 0.02, 41)] * 2), -1).reshape(-1, 2)
    faces = [np.insert(g, axis, sign * 0.02, axis=1) for axis in range(3) for sign in (-1, 1)]
    normals = [np.tile(np.eye(3)[axis] * sign, (len(g), 1)) for axis in range(3) for sign in (-1, 1)]
    bfield = ExactField(np.concatenate(faces), np.concatenate(normals))
    q = torch.tensor([[[0.013, 0.0, 0.0], [0.03, 0.0, 0.0]], [[0.0, 0.05, 0.0], [0.0, 0.0, -0.025]]], dtype=T)
    np.testing.assert_allclose(erf(q, bfield).per_grasp.numpy(), [0.007, 0.0], atol=1e-12)
    assert box.contains(q[0, :1].numpy()).all()


def test_srf_hand_computed():
    # two keypoints 5 mm apart: each ordered pair contributes 0.02 - 0.005
    kp = torch.tensor([[[0.0, 0.0, 0.0], [0.005, 0.0, 0.0]], [[0.0, 0.0, 0.0], [0.03, 0.0, 0.0]]], dtype=T)
    term = srf(kp, threshold=0.02)
    np.testing.assert_allclose(term.per_grasp.numpy(), [0.03, 0.0], atol=1e-15)
    assert float(term.value) == pytest.approx(0.015, abs=1e-15)
    # three keypoints, the close pair (0, 1) masked out: only (0, 2) at 12 mm counts
    kp3 = torch.tensor([[[0.0, 0.0, 0.0], [0.001, 0.0, 0.0], [0.0, 0.012, 0.0]]], dtype=T)
    mask = torch.ones(3, 3, dtype=torch.bool) & ~torch.eye(3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = False
    # pairs (0,2) at 12 mm and (1,2) at sqrt(1 + 144) mm
    expected = 2 * (0.02 - 0.012) + 2 * (0.02 - np.hypot(0.001, 0.012))
    assert float(srf(kp3, mask).per_grasp[0]) == pytest.approx(expected, abs=1e-15)
    with pytest.raises(ValueError, match="pair_mask"):
        srf(kp3, torch.ones(2, 2, dtype=torch.bool))
    # coincident allowed keypoints do not produce NaN gradients
    kp_same = torch.zeros(1, 2, 3, dtype=T, requires_grad=True)
    srf(kp_same).value.backward()
    assert torch.isfinite(kp_same.grad).all()


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(0)
    field = ExactField(*_sphere_cloud(1024))
    grid = GridField.from_points(*_sphere_cloud(4096), resolution=24)
    pts = (torch.randn(2, 6, 3, generator=g, dtype=T) * 0.02).requires_grad_(True)
    for f in (field, grid):
        assert torch.autograd.gradcheck(lambda x: spf(x, f, threshold=0.05).per_grasp, (pts,), eps=1e-7, atol=1e-6)
        assert torch.autograd.gradcheck(lambda x: erf(x, f).per_grasp, (pts,), eps=1e-7, atol=1e-6)
    kp = (torch.randn(2, 5, 3, generator=g, dtype=T) * 0.01).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: srf(x).per_grasp, (kp,), eps=1e-7, atol=1e-6)
    assert float(srf(kp).value.detach()) > 0  # the check exercised active pairs


def _sphere_cloud(n: int, radius: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    pts, _ = trimesh.sample.sample_surface_even(trimesh.creation.icosphere(subdivisions=4, radius=radius), n, seed=0)
    nrm = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    return nrm * radius, nrm


@pytest.fixture(scope="module")
def hand():
    return HandModel(dtype=T)


def _poses_around(hand: HandModel, b: int, seed: int = 0):
    """Random poses whose palm centre lies on the sphere's surface (the fingers reach into the object)."""
    g = torch.Generator().manual_seed(seed)
    q = hand.lower + (hand.upper - hand.lower) * torch.rand(b, 24, generator=g, dtype=T)
    rot = rotations.random_rotations(b, g, T)
    fk = hand.forward_kinematics(torch.zeros(b, 3, dtype=T), rot, q)
    palm = hand.link_names.index("palm")
    centre = fk.pos[:, palm] + (fk.rot[:, palm] @ torch.tensor([0.0, -0.05, 0.04], dtype=T))
    return -centre, rot, q


def test_full_hand_objectives_exact_and_grid(hand):
    pts, nrm = _sphere_cloud(4096)
    exact, grid = ExactField(pts, nrm), GridField.from_points(pts, nrm)
    objectives = PhysicsObjectives(hand)
    t, rot, q = _poses_around(hand, 6)
    results = {}
    for name, f in (("exact", exact), ("grid", grid)):
        tt = t.clone().requires_grad_(True)
        qq = q.clone().requires_grad_(True)
        terms = objectives(tt, rot, qq, f)
        for term in (terms.spf, terms.erf, terms.srf):
            assert term.per_grasp.shape == (6,) and term.value.ndim == 0
            assert torch.isfinite(term.per_grasp).all()
        loss = objectives.guidance_loss(tt, rot, qq, f)
        assert loss.item() == pytest.approx(terms.total(LossWeights(1.0, 0.3, 1.0)).item())
        loss.backward()
        assert torch.isfinite(tt.grad).all() and tt.grad.abs().sum() > 0
        assert torch.isfinite(qq.grad).all() and qq.grad.abs().sum() > 0
        results[name] = terms
    assert (results["exact"].erf.per_grasp > 0.005).any()  # the poses do penetrate
    # Same physics through either representation, within the grid's resolution (~2 mm).
    torch.testing.assert_close(results["grid"].erf.per_grasp, results["exact"].erf.per_grasp, atol=2e-3, rtol=0)
    torch.testing.assert_close(results["grid"].spf.per_grasp, results["exact"].spf.per_grasp, atol=2e-3, rtol=0)
    torch.testing.assert_close(results["grid"].srf.per_grasp, results["exact"].srf.per_grasp)
    # ERF is the analytic sphere depth of the deepest surface point (up to the cloud's spacing)
    fk = hand.forward_kinematics(t, rot, q)
    depth = (0.04 - hand.surface_points(fk).norm(dim=-1)).clamp_min(0).max(-1).values
    torch.testing.assert_close(results["exact"].erf.per_grasp, depth, atol=1.5e-3, rtol=0)


def test_guidance_step_reduces_the_loss(hand):
    """A small step along the negative gradient lowers the weighted physics loss (grid field)."""
    pts, nrm = _sphere_cloud(4096)
    grid = GridField.from_points(pts, nrm)
    objectives = PhysicsObjectives(hand)
    t, rot, q = _poses_around(hand, 4, seed=1)
    t = t.requires_grad_(True)
    loss = objectives.guidance_loss(t, rot, q, grid)
    (grad,) = torch.autograd.grad(loss, t)
    step = 1e-5  # metres; the loss is piecewise smooth (max, threshold, trilinear cells)
    t2 = (t - step * grad / grad.norm()).detach()
    decrease = loss.item() - objectives.guidance_loss(t2, rot, q, grid).item()
    assert decrease == pytest.approx(step * float(grad.norm()), rel=0.2)  # first-order prediction


def test_objectives_follow_input_dtype(hand):
    pts, nrm = _sphere_cloud(1024)
    objectives = PhysicsObjectives(hand)
    t, rot, q = _poses_around(hand, 2)
    terms32 = objectives(t.float(), rot.float(), q.float(), ExactField(pts, nrm))
    terms64 = objectives(t, rot, q, ExactField(pts, nrm))
    assert terms32.erf.per_grasp.dtype == torch.float32 and terms64.erf.per_grasp.dtype == T
    torch.testing.assert_close(terms32.erf.per_grasp.double(), terms64.erf.per_grasp, atol=1e-5, rtol=0)
    assert hand.local_pos.dtype == T  # the caller's hand was not converted in place


def test_config_defaults_and_validation():
    c = PhysicsLossConfig()
    assert (c.spf_threshold, c.srf_threshold, c.spf_eta) == (0.02, 0.02, 1e-5)
    assert c.train_weights == LossWeights(1.0, 1.0, 1.0)
    assert c.guidance_weights == LossWeights(spf=1.0, erf=0.3, srf=1.0)
    with pytest.raises(ValueError):
        PhysicsLossConfig(spf_threshold=0.0)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        erf(torch.zeros(4, 3), _plane_cloud())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_objectives_on_cuda(hand):
    pts, nrm = _sphere_cloud(2048)
    objectives = PhysicsObjectives(hand)
    t, rot, q = _poses_around(hand, 8)
    cpu = objectives(t, rot, q, GridField.from_points(pts, nrm))
    grid = GridField.from_points(pts, nrm)
    for f in (grid, ExactField(pts, nrm)):
        gpu = objectives(t.cuda().float(), rot.cuda().float(), q.cuda().float(), f)
        assert gpu.erf.per_grasp.device.type == "cuda"
        torch.testing.assert_close(gpu.srf.per_grasp.cpu().double(), cpu.srf.per_grasp, atol=1e-4, rtol=0)
