"""Initial hand poses around an object: palm toward the surface from spread-out approach points.

As in DexGraspNet: approach points are spread over the object's convex hull (pushed out by
``hull_inflate``) by farthest-point sampling; at each, the palm faces inward along the hull normal,
tilted by up to ``tilt_max``, rolled uniformly about it, and backed off by a random distance in
[``distance_lower``, ``distance_upper``]; the fingers start open (thumb opposed) with jitter.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from dga_engine.hand import JOINT_NAMES, HandModel
from dga_engine.hand.model import farthest_point_sampling
from dga_engine.hand.rotations import matrix_to_rot6d
from dga_engine.synthesize.config import SynthesisConfig
from dga_engine.synthesize.energy import Pose

# Open hand with the thumb rotated under the palm (opposing the fingers), radians.
OPEN_HAND = {
    "WRJ1": 0.0, "WRJ0": 0.0,
    "FFJ3": 0.0, "FFJ2": 0.15, "FFJ1": 0.1, "FFJ0": 0.1,
    "MFJ3": 0.0, "MFJ2": 0.15, "MFJ1": 0.1, "MFJ0": 0.1,
    "RFJ3": 0.0, "RFJ2": 0.15, "RFJ1": 0.1, "RFJ0": 0.1,
    "LFJ4": 0.0, "LFJ3": 0.0, "LFJ2": 0.15, "LFJ1": 0.1, "LFJ0": 0.1,
    "THJ4": 0.6, "THJ3": 0.7, "THJ2": 0.0, "THJ1": 0.0, "THJ0": -0.2,
}  # fmt: skip


def open_hand_joints(hand: HandModel) -> torch.Tensor:
    return torch.tensor([OPEN_HAND[n] for n in JOINT_NAMES], dtype=hand.lower.dtype)


def palm_anchor(hand: HandModel, shift: float) -> tuple[int, torch.Tensor]:
    """The palm link index and the anchor point in the palm frame: the centre of its palm-side points,
    moved ``shift`` metres toward the knuckles (+z)."""
    palm = hand.link_names.index("palm")
    local = hand.inner_local[hand.inner_link == palm].mean(0).clone()
    local[2] += shift
    return palm, local


def _perpendicular_frame(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors (N,3) perpendicular to unit vectors a (N,3) and to each other."""
    helper = np.where(np.abs(a[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    e1 = np.cross(a, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    e2 = np.cross(a, e1)
    return e1, e2


def approach_points(
    mesh: trimesh.Trimesh, n: int, inflate: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n points (n,3) spread over the inflated convex hull, with outward hull normals (n,3)."""
    hull = mesh.convex_hull
    pts, face = trimesh.sample.sample_surface(hull, max(100 * n, 2000), seed=int(rng.integers(2**31)))
    normals = hull.face_normals[face]
    pick = farthest_point_sampling(np.asarray(pts), n, start=int(rng.integers(len(pts))))
    return np.asarray(pts)[pick] + inflate * normals[pick], normals[pick]


def initial_poses(hand: HandModel, mesh: trimesh.Trimesh, n: int, config: SynthesisConfig,
                  rng: np.random.Generator) -> Pose:
    """n initial poses around ``mesh`` (object frame, already scaled)."""
    dtype = hand.lower.dtype
    p, n_out = approach_points(mesh, n, config.hull_inflate, rng)
    # palm normal: inward normal tilted by up to tilt_max (uniform over the cone's solid angle), random azimuth
    cos_t = rng.uniform(np.cos(config.tilt_max), 1.0, n)
    sin_t = np.sqrt(1 - cos_t**2)
    phi = rng.uniform(0, 2 * np.pi, n)
    inward = -n_out
    e1, e2 = _perpendicular_frame(inward)
    a = cos_t[:, None] * inward + sin_t[:, None] * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)
    # palm frame in the object frame: its -y is the palm normal a; roll uniform about it
    roll = rng.uniform(0, 2 * np.pi, n)
    f1, f2 = _perpendicular_frame(a)
    x = np.cos(roll)[:, None] * f1 + np.sin(roll)[:, None] * f2
    y = -a
    z = np.cross(x, y)
    palm_world = np.stack([x, y, z], axis=-1)  # columns

    # joints: open hand + truncated jitter
    mu = open_hand_joints(hand).numpy().astype(np.float64)
    lo, hi = hand.lower.numpy().astype(np.float64), hand.upper.numpy().astype(np.float64)
    q = mu + rng.normal(size=(n, len(mu))) * config.jitter_strength * (hi - lo)
    q = np.clip(q, lo, hi)

    # Place the palm anchor at the approach distance along -a from the hull point.
    qt = torch.as_tensor(q, dtype=dtype)
    eye = torch.eye(3, dtype=dtype).expand(n, 3, 3)
    fk = hand.forward_kinematics(torch.zeros(n, 3, dtype=dtype), eye, qt)
    palm, anchor_local = palm_anchor(hand, config.anchor_shift)
    palm_rot = fk.rot[:, palm].double().numpy()  # palm frame in the forearm frame
    anchor = (fk.rot[:, palm] @ anchor_local).double().numpy() + fk.pos[:, palm].double().numpy()
    root_rot = palm_world @ np.transpose(palm_rot, (0, 2, 1))
    dist = rng.uniform(config.distance_lower, config.distance_upper, n)
    target = p - a * dist[:, None]
    t = target - np.einsum("bij,bj->bi", root_rot, anchor)
    return Pose(
        t=torch.as_tensor(t, dtype=dtype),
        r6=matrix_to_rot6d(torch.as_tensor(root_rot, dtype=dtype)),
        q=qt,
    )
