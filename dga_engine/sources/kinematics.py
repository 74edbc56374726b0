"""The sources' own hand models, and the conversion of their poses into the engine's convention.

Two hand models stand behind the source datasets, and neither is the engine's MJCF:

- ``sr_grasp_description`` (``sr_grasp_description.json``): the ShadowHand URDF used by MultiDex
  (GenDexGrasp), RealDex and the DGA release. Root link ``forearm``; 24 revolute joints named
  WRJ2, WRJ1, FFJ4..1, MFJ4..1, RFJ4..1, LFJ5..1, THJ5..1 (pytorch_kinematics order); fingertip
  frames are the fixed ``*tip`` links.
- ``dexgraspnet_mjcf`` (``dexgraspnet_mjcf.json``): DexGraspNet's ``shadow_hand_wrist_free.xml``, also
  used by UniDexGrasp. Root body ``robot0:palm`` (free joint; no wrist joints); 22 joints with the
  engine's names; fingertip frames are the ``S_*tip`` sites.

Their kinematic numbers are data in this package (taken from the published models); :class:`SourceHand`
does their forward kinematics in numpy (float64). :class:`PoseConverter` maps a pose of one of them to
the engine's (forearm root, 24 joints in ``JOINT_NAMES`` order):

- joints map by name (``engine_joint_map`` in the table); the sign of each is derived by comparing the
  two joint axes in a common frame at the zero pose (+1 parallel, -1 anti-parallel); joints the source
  lacks (DexGraspNet's wrist) are fixed at 0;
- the root transform is the fixed offset between the source's root frame and the engine's forearm,
  derived by making the two palm frames coincide at the zero pose;
- :meth:`PoseConverter.fingertip_residual_mm` checks the result by forward kinematics: the engine's
  fingertips (``HandModel.fingertips``) against the source model's own.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dga_engine.hand.mjcf import JOINT_NAMES
from dga_engine.threads import compute_threads

_HERE = Path(__file__).parent
HAND_MODELS = {"sr_grasp_description": "sr_grasp_description.json", "dexgraspnet_mjcf": "dexgraspnet_mjcf.json"}


# ---- small numpy rotation helpers (float64; the torch ones in dga_engine.hand.rotations are for float32 batches) ----


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotations (..., 3, 3) by ``angle`` (...) about the unit ``axis`` (3,)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    a = np.asarray(angle, dtype=np.float64)[..., None, None]
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    r, p, y = rpy
    return rotation_about([0, 0, 1], y) @ rotation_about([0, 1, 0], p) @ rotation_about([1, 0, 0], r)


def quat_wxyz_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def euler_sxyz_matrix(angles: np.ndarray) -> np.ndarray:
    """transforms3d ``euler2mat(a, b, c, 'sxyz')`` (DexGraspNet's WRJRx/y/z): ``Rz(c) @ Ry(b) @ Rx(a)``."""
    angles = np.asarray(angles, dtype=np.float64)
    return (
        rotation_about([0, 0, 1], angles[..., 2])
        @ rotation_about([0, 1, 0], angles[..., 1])
        @ rotation_about([1, 0, 0], angles[..., 0])
    )


def axis_angle_matrix(aa: np.ndarray) -> np.ndarray:
    """(..., 3) axis*angle -> (..., 3, 3)."""
    aa = np.asarray(aa, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1)
    safe = np.where(angle > 1e-12, angle, 1.0)
    axis = aa / safe[..., None]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(aa.shape[:-1] + (3, 3))
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def rot6d_robust_matrix(d6: np.ndarray) -> np.ndarray:
    """The 6D decoding MultiDex and the DGA code use (``robust_compute_rotation_matrix_from_ortho6d``).

    The two stored vectors are the first two columns of R, not necessarily orthonormal. Both are
    normalised, then made orthogonal symmetrically about their bisector (not Gram-Schmidt), so an
    unnormalised 6D decodes exactly as the source's own model decodes it.
    """
    d6 = np.asarray(d6, dtype=np.float64)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-8)

    x, y = unit(d6[..., 0:3]), unit(d6[..., 3:6])
    middle, orthmid = unit(x + y), unit(x - y)
    x, y = unit(middle + orthmid), unit(middle - orthmid)
    z = unit(np.cross(x, y))
    return np.stack([x, y, z], axis=-1)


# ---- source hand models ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Joint:
    name: str
    kind: str  # revolute | fixed
    parent: str
    child: str
    origin: np.ndarray  # (4, 4) child frame at zero joint angle, in the parent frame
    axis: np.ndarray  # (3,) unit, child frame
    lower: float
    upper: float


