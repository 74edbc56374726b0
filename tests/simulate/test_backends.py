"""Scene, squeeze and backends: the scene's conventions, the warp/isaacgym backends' contracts."""

from __future__ import annotations

import importlib.util

import mujoco
import numpy as np
import pytest
import trimesh

from dga_engine.hand.rotations import quat_to_matrix
from dga_engine.simulate import FilterConfig
from dga_engine.simulate.backends import BackendUnavailable, check_backend, make_backend
from dga_engine.simulate.backends.base import push_directions, quiet_warnings
from dga_engine.simulate.backends.mujoco_backend import MujocoBackend, MujocoSimulator
from dga_engine.simulate.closing import adam_sign_targets, squeeze_targets
from dga_engine.simulate.scene import build_scene
from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T

BOX = trimesh.creation.box(extents=[0.05, 0.05, 0.10])


def _cage():
    import torch

    r = quat_to_matrix(torch.tensor(CAGE_QUAT, dtype=torch.float64)).numpy()
    return np.array(CAGE_T, dtype=float), r, np.array(CAGE_Q, dtype=float)


def test_scene_puts_the_object_at_the_inverse_root_pose():
    t, r, q = _cage()
    scene = build_scene([BOX], 1.0, FilterConfig())
    d = scene.reset(t, r, q)
    # A point given in the object frame lands where the grasp convention says: p_hand = R^T (p_obj - t).
    p_obj = np.array([0.01, -0.02, 0.03])
    world = d.xpos[scene.obj_body] + d.xmat[scene.obj_body].reshape(3, 3) @ p_obj
    assert np.allclose(world, r.T @ (p_obj - t), atol=1e-9)
    assert np.allclose(d.qpos[scene.hand_qpos], q) and np.allclose(d.ctrl, q)
    assert scene.mass == pytest.approx(1000 * 0.05 * 0.05 * 0.10, rel=1e-6)
    assert scene.model.nu == 24 and scene.model.ntendon == 0 and scene.model.opt.gravity.tolist() == [0, 0, 0]
    # Push directions are the object's axes seen from the hand.
    assert np.allclose(push_directions(r)[0], r.T @ [1, 0, 0]) and np.allclose(
        push_directions(r)[5], -(r.T @ [0, 0, 1])
    )
    # Scale multiplies the object.
    assert build_scene([BOX], 2.0, FilterConfig()).mass == pytest.approx(8 * scene.mass, rel=1e-6)


def test_squeeze_moves_touching_fingers_into_the_object():
    t, r, q = _cage()
    cfg = FilterConfig()
    scene = build_scene([BOX], 1.0, cfg)
    d = scene.reset(t, r, q)
    targets, pairs = squeeze_targets(scene, d, q, cfg)
    step = targets - q
    assert pairs > 0
    assert np.allclose(step[:2], 0)  # the wrist holds
    assert np.abs(step).max() == pytest.approx(cfg.close_step)
    # Moving the joints along the step brings the hand closer to the object: contact depth grows.
    def depth(qq):
        dd = scene.reset(t, r, qq)
        return -min(
            [c.dist for c in dd.contact[: dd.ncon] if scene.obj_geom_mask[c.geom1] or scene.obj_geom_mask[c.geom2]]
            + [0]
        )
    assert depth(q + 0.2 * step) > depth(q)
    # A hand far from everything gets no squeeze.
    d = scene.reset(np.array([0, 0, 0.8]), np.eye(3), q)
    assert np.allclose(squeeze_targets(scene, d, q, cfg)[0], q)


def _box_points(n: int = 2048):
    from dga_engine.physics.penetration import ObjectCloud

    pts, face = trimesh.sample.sample_surface(BOX, n, seed=0)
    return ObjectCloud(pts, BOX.face_normals[face])


def reference_adam_step(hand, cloud, t, r, q, lr, margin, offset):
    """DGA's _set_normal_force_pose, written out with torch.optim.Adam: targets 0.2 along the (offset)
    normals of hand points within ``margin`` of the object samples, loss = summed distances, one step."""
    import torch

    from dga_engine.sources.kinematics import PoseConverter

    t, r = torch.as_tensor(t[None]), torch.as_tensor(r[None])
    q0 = torch.as_tensor(q[None])
    fingers = q0[:, 2:].clone().requires_grad_(True)
    opt = torch.optim.Adam([fingers], lr=lr)
    fk = hand.forward_kinematics(t, r, torch.cat([q0[:, :2], fingers], dim=1))
    p = hand.surface_points(fk)
    n = hand.surface_normals(fk)
    if offset:  # link origins in the DGA hand's root frame, rotated into the object frame
        root = torch.as_tensor(PoseConverter.for_model("sr_grasp_description").root_offset[:3, 3])
        n = n + (fk.pos[:, hand.surface_link] - t[:, None]) + (r @ root)[:, None]
    dist, _ = cloud.tree.query(p.detach().reshape(-1, 3).numpy())
    mask = torch.as_tensor(dist < margin, dtype=p.dtype).reshape(1, -1, 1)
    target = (p + 0.2 * mask * n).detach()
    loss = (p - target).reshape(-1, 3).norm(dim=1).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return np.r_[q[:2], fingers.detach().numpy()[0]]


