"""Squeeze targets: where the joint servos aim during closing, before the pushes.

What the reference protocols do: DGA's Isaac Gym test takes the hand surface points within 5 mm of the
object, gives each a target 0.2 along the object's inward normal, and takes one Adam step (lr 0.5) on
the finger joints of the point-to-target loss; the stepped joints become the PD targets. DexGraspNet's
validator pushes the grasp 1 mm inward. Both make the touching fingers press into the object so that
friction can hold it.

What we do, with MuJoCo's own geometry and Jacobians (deterministic, ~0.1 ms per grasp):

1. at the grasp pose, collide the hand with the object with a contact margin of ``close_margin``
   (5 mm): every hand geom / object part pair closer than that yields its nearest point pair, with the
   contact normal ``n_i`` (pointing from the object into the hand geom, or the reverse: it is oriented
   here to point into the object);
2. the gradient of the reference's loss ``sum_i |p_i - (p_i + s n_i)|^2`` with respect to the joints at
   the current pose is ``g = -2 s sum_i J_i^T n_i``, where ``J_i`` is the translational Jacobian of the
   hand point ``p_i`` (``mj_jac`` on the hand geom's body); its descent direction is ``sum_i J_i^T n_i``;
3. per finger (FF, MF, RF, LF, TH) that has a point within the margin, that direction restricted to the
   finger's joints is scaled so that its largest entry is ``close_step`` radians (the reference's Adam
   step moves every involved joint by exactly lr; scaling per finger keeps the joints' proportions, so a
   barely involved abduction joint does not swing as far as the flexion joints). The wrist joints are
   left at the grasp pose unless ``squeeze_wrist``;
4. targets = grasp joints + that step. The servo then presses each touching finger into the object
   with up to ``kp * close_step`` N m per joint (capped at ``force_limit``).
"""

from __future__ import annotations

import mujoco
import numpy as np

from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.scene import FINGERS, Scene


def near_contacts(scene: Scene, data: mujoco.MjData, margin: float) -> list[tuple[int, np.ndarray, np.ndarray, float]]:
    """Hand-object point pairs closer than ``margin`` at the current ``data.qpos``.

    Returns a list of (hand body id, hand-side point (3,), unit normal into the object (3,), distance).
    ``data`` is left with kinematics at its qpos and its contact list overwritten (call mj_forward after).
    """
    m = scene.model
    saved = m.geom_margin[scene.obj_geoms].copy()
    m.geom_margin[scene.obj_geoms] = margin
    try:
        mujoco.mj_kinematics(m, data)
        mujoco.mj_collision(m, data)
    finally:
        m.geom_margin[scene.obj_geoms] = saved
    out = []
    for c in data.contact[: data.ncon]:
        g1, g2 = int(c.geom1), int(c.geom2)
        if scene.obj_geom_mask[g1] and scene.hand_geom_mask[g2]:
            hand_geom, sign = g2, -1.0  # frame normal points from geom1 (object) to geom2 (hand)
        elif scene.obj_geom_mask[g2] and scene.hand_geom_mask[g1]:
            hand_geom, sign = g1, 1.0  # normal points from the hand to the object
        else:
            continue
        if c.dist > margin:
            continue
        normal = sign * np.asarray(c.frame[:3])
        # MuJoCo's contact point is midway between the surfaces; move it onto the hand geom's surface.
        point = np.asarray(c.pos) - normal * (0.5 * c.dist)
        out.append((int(m.geom_bodyid[hand_geom]), point, normal, float(c.dist)))
    return out


def squeeze_targets(scene: Scene, data: mujoco.MjData, joints: np.ndarray, config: FilterConfig) -> tuple[np.ndarray, int]:
    """Servo targets (24,) for the closing phase, and how many hand-object point pairs drove them.

    ``data`` must hold the grasp pose (after :meth:`Scene.reset`).
    """
    m = scene.model
    pairs = near_contacts(scene, data, config.close_margin)
    targets = np.asarray(joints, dtype=np.float64).copy()
    if not pairs or config.close_step == 0:
        return targets, len(pairs)
    direction = np.zeros(m.nv)
    jacp = np.zeros((3, m.nv))
    for body, point, normal, _ in pairs:
        mujoco.mj_jac(m, data, jacp, None, point, body)
        direction += jacp.T @ normal
    step = np.zeros(m.nv)
    for f in range(len(FINGERS)):
        dofs = scene.finger_of_dof == f
        peak = np.abs(direction[dofs]).max() if dofs.any() else 0.0
        if peak > 1e-12:
            step[dofs] = config.close_step * direction[dofs] / peak
    if config.squeeze_wrist:
        wrist = scene.hand_dof[:2]
        peak = np.abs(direction[wrist]).max()
        if peak > 1e-12:
            step[wrist] = config.close_step * direction[wrist] / peak
    targets += step[scene.hand_dof]
    return targets, len(pairs)
