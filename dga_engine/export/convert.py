"""From the engine's pose convention to a source hand model's: the inverse of
:class:`~dga_engine.sources.kinematics.PoseConverter`.

The curate stage maps a source pose to the engine's with a fixed root offset, a joint map and per-joint
signs (``PoseConverter.convert``). Exporting applies the inverse of that same map, so export followed by
our loader returns the pose that was exported (to float precision). Two things need care:

- a source without wrist joints (DexGraspNet's MJCF, DexGraspBench's Shadow) cannot hold the engine's
  WRJ1/WRJ0: the wrist is folded into the root pose. The engine pose is first replaced by the one with
  zero wrist joints and the same palm frame (the fingers hang off the palm, so every fingertip stays put);
- a source joint the engine does not map is written as 0.
"""

from __future__ import annotations

import functools

import numpy as np

from dga_engine.conventions import JOINT_NAMES
from dga_engine.sources.kinematics import PoseConverter, engine_fingertips

WRIST = [JOINT_NAMES.index("WRJ1"), JOINT_NAMES.index("WRJ0")]


@functools.lru_cache(maxsize=1)
def _palm_chain() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The engine's forearm -> palm chain: (offset (4,4) of the wrist link, WRJ1 axis/pos, palm offset, WRJ0 axis/pos).

    Returned as local transforms and joint data read from the hand model (float64)."""
    from dga_engine.hand.model import default_hand

    hand = default_hand()
    names = hand.link_names
    out = []
    for link in ("wrist", "palm"):
        i = names.index(link)
        k = hand._joint_index[i]
        local = np.eye(4)
        local[:3, :3] = hand.local_rot[i].double().numpy()
        local[:3, 3] = hand.local_pos[i].double().numpy()
        out.append((local, hand.axis_by_joint[k].double().numpy(), hand.joint_pos[i].double().numpy()))
    return tuple(out)  # type: ignore[return-value]


def _rodrigues(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    from dga_engine.sources.kinematics import rotation_about

    return rotation_about(axis, angle)


def forearm_to_palm(wrist: np.ndarray) -> np.ndarray:
    """(B, 4, 4) the engine's palm frame in its forearm frame for wrist angles (B, 2) = (WRJ1, WRJ0)."""
    wrist = np.atleast_2d(np.asarray(wrist, dtype=np.float64))
    b = len(wrist)
    out = np.tile(np.eye(4), (b, 1, 1))
    for j, (local, axis, jpos) in enumerate(_palm_chain()):
        rot = _rodrigues(axis, wrist[:, j])  # (B, 3, 3): rotation about the axis through the joint position
        step = np.tile(local, (b, 1, 1))
        joint = np.tile(np.eye(4), (b, 1, 1))
        joint[:, :3, :3] = rot
        joint[:, :3, 3] = jpos - rot @ jpos
        out = out @ step @ joint
    return out


def fold_wrist(
    translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same grasp with WRJ1 = WRJ0 = 0: the root pose moves so that the palm (and every finger) stays put."""
    t = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    q = np.array(joints, dtype=np.float64).reshape(-1, len(JOINT_NAMES))
    root = np.tile(np.eye(4), (len(t), 1, 1))
    root[:, :3, :3], root[:, :3, 3] = r, t
    palm = root @ forearm_to_palm(q[:, WRIST])
    zero = forearm_to_palm(np.zeros((1, 2)))[0]
    new_root = palm @ np.linalg.inv(zero)
    q[:, WRIST] = 0.0
    return new_root[:, :3, 3], new_root[:, :3, :3], q


def to_source(conv: PoseConverter, translation: np.ndarray, rotation: np.ndarray,
              joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Engine poses (B,3), (B,3,3), (B,24) -> the source model's root rotation (B,3,3), translation (B,3), joints (B,n).

    ``conv.convert`` of the result gives back the input (with the wrist folded into the root where the
    source has no wrist joints).
    """
    t = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    r = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    q = np.asarray(joints, dtype=np.float64).reshape(-1, len(JOINT_NAMES))
    if any(conv.source_index[k] < 0 for k in WRIST):
        t, r, q = fold_wrist(t, r, q)
    r_off, t_off = conv.root_offset[:3, :3], conv.root_offset[:3, 3]
    r_src = r @ r_off.T
    t_src = t - r_src @ t_off
    q_src = np.zeros((len(q), conv.hand.n_joints))
    mapped = np.flatnonzero(conv.source_index >= 0)
    q_src[:, conv.source_index[mapped]] = (q[:, mapped] - conv.offset[mapped]) * conv.sign[mapped]
    return r_src, t_src, q_src


def fingertip_gap_mm(translation_a, rotation_a, joints_a, translation_b, rotation_b, joints_b) -> np.ndarray:
    """(B,) the largest distance in mm between the engine's fingertips of two sets of poses."""
    a = engine_fingertips(translation_a, rotation_a, joints_a)
    b = engine_fingertips(translation_b, rotation_b, joints_b)
    return np.linalg.norm(a - b, axis=-1).max(axis=-1) * 1000.0
