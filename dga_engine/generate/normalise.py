"""The diffused pose vector and its normalisation.

**Rotation is folded into the object** (as the reference code does), not diffused. A grasp (t, R, q) in
the object frame is seen from the hand: the object's points are rotated by R^T (about the object
origin) and the hand sits at identity orientation with translation t' = R^T t; the diffused vector is
``x = [t' (3), q (24)]`` (27-D). At sampling time R is drawn (uniform on SO(3)), the object is rotated
by R^T, x is sampled, and the grasp is (R t', R, q). Why:

- the pose lives in a flat space: no 6D/quaternion manifold to project back to, no double cover, and
  the noise schedule treats every coordinate alike;
- the grasp depends only on the relative pose of hand and object, and this representation is
  invariant to rotating both together, so the model never has to learn one grasp in many global
  orientations; t' is concentrated in a small box (the object sits in front of the palm), so its
  min-max bounds are tight and the translation is resolved finely;
- the orientation distribution of the output is whatever we draw R from (uniform by default), so
  generated grasps cover all approach directions by construction.
The cost: the object encoder runs once per sampled grasp (each has its own rotated object) instead of
once per object. Grouping (FPS + kNN) is rotation-invariant, so it is computed once per object and only
the grouped coordinates are rotated per grasp (see :mod:`dga_engine.generate.model`).

**Normalisation**: min-max per coordinate to [-1, 1], with bounds computed from the training data
(padded by a margin, with a minimum half-width so constant coordinates stay finite, and joint bounds
kept inside the hand's limits) and stored in the checkpoint. (The reference copied MultiDex's
translation bounds for every dataset, which squeezes or overflows other datasets' poses.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dga_engine.hand import rotations

Tensor = torch.Tensor

POSE_DIM = 27  # translation in the hand frame (3) + 24 joints
N_JOINTS = 24


def fold(translation: Tensor, rotation: Tensor) -> Tensor:
    """t' = R^T t: the object-origin-to-forearm vector in the forearm frame. (B,3),(B,3,3) -> (B,3)."""
    return (rotation.transpose(-1, -2) @ translation.unsqueeze(-1)).squeeze(-1)


def unfold(translation_hand: Tensor, rotation: Tensor) -> Tensor:
    """t = R t' (inverse of :func:`fold`)."""
    return (rotation @ translation_hand.unsqueeze(-1)).squeeze(-1)


def pose_vector(
    translation: np.ndarray, rotation_wxyz: np.ndarray, joints: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Grasps in the object frame -> (x (N,27) unnormalised, R (N,3,3)), float32."""
    R = rotations.quat_to_matrix(torch.as_tensor(rotation_wxyz, dtype=torch.float64))
    t_hand = fold(torch.as_tensor(translation, dtype=torch.float64), R)
    x = torch.cat([t_hand, torch.as_tensor(joints, dtype=torch.float64)], -1)
    return x.float().numpy(), R.float().numpy()


@dataclass
class PoseNormaliser:
    """Affine map of the 27-D pose to [-1, 1] per coordinate: x_n = 2 (x - lo) / (hi - lo) - 1.

    lo, hi: (27,) float64 bounds (metres for the first 3, radians for the joints).
    """

    lo: np.ndarray
    hi: np.ndarray

    def __post_init__(self) -> None:
        self.lo = np.asarray(self.lo, dtype=np.float64).reshape(POSE_DIM)
        self.hi = np.asarray(self.hi, dtype=np.float64).reshape(POSE_DIM)
        if not np.all(np.isfinite(self.lo)) or not np.all(np.isfinite(self.hi)) or np.any(self.hi <= self.lo):
            raise ValueError("pose bounds must be finite with hi > lo for all 27 coordinates")

    @classmethod
    def from_data(
        cls,
        x: np.ndarray,
        joint_lower: np.ndarray,
        joint_upper: np.ndarray,
        margin: float = 0.05,
        min_half_width: tuple[float, float] = (0.01, 0.02),
    ) -> PoseNormaliser:
        """Bounds from training poses x (N,27): min/max padded by ``margin`` x range on each side.

        min_half_width: (metres, radians) a coordinate's range is widened to at least twice this, so a
        coordinate that is constant in the data (e.g. a wrist joint the source fixed) stays finite.
        Joint bounds never leave [joint_lower, joint_upper] unless the data itself does.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != POSE_DIM or len(x) == 0:
            raise ValueError(f"need at least one pose of {POSE_DIM} values to compute bounds, got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("training poses contain non-finite values")
        lo, hi = x.min(0), x.max(0)
        pad = (hi - lo) * margin
        lo, hi = lo - pad, hi + pad
        half_min = np.array([min_half_width[0]] * 3 + [min_half_width[1]] * N_JOINTS)
        centre = (lo + hi) / 2
        half = np.maximum((hi - lo) / 2, half_min)
        lo, hi = centre - half, centre + half
        jl = np.minimum(np.asarray(joint_lower, np.float64), x[:, 3:].min(0))
        ju = np.maximum(np.asarray(joint_upper, np.float64), x[:, 3:].max(0))
        lo[3:] = np.clip(lo[3:], jl, ju)
        hi[3:] = np.clip(hi[3:], jl, ju)
        # a joint pinned at a limit in the data: keep a non-empty range inside the limits
        tight = hi[3:] - lo[3:] < 1e-6
        if np.any(tight):
            lo[3:][tight] = np.maximum(jl[tight], lo[3:][tight] - half_min[3:][tight])
            hi[3:][tight] = np.minimum(ju[tight], hi[3:][tight] + half_min[3:][tight])
        return cls(lo, hi)

    def normalise(self, x: Tensor) -> Tensor:
        lo, hi = self._t(x)
        return 2 * (x - lo) / (hi - lo) - 1

    def denormalise(self, xn: Tensor) -> Tensor:
        lo, hi = self._t(xn)
        return (xn + 1) / 2 * (hi - lo) + lo

    def _t(self, ref: Tensor) -> tuple[Tensor, Tensor]:
        return (torch.as_tensor(self.lo, dtype=ref.dtype, device=ref.device),
                torch.as_tensor(self.hi, dtype=ref.dtype, device=ref.device))

    def to_dict(self) -> dict:
        return {"kind": "minmax[-1,1]", "coordinates": "t_hand(3, metres) + joints(24, radians)",
                "lo": [float(v) for v in self.lo], "hi": [float(v) for v in self.hi]}

    @classmethod
    def from_dict(cls, d: dict) -> PoseNormaliser:
        return cls(np.asarray(d["lo"]), np.asarray(d["hi"]))
