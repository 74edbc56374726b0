"""The sources' hand models and the mapping of their poses onto the engine's (FK: fingertips, mm)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from dga_engine.hand.mjcf import JOINT_NAMES, PREFIX, hand_model
from dga_engine.sources import kinematics as K


def _random_poses(model: str, n: int, seed: int, spread: float = 1.0):
    hand = K.source_hand(model)
    lo, hi = hand.limits()
    rng = np.random.default_rng(seed)
    mid, half = (lo + hi) / 2, (hi - lo) / 2 * spread
    q = rng.uniform(mid - half, mid + half, size=(n, hand.n_joints))
    r = Rotation.random(n, random_state=seed).as_matrix()
    t = rng.normal(size=(n, 3)) * 0.3
    return r, t, q


def test_tables_have_the_published_structure():
    sr = K.source_hand("sr_grasp_description")
    assert sr.root == "forearm" and sr.n_joints == 24
    assert sr.joint_order[:6] == ["WRJ2", "WRJ1", "FFJ4", "FFJ3", "FFJ2", "FFJ1"]
    assert sr.joint_order[14:19] == ["LFJ5", "LFJ4", "LFJ3", "LFJ2", "LFJ1"] and sr.joint_order[-1] == "THJ1"
    lo, hi = sr.limits()
    assert lo[0] == pytest.approx(-0.5236, abs=1e-4) and hi[1] == pytest.approx(0.6109, abs=1e-4)
    dgn = K.source_hand("dexgraspnet_mjcf")
    assert dgn.root == "palm" and dgn.n_joints == 22 and dgn.joint_order[0] == "robot0:FFJ3"


def test_dexgraspnet_table_is_the_engine_hand_below_the_palm():
    """DexGraspNet's MJCF numbers equal the gymnasium-robotics MJCF's: every body offset and joint axis."""
    m = hand_model()
    dgn = K.source_hand("dexgraspnet_mjcf")
    for j in dgn.joints:
        body = m.body(PREFIX + j.child) if not j.child.startswith("S_") else None
        if body is None:
            site = m.site(PREFIX + j.child)
            np.testing.assert_allclose(j.origin[:3, 3], m.site_pos[site.id], atol=1e-9)
            continue
        np.testing.assert_allclose(j.origin[:3, 3], m.body_pos[body.id], atol=1e-9, err_msg=j.name)
        rot = np.zeros(9)
        import mujoco

        mujoco.mju_quat2Mat(rot, m.body_quat[body.id])
        np.testing.assert_allclose(j.origin[:3, :3], rot.reshape(3, 3), atol=2e-4, err_msg=j.name)
        jid = m.joint(j.name).id
        np.testing.assert_allclose(j.axis, m.jnt_axis[jid] / np.linalg.norm(m.jnt_axis[jid]), atol=1e-5, err_msg=j.name)


def test_derived_joint_signs_and_root_offsets():
    sr = K.converter("sr_grasp_description")
    mapping = {ours: (sr.hand.joint_order[i], int(s)) for ours, i, s in zip(JOINT_NAMES, sr.source_index, sr.sign)}
    flipped = sorted(k for k, (_, s) in mapping.items() if s < 0)
    # Axes that point the other way in the URDF: FF/MF abduction and the thumb's two distal joints.
    assert flipped == ["FFJ3", "MFJ3", "THJ0", "THJ1"]
    assert mapping["WRJ1"] == ("WRJ2", 1) and mapping["LFJ4"] == ("LFJ5", 1) and mapping["THJ4"] == ("THJ5", 1)
    # Both roots are forearms, 1 cm and 4.3 cm apart: the URDF's palm sits at (0, -0.01, 0.247), ours at (0, 0, 0.29).
    np.testing.assert_allclose(sr.root_offset[:3, 3], [0.0, -0.01, -0.043], atol=1e-6)
    np.testing.assert_allclose(sr.root_offset[:3, :3], np.eye(3), atol=1e-6)
    dgn = K.converter("dexgraspnet_mjcf")
    assert (dgn.sign == 1).all() and (dgn.source_index[:2] == -1).all()  # no wrist: fixed at 0
    np.testing.assert_allclose(dgn.root_offset[:3, 3], [0.0, 0.0, -0.29], atol=1e-6)


def test_dexgraspnet_conversion_is_exact():
    conv = K.converter("dexgraspnet_mjcf")
    r, t, q = _random_poses("dexgraspnet_mjcf", 300, 0, spread=1.3)  # also beyond the limits, as the data has
    res = conv.fingertip_residual_mm(r, t, q)
    assert res.max() < 0.01


def test_sr_grasp_description_residual_is_small_and_where_the_models_differ():
    """FF/MF/RF match exactly; the URDF's little-finger metacarpal pivot and thumb base sit 1.8 / 0.5 mm from ours."""
    conv = K.converter("sr_grasp_description")
    r, t, q = _random_poses("sr_grasp_description", 500, 1)
    res = conv.fingertip_residual_mm(r, t, q)
    assert res[:, :3].max() < 0.01
    assert 1.5 < res[:, 3].max() < 2.0 and res[:, 3].min() > 1.5
    assert 0.4 < res[:, 4].max() < 0.6
    zero = conv.fingertip_residual_mm(np.eye(3)[None], np.zeros((1, 3)), np.zeros((1, 24)))[0]
    np.testing.assert_allclose(zero, [0, 0, 0, 1.80, 0.50], atol=0.02)