class SourceHand:
    """A source's hand model from its kinematic table: batched numpy FK (float64)."""

    def __init__(self, name: str) -> None:
        if name not in HAND_MODELS:
            raise KeyError(f"unknown source hand model {name!r}; known: {sorted(HAND_MODELS)}")
        table = json.loads((_HERE / HAND_MODELS[name]).read_text())
        self.name = name
        self.description: str = table["model"]
        self.root: str = table["root"]
        self.palm: str = table["palm"]
        self.joint_order: list[str] = list(table["joint_order"])
        self.fingertip_links: list[str] = list(table["fingertips"])
        self.engine_joint_map: dict[str, str] = dict(table["engine_joint_map"])
        joints = []
        for j in table["joints"]:
            origin = np.eye(4)
            origin[:3, 3] = j["xyz"]
            origin[:3, :3] = quat_wxyz_matrix(j["quat_wxyz"]) if "quat_wxyz" in j else rpy_matrix(j["rpy"])
            axis = np.asarray(j.get("axis", [0, 0, 1]), dtype=np.float64)
            joints.append(_Joint(j["name"], j["type"], j["parent"], j["child"], origin, axis / np.linalg.norm(axis),
                                 float(j.get("lower", 0.0)), float(j.get("upper", 0.0))))
        # Topological order: parents before children (the tables are written that way; check it).
        known = {self.root}
        for j in joints:
            if j.parent not in known:
                raise ValueError(f"{name}: joint {j.name} has parent {j.parent} before it is defined")
            known.add(j.child)
        self.joints = joints
        self.links = sorted(known)
        index = {j.name: j for j in joints}
        missing = [n for n in self.joint_order if n not in index or index[n].kind != "revolute"]
        if missing:
            raise ValueError(f"{name}: joint_order names unknown revolute joints {missing}")
        self._qindex = {n: i for i, n in enumerate(self.joint_order)}

    @property
    def n_joints(self) -> int:
        return len(self.joint_order)

    def limits(self) -> tuple[np.ndarray, np.ndarray]:
        index = {j.name: j for j in self.joints}
        return (
            np.array([index[n].lower for n in self.joint_order]),
            np.array([index[n].upper for n in self.joint_order]),
        )

    def forward(
        self, q: np.ndarray, rotation: np.ndarray | None = None, translation: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Link frames (B, 4, 4) in the object frame: ``T_obj_root @ ... ``; q is (B, n_joints) in joint_order."""
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        if q.shape[-1] != self.n_joints:
            raise ValueError(f"{self.name}: expected {self.n_joints} joint values, got {q.shape[-1]}")
        b = q.shape[0]
        root = np.tile(np.eye(4), (b, 1, 1))
        if rotation is not None:
            root[:, :3, :3] = np.asarray(rotation, dtype=np.float64).reshape(b, 3, 3)
        if translation is not None:
            root[:, :3, 3] = np.asarray(translation, dtype=np.float64).reshape(b, 3)
        frames = {self.root: root}
        for j in self.joints:
            t = frames[j.parent] @ j.origin
            if j.kind == "revolute":
                m = np.tile(np.eye(4), (b, 1, 1))
                m[:, :3, :3] = rotation_about(j.axis, q[:, self._qindex[j.name]])
                t = t @ m
            frames[j.child] = t
        return frames

    def fingertips(
        self, q: np.ndarray, rotation: np.ndarray | None = None, translation: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, 5, 3) fingertip positions ff, mf, rf, lf, th."""
        frames = self.forward(q, rotation, translation)
        return np.stack([frames[name][:, :3, 3] for name in self.fingertip_links], axis=1)

    def joint_axis_at_zero(self, name: str) -> np.ndarray:
        """The axis of joint ``name`` in the root frame at the zero pose."""
        frames = self.forward(np.zeros((1, self.n_joints)))
        j = next(j for j in self.joints if j.name == name)
        return (frames[j.child][0, :3, :3] @ j.axis)


@functools.cache
def source_hand(name: str) -> SourceHand:
    return SourceHand(name)


# ---- the engine's hand at the zero pose (from the MJCF, through HandModel) ----------------------------


def _engine_hand():
    from dga_engine.hand.model import default_hand

    return default_hand()


def engine_fingertips(translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(B, 5, 3) the engine's fingertips (``HandModel.fingertips``) for poses in its convention."""
    import torch

    hand = _engine_hand()
    dtype = hand.local_pos.dtype
    t = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    # Evaluate relative to the batch's mean root so float32 keeps sub-micron precision far from the origin.
    centre = t.mean(axis=0)
    with compute_threads(1):  # tiny batches: thread hand-offs cost far more than the arithmetic
        return _engine_fingertips(hand, torch, t - centre, rotation, joints, dtype) + centre


def _engine_fingertips(hand, torch, t, rotation, joints, dtype) -> np.ndarray:
    with torch.no_grad():
        fk = hand.forward_kinematics(
            torch.as_tensor(t, dtype=dtype),
            torch.as_tensor(np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3), dtype=dtype),
            torch.as_tensor(np.asarray(joints, dtype=np.float64).reshape(-1, len(JOINT_NAMES)), dtype=dtype),
        )
        return hand.fingertips(fk).double().numpy()


@functools.lru_cache(maxsize=1)
def _engine_zero() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The engine's palm frame (4, 4) in the forearm frame, and each joint's axis in the forearm frame, at zero."""
    import torch

    hand = _engine_hand()
    dtype = hand.local_pos.dtype
    with torch.no_grad():
        fk = hand.forward_kinematics(torch.zeros(1, 3, dtype=dtype), torch.eye(3, dtype=dtype)[None],
                                     torch.zeros(1, len(JOINT_NAMES), dtype=dtype))
    rot, pos = fk.rot[0].double().numpy(), fk.pos[0].double().numpy()
    palm = np.eye(4)
    i = hand.link_names.index("palm")
    palm[:3, :3], palm[:3, 3] = rot[i], pos[i]
    axes = {}
    axis_by_joint = hand.axis_by_joint.double().numpy()
    for link_i, k in enumerate(hand._joint_index):
        if k >= 0:
            axes[JOINT_NAMES[k]] = rot[link_i] @ axis_by_joint[k]
    return palm, axes


# ---- conversion ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoseConverter:
    """Maps poses of a source hand model to the engine's convention.

    root_offset: (4, 4) the engine's forearm frame expressed in the source's root frame.
    source_index: (24,) index into the source joint vector for each engine joint (-1: fixed at 0).
    sign: (24,) +1 / -1 per engine joint (derived from the axes); offset: (24,) radians added after.
    """

    hand: SourceHand
    root_offset: np.ndarray
    source_index: np.ndarray
    sign: np.ndarray
    offset: np.ndarray

    @classmethod
    def for_model(cls, name: str) -> PoseConverter:
        hand = source_hand(name)
        engine_palm, engine_axes = _engine_zero()
        src_zero = hand.forward(np.zeros((1, hand.n_joints)))
        src_palm = src_zero[hand.palm][0]
        # Palms coincide at zero: T_srcroot_forearm = T_srcroot_palm @ inv(T_forearm_palm).
        root_offset = src_palm @ np.linalg.inv(engine_palm)
        index = np.full(len(JOINT_NAMES), -1, dtype=np.int64)
        sign = np.ones(len(JOINT_NAMES))
        for k, ours in enumerate(JOINT_NAMES):
            theirs = hand.engine_joint_map.get(ours)
            if theirs is None:
                continue
            index[k] = hand.joint_order.index(theirs)
            a_src = hand.joint_axis_at_zero(theirs)
            a_ours = root_offset[:3, :3] @ engine_axes[ours]
            dot = float(a_src @ a_ours)
            if abs(dot) < 0.99:
                raise ValueError(f"{name}: joint {theirs} is not parallel to the engine's {ours} (cos {dot:.3f})")
            sign[k] = 1.0 if dot > 0 else -1.0
        return cls(hand, root_offset, index, sign, np.zeros(len(JOINT_NAMES)))

    def joints(self, q_src: np.ndarray) -> np.ndarray:
        """(B, n_src) source joint vectors -> (B, 24) engine joints."""
        q_src = np.atleast_2d(np.asarray(q_src, dtype=np.float64))
        gathered = np.where(self.source_index >= 0, q_src[:, np.maximum(self.source_index, 0)], 0.0)
        return gathered * self.sign + self.offset

    def convert(
        self, rotation: np.ndarray, translation: np.ndarray, q_src: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source root poses (B,3,3), (B,3) in the object frame and joints (B, n_src) -> engine (t, R, q).

        Returns translation (B, 3), rotation (B, 3, 3) of the engine's forearm in the object frame, and
        joints (B, 24) in JOINT_NAMES order; nothing is clamped to the engine's joint limits.
        """
        rotation = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
        translation = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
        r_off, t_off = self.root_offset[:3, :3], self.root_offset[:3, 3]
        rot = rotation @ r_off
        trans = translation + (rotation @ t_off)
        return trans, rot, self.joints(q_src)

    def fingertip_residual_mm(self, rotation: np.ndarray, translation: np.ndarray, q_src: np.ndarray) -> np.ndarray:
        """(B, 5) distance in mm between the source model's fingertips and the converted grasp's."""
        theirs = self.hand.fingertips(q_src, rotation, translation)
        t, r, q = self.convert(rotation, translation, q_src)
        ours = engine_fingertips(t, r, q)
        return np.linalg.norm(theirs - ours, axis=-1) * 1000.0


@functools.cache
def converter(name: str) -> PoseConverter:
    """The (cached) converter for source hand model ``name`` (see :data:`HAND_MODELS`)."""
    return PoseConverter.for_model(name)
