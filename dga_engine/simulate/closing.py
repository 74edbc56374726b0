"""Squeeze targets: where the joint servos aim during closing, before the pushes.

What the reference protocols do: DGA's Isaac Gym test (``_set_normal_force_pose``) takes the hand
surface points within 5 mm of the nearest of 2048 object surface samples, gives each a target 0.2 along
*the hand point's* normal, and takes one Adam step (lr 0.5) on the 22 finger joints of the summed
point-to-target distances; the stepped joints become the PD targets for 200 steps. DexGraspNet's
validator pushes the grasp 1 mm inward. Both make the touching fingers press into the object so that
friction can hold it.

``FilterConfig.squeeze`` chooses between two implementations:

``adam-sign`` (:func:`adam_sign_targets`, the ``dga-reference`` preset) - the reference's step, computed
with the torch hand model on the hand's surface points (64 per collision link) and the object's 2048
standard points. Adam's first step from zero moments is ``-lr * g / (|g| + eps)`` per joint, so every
finger joint with a non-zero gradient moves by exactly ``lr`` = 0.5 rad in the sign of
``sum_i n_i . dp_i/dq`` and the others stay; the 0.2 target distance never matters (the gradient of
``|p - (p + 0.2 n)|`` is the unit normal). The reference's normals are transformed as points (its
``get_surface_points_and_normals`` multiplies ``(n, 1)`` by the link's homogeneous matrix), so each
"normal" is the outward normal plus the link's origin in the hand's root frame (~0.1-0.45 m for the
finger links); ``squeeze_normal_offset`` reproduces that (with our link origins and the DGA hand's root,
:data:`DGA_ROOT_OFFSET`), off gives the true normals.

``jacobian`` (:func:`squeeze_targets`, the default) - with MuJoCo's own geometry and Jacobians
(deterministic, ~0.1 ms per grasp):

1. at the grasp pose, collide the hand with the object with a contact margin of ``close_margin``
   (5 mm): every hand geom / object part pair closer than that yields its nearest point pair, with the
   contact normal ``n_i`` (pointing from the object into the hand geom, or the reverse: it is oriented
   here to point into the object) - the contact normal, where the reference uses the hand surface
   point's own normal;
2. the gradient of the reference's loss ``sum_i |p_i - (p_i + s n_i)|`` with respect to the joints at
   the current pose is ``g = -sum_i J_i^T n_i`` (unit normals), where ``J_i`` is the translational
   Jacobian of the hand point ``p_i`` (``mj_jac`` on the hand geom's body); its descent direction is
   ``sum_i J_i^T n_i``;
3. per finger (FF, MF, RF, LF, TH) that has a point within the margin, that direction restricted to the
   finger's joints is scaled so that its largest entry is ``close_step`` radians. This is where we
   depart from the reference: its Adam step moves *every* involved joint by exactly lr, whatever its
   share of the gradient; scaling per finger keeps the joints' proportions, so a barely involved
   abduction joint does not swing as far as the flexion joints. The wrist joints are left at the grasp
   pose unless ``squeeze_wrist``;
4. targets = grasp joints + that step. The servo then presses each touching finger into the object
   with up to ``kp * close_step`` N m per joint (capped at ``force_limit``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import mujoco
import numpy as np

from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.scene import FINGERS, Scene

if TYPE_CHECKING:
    from dga_engine.hand.model import HandModel
    from dga_engine.physics.penetration import ObjectCloud

ADAM_EPS = 1e-8  # torch.optim.Adam's default eps
# Our forearm frame's origin in the DGA hand's root frame (sr_grasp_description: palms coincide at the zero
# pose; dga_engine.sources.kinematics.PoseConverter's root_offset, which a test checks this against).
# The reference's offset "normals" add each link's origin in that root frame.
DGA_ROOT_OFFSET = (0.0, -0.010, -0.043)
N_WRIST = 2  # WRJ1, WRJ0 lead JOINT_NAMES; the reference steps only the finger joints after them


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


def squeeze_targets(
    scene: Scene, data: mujoco.MjData, joints: np.ndarray, config: FilterConfig
) -> tuple[np.ndarray, int]:
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


def adam_sign_targets(hand: HandModel, cloud: ObjectCloud, translation: np.ndarray, rotation: np.ndarray,
                      joints: np.ndarray, config: FilterConfig) -> tuple[np.ndarray, np.ndarray]:
    """The reference's squeeze targets (B, 24) and how many hand points drove each (B,).

    hand: the torch HandModel; cloud: the object's 2048 standard points (object frame, scaled), whose
    k-d tree finds each hand point's nearest sample. translation (B, 3), rotation (B, 3, 3), joints
    (B, 24): the grasps. A hand point takes part when its nearest sample is closer than
    ``close_margin``; the step is one Adam step of ``lr = squeeze_lr`` on the finger joints (see the
    module docstring); the wrist joints keep the grasp pose. Targets are not clamped to the joint
    limits (nor are the reference's): a joint at its limit presses against it.
    """
    import torch

    dtype = hand.local_pos.dtype
    q = torch.as_tensor(np.asarray(joints), dtype=dtype)
    t = torch.as_tensor(np.asarray(translation), dtype=dtype)
    r = torch.as_tensor(np.asarray(rotation), dtype=dtype)
    with torch.enable_grad():
        qv = q.clone().requires_grad_(True)
        fk = hand.forward_kinematics(t, r, qv)
        points = hand.surface_points(fk)  # (B, N, 3)
        with torch.no_grad():
            normals = hand.surface_normals(fk)
            if config.squeeze_normal_offset:
                root = torch.as_tensor(DGA_ROOT_OFFSET, dtype=dtype)
                offset = fk.pos[:, hand.surface_link] - t[:, None] + (r @ root)[:, None]
                normals = normals + offset
            dist, _ = cloud.tree.query(points.detach().reshape(-1, 3).numpy(), k=1)
            near = torch.as_tensor(dist.reshape(points.shape[:2]) < config.close_margin)
            unit = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12) * near[..., None]
        # d/dq of sum_i |p_i - (p_i0 + 0.2 n_i)| at p = p0 is -sum_i n_i/|n_i| . dp_i/dq
        (grad,) = torch.autograd.grad(-(unit * points).sum(), qv)
    step = -config.squeeze_lr * grad / (grad.abs() + ADAM_EPS)
    step[:, :N_WRIST] = 0.0
    return (q + step).detach().numpy().astype(np.float64), near.sum(dim=1).numpy()
