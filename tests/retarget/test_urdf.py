"""The URDF generated from the MJCF has the engine's kinematics exactly (pinocchio FK vs HandModel)."""

from __future__ import annotations

import numpy as np
import pinocchio as pin
import torch

from dga_engine.hand.mjcf import JOINT_NAMES
from dga_engine.retarget.keypoints import ROBOT_KEYPOINT_LINKS, TARGET_LINKS
from dga_engine.retarget.urdf import ROOT_LINK, urdf_path, urdf_text

from .helpers import hand64, robot_keypoints


def test_urdf_forward_kinematics_equals_the_engine_hand():
    hand = hand64()
    model = pin.buildModelFromUrdf(urdf_path())
    data = model.createData()
    names = [model.names[i] for i in range(1, model.njoints)]
    assert sorted(names) == sorted(JOINT_NAMES) and model.nq == 24
    # Joint limits come across unchanged.
    lo, hi = hand.lower.numpy(), hand.upper.numpy()
    order = [JOINT_NAMES.index(n) for n in names]
    np.testing.assert_allclose(model.lowerPositionLimit, lo[order], atol=1e-12)
    np.testing.assert_allclose(model.upperPositionLimit, hi[order], atol=1e-12)

    rng = np.random.default_rng(0)
    q = rng.uniform(lo, hi, (16, 24))
    ours, tips = robot_keypoints(hand, np.zeros((16, 3)), np.tile(np.eye(3), (16, 1, 1)), q)
    fk = hand.forward_kinematics(
        torch.zeros(16, 3, dtype=torch.float64), torch.eye(3, dtype=torch.float64).expand(16, 3, 3), torch.as_tensor(q)
    )
    worst_pos = worst_rot = 0.0
    for b in range(16):
        pin.forwardKinematics(model, data, q[b, order])
        pin.updateFramePlacements(model, data)
        for i, link in enumerate(hand.link_names):  # every body frame, position and orientation
            frame = data.oMf[model.getFrameId(link, pin.BODY)]
            worst_pos = max(worst_pos, np.abs(frame.translation - fk.pos[b, i].numpy()).max())
            worst_rot = max(worst_rot, np.abs(frame.rotation - fk.rot[b, i].numpy()).max())
        for k, link in enumerate(ROBOT_KEYPOINT_LINKS):  # and the keypoint points, fingertip sites included
            worst_pos = max(
                worst_pos, np.abs(data.oMf[model.getFrameId(link, pin.BODY)].translation - ours[b, k]).max()
            )
    assert worst_pos < 1e-5 and worst_rot < 1e-6, (worst_pos, worst_rot)


def test_urdf_names_the_retargeting_links_and_roots_at_the_forearm():
    text = urdf_text()
    assert text == urdf_text()  # deterministic
    model = pin.buildModelFromUrdf(urdf_path())
    for link in (ROOT_LINK, *TARGET_LINKS):
        assert model.existFrame(link, pin.BODY), link
    assert model.frames[model.getFrameId(ROOT_LINK, pin.BODY)].parentJoint == 0  # the root: no joint above it
    assert "<inertial" not in text and "<collision" not in text and "<visual" not in text
