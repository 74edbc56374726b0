"""Keypoint sequences made by the engine's own hand (its FK), in the 21-keypoint layout."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from dga_engine.hand.model import HandModel
from dga_engine.retarget.keypoints import ROBOT_KEYPOINT_LINKS

# dex-retargeting (the test extra installs it) supports Python < 3.13 only; there, and only there, it cannot exist.
needs_dex_retargeting = pytest.mark.skipif(
    sys.version_info >= (3, 13) and importlib.util.find_spec("dex_retargeting") is None,
    reason="dex-retargeting 0.5 supports Python < 3.13 only",
)

_TIP_SITES = {"fftip": 0, "mftip": 1, "rftip": 2, "lftip": 3, "thtip": 4}


def hand64() -> HandModel:
    return HandModel(surface_points_per_link=8, inner_points_per_link=4, dtype=torch.float64)


def robot_keypoints(hand: HandModel, t: np.ndarray, r: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keypoints (T, 21, 3) at ROBOT_KEYPOINT_LINKS, fingertips (T, 5, 3) ff mf rf lf th) of poses (t, R, q)."""
    fk = hand.forward_kinematics(torch.as_tensor(t), torch.as_tensor(r), torch.as_tensor(q))
    tips = hand.fingertips(fk).numpy()
    pos = fk.pos.numpy()
    kp = np.stack(
        [tips[:, _TIP_SITES[n]] if n in _TIP_SITES else pos[:, hand.link_names.index(n)] for n in ROBOT_KEYPOINT_LINKS],
        1,
    )
    return kp, tips


def smooth_robot_motion(hand: HandModel, n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A grasp-like motion at 120 fps: joints sweep between two in-limit poses (<= 0.6 rad/s), the root moves 10
    cm/s."""
    rng = np.random.default_rng(seed)
    lo, hi = hand.lower.numpy(), hand.upper.numpy()
    s = 0.5 - 0.5 * np.cos(np.pi * np.linspace(0, 1, n))[:, None]
    a, b = rng.uniform(0.25, 0.75, 24), rng.uniform(0.25, 0.75, 24)
    q = lo + (hi - lo) * (a + (b - a) * s)
    rot = Rotation.from_rotvec(rng.normal(size=3)) * Rotation.from_rotvec(s * np.array([0.25, 0.1, -0.1]))
    t = np.array([0.2, -0.1, 0.5]) + s * np.array([0.06, 0.0, 0.03])
    return t, rot.as_matrix(), q
