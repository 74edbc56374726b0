"""Retargeting with dex-retargeting: our own hand's keypoints come back, results map exactly into our convention."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dga_engine.retarget.engine import (
    RetargetConfig,
    Retargeter,
    RetargetError,
    check_keypoints,
    palm_fit,
    retarget_chunk,
)

from .helpers import hand64, needs_dex_retargeting, robot_keypoints, smooth_robot_motion

pytestmark = needs_dex_retargeting


@pytest.fixture(scope="module")
def hand():
    return hand64()


def test_keypoints_made_by_our_hand_retarget_back(hand):
    t, r, q = smooth_robot_motion(hand, n=90, seed=0)
    kp, tips = robot_keypoints(hand, t, r, q)
    res = Retargeter(RetargetConfig(workers=1)).run(kp)
    err = np.linalg.norm(_our_tips(hand, res) - tips, axis=-1) * 1000
    assert err.mean() <= 1.0 and np.percentile(err, 95) <= 2.0 and err.max() <= 3.0, (err.mean(), err.max())
    # The library's own robot (pinocchio) and our HandModel agree on where the fingertips of the result are.
    np.testing.assert_allclose(res.tip_error_mm, err, atol=1e-6)
    # The result is a valid pose in our convention: unit quaternions w >= 0, joints inside the limits.
    quat = res.quaternion_wxyz
    np.testing.assert_allclose(np.linalg.norm(quat, axis=1), 1.0, atol=1e-9)
    assert (quat[:, 0] >= 0).all()
    assert (res.joints >= hand.lower.numpy() - 1e-9).all() and (res.joints <= hand.upper.numpy() + 1e-9).all()
    summary = res.tip_error_summary()
    assert set(summary) == {"ff", "mf", "rf", "lf", "th", "all"} and summary["all"]["p95"] <= 2.0


def _our_tips(hand, res):
    fk = hand.forward_kinematics(
        torch.as_tensor(res.translation), torch.as_tensor(res.rotation), torch.as_tensor(res.joints)
    )
    return hand.fingertips(fk).numpy()


def test_palm_fit_places_the_forearm_of_a_flat_palm(hand):
    rng = np.random.default_rng(3)
    q = rng.uniform(hand.lower.numpy(), hand.upper.numpy())[None]
    q[:, :2] = 0.0  # the fit assumes straight wrist joints ...
    q[:, 14] = 0.0  # ... and an uncupped little-finger metacarpal (LFJ4 moves the little knuckle)
    r = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    r *= np.sign(np.linalg.det(r))
    t = np.array([0.4, -1.0, 2.0])
    kp, _ = robot_keypoints(hand, t[None], r[None], q)
    r_fit, t_fit = palm_fit(kp[0])
    np.testing.assert_allclose(r_fit, r, atol=1e-9)
    np.testing.assert_allclose(t_fit, t, atol=1e-9)


@pytest.mark.slow  # starts two worker processes (each imports torch)
def test_chunks_are_independent_of_the_worker_count(hand):
    t, r, q = smooth_robot_motion(hand, n=40, seed=1)
    kp, _ = robot_keypoints(hand, t, r, q)
    frames = np.r_[np.arange(20), 200 + np.arange(20)]
    starts = frames == 200  # a new segment, warm-started afresh
    one = Retargeter(RetargetConfig(workers=1, chunk_frames=16)).run(kp, frames, starts)
    with Retargeter(RetargetConfig(workers=2, chunk_frames=16)) as pooled:
        two = pooled.run(kp, frames, starts)
        again = pooled.run(kp[:16])  # the pool is kept between calls
    np.testing.assert_array_equal(one.joints, two.joints)
    np.testing.assert_array_equal(one.translation, two.translation)
    assert len(again) == 16
    # Retargeting far from the origin (a camera or world frame) gives the same poses, shifted.
    far = Retargeter(RetargetConfig(workers=1, chunk_frames=16)).run(kp + np.array([30.0, -20.0, 7.0]), frames, starts)
    np.testing.assert_allclose(far.translation - [30.0, -20.0, 7.0], one.translation, atol=1e-5)


def test_bad_keypoints_are_refused():
    with pytest.raises(RetargetError, match=r"shape \(T, 21, 3\)"):
        check_keypoints(np.zeros((5, 16, 3)))
    kp = np.zeros((3, 21, 3))
    kp[:, 12] = [0.19, 0, 0]
    kp[1, 4, 2] = np.nan
    with pytest.raises(RetargetError, match="1 frames hold NaN"):
        check_keypoints(kp)
    with pytest.raises(RetargetError, match="metres"):
        check_keypoints(np.where(np.isfinite(kp), kp, 0.0) * 1000)  # millimetres
    with pytest.raises(RetargetError, match="increasing"):
        Retargeter(RetargetConfig(workers=1)).run(np.where(np.isfinite(kp), kp, 0.0), np.array([0, 2, 1]))
    with pytest.raises(ValueError):
        RetargetConfig(predict=2.0)
    assert len(retarget_chunk(np.zeros((0, 21, 3)), RetargetConfig())["joints"]) == 0
