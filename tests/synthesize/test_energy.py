import numpy as np
import pytest
import torch
import trimesh

from dga_engine.hand import default_hand
from dga_engine.hand.rotations import random_rotations
from dga_engine.physics.fields import GridField
from dga_engine.physics.penetration import object_into_hand_depths_mm
from dga_engine.synthesize import SynthesisConfig
from dga_engine.synthesize.energy import TERMS, GraspEnergy, force_closure
from dga_engine.synthesize.hand_sdf import HandSDF, HandSpheres
from dga_engine.synthesize.initialize import initial_poses, palm_anchor
from dga_engine.synthesize.optimize import anneal, clean_up

BOX = trimesh.creation.box(extents=[0.05, 0.05, 0.10])


@pytest.fixture(scope="module")
def box_energy():
    config = SynthesisConfig(batch_size=8, n_iter=40, field_resolution=32)
    field = GridField.from_mesh(BOX, [BOX], resolution=32)
    return GraspEnergy(default_hand(), HandSpheres(), field, torch.zeros(3), config), config


def test_force_closure_zero_for_balanced_contacts_and_not_otherwise():
    pts = torch.tensor([[[0.03, 0.0, 0.0], [-0.03, 0.0, 0.0]]])
    inward = torch.tensor([[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])
    assert force_closure(pts, inward, torch.zeros(3)).item() == pytest.approx(0.0, abs=1e-7)
    same_way = torch.tensor([[[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]])
    assert force_closure(pts, same_way, torch.zeros(3)).item() == pytest.approx(2.0, abs=1e-6)
    # opposite forces on different lines of action leave a torque
    off_axis = torch.tensor([[[0.03, 0.01, 0.0], [-0.03, -0.01, 0.0]]])
    assert force_closure(off_axis, inward, torch.zeros(3)).item() == pytest.approx(0.02, abs=1e-6)


def test_hand_sdf_matches_the_filter_penetration_measure():
    hand = default_hand()
    g = torch.Generator().manual_seed(3)
    q = hand.lower + (hand.upper - hand.lower) * torch.rand(4, 24, generator=g)
    fk = hand.forward_kinematics(torch.zeros(4, 3), random_rotations(4, g), q)
    # points around the fingers' surfaces, some inside some outside (the forearm is compared below)
    fingers = hand.surface_link >= hand.link_names.index("ffknuckle")
    surface = hand.surface_points(fk)[:, fingers]
    pts = surface + 0.004 * torch.randn(surface.shape, generator=g)
    ours = (-HandSDF()(fk, pts)).clamp_min(0).max(-1).values * 1000
    theirs = torch.as_tensor(
        [
            object_into_hand_depths_mm(pts[b].double(), type(fk)(fk.rot[b : b + 1], fk.pos[b : b + 1])).max()
            for b in range(4)
        ]
    )
    assert (ours > 0.5).all()
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=0.01)
    # around the forearm, the k-DOP stand-in for its hull is conservative (never reports less)
    forearm = hand.surface_points(fk)[:, hand.surface_link == 0] * 0.9 + 0.1 * fk.pos[:, :1]
    ours = (-HandSDF()(fk, forearm)).clamp_min(0).max(-1).values * 1000
    theirs = torch.as_tensor(
        [
            object_into_hand_depths_mm(forearm[b].double(), type(fk)(fk.rot[b : b + 1], fk.pos[b : b + 1])).max()
            for b in range(4)
        ]
    )
    assert (ours >= theirs.float() - 0.01).all() and (ours <= theirs.float() + 3.0).all()


def test_spheres_lie_inside_the_hand_geometry():
    hand = default_hand()
    fk = hand.forward_kinematics(torch.zeros(1, 3), torch.eye(3)[None], ((hand.lower + hand.upper) / 2)[None])
    spheres = HandSpheres()
    sd = HandSDF()(fk, spheres.centres(fk))[0]
    assert (sd <= -spheres.radius + 1e-6).all()  # every sphere is contained in some collision geom


def test_initial_poses_face_the_object(box_energy):
    _, config = box_energy
    hand = default_hand()
    pose = initial_poses(hand, BOX, 16, config, np.random.default_rng(0))
    fk = hand.forward_kinematics(pose.t, pose.matrix(), pose.q)
    palm, anchor_local = palm_anchor(hand, config.anchor_shift)
    anchor = fk.rot[:, palm] @ anchor_local + fk.pos[:, palm]
    palm_normal = fk.rot[:, palm] @ torch.tensor([0.0, -1.0, 0.0])
    to_object = -anchor / anchor.norm(dim=-1, keepdim=True)
    # palm normal within tilt_max of the inward hull normal; the box centre is in front of the palm
    assert ((palm_normal * to_object).sum(-1) > 0).all()
    hull_distance = torch.as_tensor(BOX.nearest.signed_distance(anchor.double().numpy()))
    assert (-hull_distance > config.distance_lower - 1e-3).all() and (
        -hull_distance < config.distance_upper + 0.02
    ).all()
    assert (pose.q >= hand.lower - 1e-6).all() and (pose.q <= hand.upper + 1e-6).all()


def test_annealing_lowers_the_energy(box_energy):
    energy, config = box_energy
    hand = default_hand()
    rng = np.random.default_rng(1)
    gen = torch.Generator().manual_seed(1)
    pose = initial_poses(hand, BOX, config.batch_size, config, rng)
    start, _ = energy(pose, energy.draw_contacts(config.batch_size, gen))
    res = anneal(energy, pose, config, gen, reinit=lambda m: initial_poses(hand, BOX, m, config, rng))
    assert set(res.terms) == set(TERMS)
    assert res.energy.mean() < 0.6 * start.mean()
    assert res.history[-1] < res.history[0]
    assert torch.isfinite(res.energy).all() and 0 < res.accept_rate <= 1


def test_refinement_removes_object_into_hand_penetration(box_energy):
    energy, config = box_energy
    hand = default_hand()
    # palms pressed 3 mm into the box along their approach lines (fingers open, so the palm is what collides)
    pressed = config.replace(distance_lower=-0.003, distance_upper=-0.003, jitter_strength=0.0, tilt_max=0.0)
    pose = initial_poses(hand, BOX, 4, pressed, np.random.default_rng(2))
    pose.q = torch.zeros_like(pose.q)  # flat hand: the palm and the finger bases are what overlap the box
    dense = torch.as_tensor(trimesh.sample.sample_surface(BOX, 4000, seed=0)[0], dtype=torch.float32)
    sdf = HandSDF()

    def depth(p):
        return (-sdf(hand.forward_kinematics(p.t, p.matrix(), p.q), dense)).clamp_min(0).max(-1).values

    before = depth(pose)
    assert (before > 0.002).all()
    out, diag = clean_up(energy, pose, config.replace(cleanup_steps=60, close_steps=0, pen_target_mm=0.5), dense, sdf)
    after = depth(out)
    assert (after < 0.001).all(), after  # the filter's limit is 1 mm
    np.testing.assert_allclose(diag["pen_mm"].numpy(), after.numpy() * 1000, atol=1e-3)
    assert (out.q >= hand.lower - 1e-6).all() and (out.q <= hand.upper + 1e-6).all()