def test_a_wrong_mapping_would_be_caught():
    """The FK check is sensitive: a flipped abduction sign or the palm taken as root moves fingertips by cm."""
    conv = K.converter("sr_grasp_description")
    r, t, q = _random_poses("sr_grasp_description", 50, 2)
    q[:, 2] = 0.3  # FFJ4 abducted, first finger half flexed
    q[:, 3:6] = 0.5
    bad = K.PoseConverter(
        conv.hand, conv.root_offset, conv.source_index, conv.sign * np.where(np.arange(24) == 2, -1, 1), conv.offset
    )
    assert bad.fingertip_residual_mm(r, t, q)[:, 0].min() > 10
    shifted = conv.root_offset.copy()
    shifted[:3, 3] = 0
    bad_root = K.PoseConverter(conv.hand, shifted, conv.source_index, conv.sign, conv.offset)
    assert bad_root.fingertip_residual_mm(r, t, q).min() > 40


def test_rotation_encodings():
    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, size=(20, 3))
    np.testing.assert_allclose(K.euler_sxyz_matrix(angles), Rotation.from_euler("xyz", angles).as_matrix(), atol=1e-12)
    rv = rng.normal(size=(20, 3))
    np.testing.assert_allclose(K.axis_angle_matrix(rv), Rotation.from_rotvec(rv).as_matrix(), atol=1e-12)
    r = Rotation.random(20, random_state=3).as_matrix()
    d6 = np.concatenate([r[:, :, 0], r[:, :, 1]], axis=1)
    np.testing.assert_allclose(K.rot6d_robust_matrix(d6), r, atol=1e-12)
    np.testing.assert_allclose(K.rot6d_robust_matrix(d6 * 3.0), r, atol=1e-12)  # not normalised
    # non-orthogonal columns: the symmetric decoding keeps the bisector of the two (Gram-Schmidt would keep column 0)
    skew = np.concatenate([[1.0, 0.0, 0.0], [0.2, 1.0, 0.0]])
    m = K.rot6d_robust_matrix(skew)
    bis = np.array([1.0, 0, 0]) + np.array([0.2, 1.0, 0]) / np.linalg.norm([0.2, 1.0, 0])
    np.testing.assert_allclose(m[:, 0] + m[:, 1], bis / np.linalg.norm(bis) * np.sqrt(2), atol=1e-12)
    np.testing.assert_allclose(m.T @ m, np.eye(3), atol=1e-12)