@pytest.mark.parametrize("offset", [True, False])
def test_adam_sign_squeeze_is_the_reference_step(offset):
    import torch

    from dga_engine.hand import HandModel

    hand = HandModel(dtype=torch.float64)
    t, r, q = _cage()
    cfg = FilterConfig.preset("dga-reference").replace(squeeze_normal_offset=offset)
    cloud = _box_points()
    targets, near = adam_sign_targets(hand, cloud, t[None], r[None], q[None], cfg)
    step = targets[0] - q
    assert near[0] > 0 and np.allclose(step[:2], 0)  # the wrist holds
    moved = np.abs(step) > 1e-6
    # every involved joint moves by lr (up to Adam's eps against tiny gradients)
    assert moved.any() and np.allclose(np.abs(step[moved]), cfg.squeeze_lr, atol=1e-4)
    expected = reference_adam_step(hand, cloud, t, r, q, cfg.squeeze_lr, cfg.close_margin, offset)
    np.testing.assert_allclose(targets[0], expected, atol=1e-6)
    # the constant the engine uses is the converter's (the DGA root frame is not rotated against ours)
    from dga_engine.simulate.closing import DGA_ROOT_OFFSET
    from dga_engine.sources.kinematics import PoseConverter

    off = PoseConverter.for_model("sr_grasp_description").root_offset
    assert np.allclose(off[:3, :3], np.eye(3), atol=1e-6) and np.allclose(off[:3, 3], DGA_ROOT_OFFSET, atol=1e-4)
    # a hand far from the object is not squeezed
    far, n_far = adam_sign_targets(hand, cloud, np.array([[0.0, 0.0, 0.8]]), np.eye(3)[None], q[None], cfg)
    assert n_far[0] == 0 and np.allclose(far[0], q)


def test_object_damping_matches_the_reference_drift():
    # A free object under 0.5 m/s^2 with PhysX-style damping c = 10/s drifts a/c (T - (1 - e^-cT)/c) in T.
    cfg = FilterConfig.preset("dga-reference")
    scene = build_scene([BOX], 1.0, cfg)
    d = scene.reset(np.array([0.0, 0.0, 0.8]), np.eye(3), np.zeros(24))
    a, c, steps = cfg.push_force_per_volume / cfg.density, cfg.object_linear_damping, cfg.push_steps
    x0 = d.qpos[scene.obj_qpos : scene.obj_qpos + 3].copy()
    d.xfrc_applied[scene.obj_body, :3] = [cfg.push_force_per_volume * scene.volume, 0, 0]
    mujoco.mj_step(scene.model, d, nstep=steps)
    T = steps * cfg.timestep
    expected = a / c * (T - (1 - np.exp(-c * T)) / c)
    assert np.linalg.norm(d.qpos[scene.obj_qpos : scene.obj_qpos + 3] - x0) == pytest.approx(expected, rel=0.02)
    assert expected == pytest.approx(0.0367, abs=5e-4) and expected > cfg.max_displacement
    assert np.allclose(build_scene([BOX], 1.0, FilterConfig()).model.dof_damping[scene.obj_dof : scene.obj_dof + 6], 0)


def test_end_displacement_push_at_origin_and_sequence():
    t, r, q = _cage()
    far = np.array([0.0, 0.0, 0.8])
    # An object whose centre of mass is 4 cm off its frame origin: pushed at the origin, it also turns.
    off = BOX.copy().apply_translation([0.04, 0.0, 0.0])
    base = FilterConfig(early_stop=False, object_linear_damping=10.0, object_angular_damping=100.0, push_time=50 / 60)
    with quiet_warnings():
        runs = {}
        for name, cfg in {"max": base, "end": base.replace(displacement="end"),
                          "origin": base.replace(displacement="end", push_point="origin"),
                          "sequential": base.replace(displacement="end", sequential=True)}.items():
            sim = MujocoSimulator(build_scene([off], 1.0, cfg), cfg)
            runs[name] = sim.run(far, np.eye(3), q)
    # free and damped, the object only moves forward: end = max
    np.testing.assert_allclose(runs["end"].displacement, runs["max"].displacement, rtol=1e-9)
    # pushed at its origin along y, the lever arm turns the object; its origin moves differently
    assert abs(runs["origin"].displacement[2] - runs["end"].displacement[2]) > 1e-4
    # sequential: -x starts where +x left the object, still moving forward, so it ends nearer its start
    assert runs["sequential"].displacement[1] < runs["end"].displacement[1] - 1e-3


