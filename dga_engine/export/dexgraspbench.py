"""DexGraspBench's Shadow Hand (the hand BODex grasps are evaluated with), as a kinematic model.

The numbers are in ``dexgraspbench_shadow.json`` (from DexGraspBench's ``assets/hand/shadow/customized.xml``).
:class:`BenchHand` compiles them into a MuJoCo model (bodies and hinge joints only) and does forward
kinematics with ``mj_kinematics``; it offers what :class:`~dga_engine.sources.kinematics.PoseConverter`
needs of a source hand (``joint_order``, ``n_joints``, ``fingertips``), so the same conversion and
fingertip check serve it. A DexGraspBench hand pose is 29 numbers: the free joint of the hand's root
(position, quaternion wxyz; the palm is 34 mm along its z) and the 22 joints in MuJoCo's tree order.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import mujoco
import numpy as np

from dga_engine.conventions import JOINT_NAMES
from dga_engine.sources.kinematics import PoseConverter

TABLE = Path(__file__).with_name("dexgraspbench_shadow.json")


class BenchHand:
    """DexGraspBench's Shadow Hand: batched FK through MuJoCo (float64)."""

    name = "dexgraspbench_shadow"

    def __init__(self) -> None:
        table = json.loads(TABLE.read_text())
        self.description: str = table["model"]
        self.engine_joint_map: dict[str, str] = dict(table["engine_joint_map"])
        spec = mujoco.MjSpec()
        bodies = {"root": spec.worldbody.add_body()}
        bodies["root"].name = "root"
        for b in table["bodies"]:
            body = bodies[b["parent"]].add_body()
            body.name = b["name"]
            body.pos = b["pos"]
            if "quat" in b:
                body.quat = b["quat"]
            body.explicitinertial = True
            body.mass, body.inertia = 0.01, [1e-6, 1e-6, 1e-6]
            if "joint" in b:
                j = body.add_joint()
                j.name = b["joint"]
                j.type = mujoco.mjtJoint.mjJNT_HINGE
                j.axis = b["axis"]
            bodies[b["name"]] = body
        for i, tip in enumerate(table["fingertips"]):
            site = bodies[tip["body"]].add_site()
            site.name = f"tip{i}"
            site.pos = tip["pos"]
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.joint_order: list[str] = [self.model.joint(j).name for j in range(self.model.njnt)]
        self.palm_body = self.model.body(table["palm"]).id
        self._tips = [self.model.site(f"tip{i}").id for i in range(len(table["fingertips"]))]

    @property
    def n_joints(self) -> int:
        return len(self.joint_order)

    def _frames(self, q: np.ndarray):
        self.data.qpos[:] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data

    def fingertips(
        self, q: np.ndarray, rotation: np.ndarray | None = None, translation: np.ndarray | None = None
    ) -> np.ndarray:
        """(B, 5, 3) ff, mf, rf, lf, th fingertips; root pose (B,3,3), (B,3) in the object frame (identity if None)."""
        q = np.atleast_2d(np.asarray(q, dtype=np.float64))
        b = len(q)
        r = (
            np.tile(np.eye(3), (b, 1, 1))
            if rotation is None
            else np.asarray(rotation, dtype=np.float64).reshape(b, 3, 3)
        )
        t = np.zeros((b, 3)) if translation is None else np.asarray(translation, dtype=np.float64).reshape(b, 3)
        out = np.empty((b, len(self._tips), 3))
        for i in range(b):
            d = self._frames(q[i])
            out[i] = d.site_xpos[self._tips] @ r[i].T + t[i]
        return out

    def zero_palm(self) -> np.ndarray:
        """(4, 4) the palm frame in the root frame at zero joints."""
        d = self._frames(np.zeros(self.n_joints))
        m = np.eye(4)
        m[:3, :3] = d.xmat[self.palm_body].reshape(3, 3)
        m[:3, 3] = d.xpos[self.palm_body]
        return m

    def axis_at_zero(self, joint: str) -> np.ndarray:
        d = self._frames(np.zeros(self.n_joints))
        return d.xaxis[self.model.joint(joint).id].copy()


@functools.lru_cache(maxsize=1)
def bench_hand() -> BenchHand:
    return BenchHand()


def _engine_zero_axes() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The engine's palm frame (4, 4) and joint axes in its forearm frame at the zero pose."""
    import torch

    from dga_engine.hand.model import default_hand

    hand = default_hand()
    dt = hand.local_pos.dtype
    with torch.no_grad():
        fk = hand.forward_kinematics(
            torch.zeros(1, 3, dtype=dt), torch.eye(3, dtype=dt)[None], torch.zeros(1, 24, dtype=dt)
        )
    rot, pos = fk.rot[0].double().numpy(), fk.pos[0].double().numpy()
    i = hand.link_names.index("palm")
    palm = np.eye(4)
    palm[:3, :3], palm[:3, 3] = rot[i], pos[i]
    axes = {
        JOINT_NAMES[k]: rot[li] @ hand.axis_by_joint[k].double().numpy()
        for li, k in enumerate(hand._joint_index)
        if k >= 0
    }
    return palm, axes


@functools.lru_cache(maxsize=1)
def bench_converter() -> PoseConverter:
    """DexGraspBench pose -> engine pose, derived as the sources' converters are (palms coincide at zero, signs from
    axes)."""
    hand = bench_hand()
    engine_palm, engine_axes = _engine_zero_axes()
    root_offset = hand.zero_palm() @ np.linalg.inv(engine_palm)
    index = np.full(len(JOINT_NAMES), -1, dtype=np.int64)
    sign = np.ones(len(JOINT_NAMES))
    for k, ours in enumerate(JOINT_NAMES):
        theirs = hand.engine_joint_map.get(ours)
        if theirs is None:
            continue
        index[k] = hand.joint_order.index(theirs)
        dot = float(hand.axis_at_zero(theirs) @ (root_offset[:3, :3] @ engine_axes[ours]))
        if abs(dot) < 0.99:
            raise ValueError(f"DexGraspBench joint {theirs} is not parallel to the engine's {ours} (cos {dot:.3f})")
        sign[k] = 1.0 if dot > 0 else -1.0
    return PoseConverter(hand, root_offset, index, sign, np.zeros(len(JOINT_NAMES)))  # type: ignore[arg-type]
