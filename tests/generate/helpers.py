"""Small grasp-like data for the generator's tests: palm-facing hand poses around an object."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from dga_engine.dataset.schema import pose_table
from dga_engine.hand import default_hand
from dga_engine.hand.rotations import matrix_to_quat


def palm_poses(
    n: int, half_extent: float = 0.03, seed: int = 0, spread: tuple[float, float] = (-0.01, 0.03)
) -> dict[str, np.ndarray]:
    """n hand poses whose palm faces the object origin from random directions, at a palm distance of
    ``half_extent`` plus a value in ``spread`` (negative: the palm starts inside), fingers half-closed."""
    hand = default_hand()
    rng = np.random.default_rng(seed)
    palm = hand.link_names.index("palm")
    local = hand.inner_local[hand.inner_link == palm].mean(0)  # palm centre in the palm frame
    fk = hand.forward_kinematics(torch.zeros(1, 3), torch.eye(3)[None], torch.zeros(1, 24))  # wrist straight
    anchor = (fk.rot[0, palm] @ local + fk.pos[0, palm]).double().numpy()  # palm centre, forearm frame
    # the palm side faces -y of the forearm frame; fingers extend along +z
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)  # approach direction: object -> hand
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    z = np.cross(d, helper)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    ang = rng.uniform(0, 2 * np.pi, n)[:, None]
    z = np.cos(ang) * z + np.sin(ang) * np.cross(d, z)
    y = d  # the forearm's -y points toward the object, so +y points away along d
    x = np.cross(y, z)
    R = np.stack([x, y, z], -1)  # columns: forearm axes in the object frame
    dist = half_extent + rng.uniform(*spread, size=(n, 1))
    t = d * dist - np.einsum("nij,j->ni", R, anchor)
    lo, hi = hand.lower.double().numpy(), hand.upper.double().numpy()
    q = lo + (hi - lo) * np.clip(rng.uniform(0.2, 0.5, size=(n, 24)), 0, 1)
    q[:, :2] = 0.0  # wrist straight
    quat = matrix_to_quat(torch.as_tensor(R)).numpy()
    return {"translation": t.astype(np.float32), "rotation": quat.astype(np.float32), "joints": q.astype(np.float32)}


def palm_grasp_table(object_id: str, n: int, seed: int = 0, round_: int = 0, **kw) -> pa.Table:
    """n palm-facing grasps of one object (:func:`palm_poses`) as GRASP_SCHEMA rows: generator training data."""
    p = palm_poses(n, seed=seed, **kw)
    return pose_table(object_id, p["translation"], p["rotation"], p["joints"], source="synthesis",
                      source_record_id=[f"test:{seed}:{i}" for i in range(n)], round_=round_, generator="test")