def test_mujoco_backend_reports_divergence_as_an_error():
    t, r, q = _cage()
    backend = MujocoBackend(FilterConfig(max_object_speed=1e-6))  # any motion counts as blowing up
    out = backend.simulate("k", [BOX], 1.0, t[None], r[None], q[None])
    assert isinstance(out[0], Exception) and "diverged" in str(out[0])


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown simulation backend"):
        make_backend("bullet", FilterConfig())


@pytest.mark.skipif(importlib.util.find_spec("mujoco_warp") is not None, reason="mujoco_warp is installed")
def test_warp_backend_without_the_package_says_how_to_install():
    with pytest.raises(BackendUnavailable, match="pip install"):
        check_backend("mujoco-warp")


@pytest.mark.skipif(importlib.util.find_spec("isaacgym") is not None, reason="isaacgym is installed")
def test_isaacgym_backend_without_isaacgym_says_how_to_install(monkeypatch):
    monkeypatch.delenv("DGA_ISAACGYM_PYTHON", raising=False)
    with pytest.raises(BackendUnavailable, match="Preview 4") as exc:
        check_backend("isaacgym")
    assert "3.8" in str(exc.value) and "--backend mujoco" in str(exc.value)


def test_isaacgym_job_files(tmp_path, monkeypatch):
    # The job the Isaac Gym worker reads; running it needs Isaac Gym (never available here).
    from dga_engine.simulate.backends.isaacgym_backend import IsaacGymBackend

    fake_python = tmp_path / "python3.8"
    fake_python.write_text("")
    monkeypatch.setenv("DGA_ISAACGYM_PYTHON", str(fake_python))
    t, r, q = _cage()
    backend = IsaacGymBackend(FilterConfig())
    scene = build_scene([BOX], 1.0, FilterConfig())
    backend.write_job(tmp_path, scene, [BOX], 1.0, t[None], r[None], q[None])
    import json

    job = json.loads((tmp_path / "job.json").read_text())
    assert job["force"] == pytest.approx(500 * 0.05 * 0.05 * 0.10) and job["close_steps"] > 0
    assert (job["push_point"], job["displacement"], job["linear_damping"]) == ("com", "max", 0.0)
    # the reference preset's settings and given targets reach the worker
    ref = IsaacGymBackend(FilterConfig.preset("dga-reference"))
    given = q[None] + 0.5
    ref.write_job(tmp_path, scene, [BOX], 1.0, t[None], r[None], q[None], targets=given, volume=1e-4)
    job = json.loads((tmp_path / "job.json").read_text())
    assert job["force"] == pytest.approx(500 * 1e-4) and job["push_point"] == "origin" and job["displacement"] == "end"
    assert (job["linear_damping"], job["angular_damping"]) == (10.0, 100.0)
    assert np.allclose(np.load(tmp_path / "grasps.npz")["targets"], given)
    backend.write_job(tmp_path, scene, [BOX], 1.0, t[None], r[None], q[None])
    spec = mujoco.MjSpec.from_string((tmp_path / "hand.xml").read_text())  # valid MJCF, no actuators
    assert len(spec.actuators) == 0 and len(spec.joints) == 24
    assert "part_000.obj" in (tmp_path / "object.urdf").read_text() and (tmp_path / "parts" / "part_000.obj").exists()
    g = np.load(tmp_path / "grasps.npz")
    assert g["dirs"].shape == (1, 6, 3) and g["targets"].shape == (1, 24) and g["obj_quat_xyzw"].shape == (1, 4)


def _cuda() -> bool:
    if importlib.util.find_spec("mujoco_warp") is None:
        return False
    import warp as wp

    return wp.is_cuda_available()


@pytest.mark.gpu
@pytest.mark.skipif(
    not _cuda(), reason="needs mujoco_warp and a CUDA device (on CPU the first run compiles for minutes)"
)
def test_warp_backend_agrees_with_mujoco():
    t, r, q = _cage()
    rng = np.random.default_rng(0)
    qs = np.stack([q] + [q + rng.normal(0, 0.05, 24) for _ in range(7)])
    ts = np.repeat(t[None], len(qs), 0)
    ts[-2:] += [0.0, 0.0, 0.8]  # two far hands
    rs = np.repeat(r[None], len(qs), 0)
    cfg = FilterConfig()
    cpu = MujocoBackend(cfg).simulate("k", [BOX], 1.0, ts, rs, qs)
    gpu = make_backend("mujoco-warp", cfg).simulate("k", [BOX], 1.0, ts, rs, qs)
    agree = [bool(np.array_equal(a.passed, b.passed)) for a, b in zip(cpu, gpu)]
    assert sum(agree) >= len(agree) - 1, agree
