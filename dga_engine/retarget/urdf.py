"""A kinematics-only URDF of the engine's ShadowHand, generated from the MJCF at run time.

``dex-retargeting`` reads robots through pinocchio's URDF parser, and the gymnasium-robotics hand ships
only as MJCF; the URDF here is written from the compiled :func:`dga_engine.hand.mjcf.hand_model`, so it
can never drift from the hand the engine simulates:

- links are the MJCF bodies from ``robot0:forearm`` on, prefix dropped (``forearm``, ``wrist``, ``palm``,
  ``ffknuckle`` ... ``thdistal``); the root link is ``forearm``, the engine's grasp root frame;
- each hinge becomes a revolute joint with the engine's name (``WRJ1`` ... ``THJ0``), axis and limits;
  a hinge whose MJCF position is off its body's origin gets an extra fixed joint, so every URDF link
  frame equals its MJCF body frame;
- each fingertip site ``S_<f>tip`` becomes a fixed link ``<f>tip`` (the points
  :meth:`dga_engine.hand.HandModel.fingertips` returns).

No inertias, visuals or collision geometry: pinocchio needs none for kinematics, and the retargeter only
evaluates link positions. ``tests/retarget/test_urdf.py`` checks pinocchio's FK of this file against
``HandModel.forward_kinematics``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from pathlib import Path
from xml.sax.saxutils import quoteattr

import mujoco
import numpy as np

from dga_engine.hand.mjcf import FINGERTIP_SITES, JOINT_NAMES, PREFIX, ROOT_BODY, hand_model

ROBOT_NAME = "dga_shadowhand"
ROOT_LINK = "forearm"


def _rpy(quat_wxyz: np.ndarray) -> tuple[float, float, float]:
    """URDF roll-pitch-yaw (R = Rz(yaw) Ry(pitch) Rx(roll)) of a unit quaternion."""
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(quat_wxyz, dtype=np.float64))
    r = m.reshape(3, 3)
    pitch = float(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    if abs(r[2, 0]) < 1.0 - 1e-12:
        roll = float(np.arctan2(r[2, 1], r[2, 2]))
        yaw = float(np.arctan2(r[1, 0], r[0, 0]))
    else:  # gimbal lock: put everything in yaw
        roll, yaw = 0.0, float(np.arctan2(-r[0, 1], r[1, 1]))
    return roll, pitch, yaw


def _vec(v) -> str:
    return " ".join(repr(float(x)) for x in v)


def _origin(xyz, rpy=(0.0, 0.0, 0.0)) -> str:
    return f'<origin xyz="{_vec(xyz)}" rpy="{_vec(rpy)}"/>'


def urdf_text() -> str:
    """The URDF document (a string); deterministic for a given MJCF."""
    m = hand_model()
    root = m.body(ROOT_BODY).id
    names = {b: m.body(b).name.removeprefix(PREFIX) for b in range(root, m.nbody)}
    hinge_of_body = {int(m.jnt_bodyid[m.joint(PREFIX + j).id]): j for j in JOINT_NAMES}
    links = [f"<link name={quoteattr(names[root])}/>"]
    joints = []
    for b in range(root + 1, m.nbody):
        parent = names[int(m.body_parentid[b])]
        child = names[b]
        rpy = _rpy(m.body_quat[b])
        jname = hinge_of_body.get(b)
        if jname is None:
            joints.append(f'<joint name={quoteattr(child + "_fixed")} type="fixed"><parent link={quoteattr(parent)}/>'
                          f"<child link={quoteattr(child)}/>{_origin(m.body_pos[b], rpy)}</joint>")
            links.append(f"<link name={quoteattr(child)}/>")
            continue
        j = m.joint(PREFIX + jname).id
        jpos = np.asarray(m.jnt_pos[j], dtype=np.float64)
        lo, hi = m.jnt_range[j]
        # The hinge turns about an axis through jpos (body frame): origin at body_pos + R_body @ jpos.
        r = np.zeros(9)
        mujoco.mju_quat2Mat(r, m.body_quat[b])
        at = np.asarray(m.body_pos[b]) + r.reshape(3, 3) @ jpos
        hinge_link = child if not jpos.any() else f"{child}_hinge"
        joints.append(
            f'<joint name={quoteattr(jname)} type="revolute"><parent link={quoteattr(parent)}/>'
            f"<child link={quoteattr(hinge_link)}/>{_origin(at, rpy)}<axis xyz={quoteattr(_vec(m.jnt_axis[j]))}/>"
            f'<limit lower="{float(lo)!r}" upper="{float(hi)!r}" effort="10" velocity="3.14"/></joint>'
        )
        links.append(f"<link name={quoteattr(hinge_link)}/>")
        if hinge_link != child:
            joints.append(
                f'<joint name={quoteattr(child + "_offset")} type="fixed"><parent link={quoteattr(hinge_link)}/>'
                f"<child link={quoteattr(child)}/>{_origin(-jpos)}</joint>"
            )
            links.append(f"<link name={quoteattr(child)}/>")
    for site in FINGERTIP_SITES:
        s = m.site(PREFIX + site).id
        tip = site.removeprefix("S_")
        joints.append(
            f'<joint name={quoteattr(tip + "_fixed")} type="fixed"><parent '
            f'link={quoteattr(names[int(m.site_bodyid[s])])}/>'
            f"<child link={quoteattr(tip)}/>{_origin(m.site_pos[s], _rpy(m.site_quat[s]))}</joint>"
        )
        links.append(f"<link name={quoteattr(tip)}/>")
    body = "\n  ".join(links + joints)
    return f'<?xml version="1.0"?>\n<robot name="{ROBOT_NAME}">\n  {body}\n</robot>\n'


@functools.lru_cache(maxsize=1)
def urdf_path() -> str:
    """The URDF written once per process to a private temporary folder (named by its content hash)."""
    text = urdf_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = Path(tempfile.mkdtemp(prefix="dga-shadowhand-urdf-"))
    path = folder / f"{ROBOT_NAME}-{digest}.urdf"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return str(path)
