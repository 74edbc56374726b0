"""The MuJoCo scene of the filter: the fixed ShadowHand with one servo per joint, and a free object.

The hand's forearm frame is the world frame (the grasp's root frame), so the hand never moves as a
whole; the object is placed at the inverse of the grasp's root pose. One scene is compiled per object
(and scale) and reused for every grasp of that object: a grasp only sets ``qpos``, ``ctrl`` and the
object's pose in a reset ``MjData``.

Changes to the gymnasium-robotics MJCF, all made here with :class:`mujoco.MjSpec` (never in files):

- the 20 tendon-driven actuators, the 44 tendons and the sensors are deleted and replaced by one
  position servo per joint (grasp records set the coupled J1/J0 joints independently);
- visual meshes are deleted (they never collide), and the two 1 mm placeholder boxes of the thumb base
  and hub, which collide by accident of their default class, stop colliding;
- joint friction loss is removed (it adds 24 constraints per step and the servos hold the joints);
- gravity is off, the hand base is fixed (it has no joint to the world);
- the object's free joint gets the configured velocity damping (PhysX-style rates
  ``object_linear_damping`` / ``object_angular_damping`` in 1/s, as MuJoCo dof damping = rate x the
  dof's inertia ``dof_M0``: the mass for the three translations, the body's inertia about its frame
  axes for the rotations; integrated implicitly by the implicit integrators).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mujoco
import numpy as np
import trimesh

from dga_engine.hand.mjcf import JOINT_NAMES, PREFIX, hand_spec
from dga_engine.simulate.config import FilterConfig

OBJECT_BODY = "object"
OBJECT_JOINT = "object:free"

# Joint-name prefixes of the five kinematic chains that squeeze separately (see closing.py).
FINGERS = ("FF", "MF", "RF", "LF", "TH")

_INTEGRATORS = {
    "euler": mujoco.mjtIntegrator.mjINT_EULER,
    "implicit": mujoco.mjtIntegrator.mjINT_IMPLICIT,
    "implicitfast": mujoco.mjtIntegrator.mjINT_IMPLICITFAST,
}


@dataclass
class Scene:
    """A compiled scene and its index arrays.

    model/data: the MuJoCo model and a scratch MjData for it.
    hand_qpos (24,), hand_dof (24,): qpos/dof addresses of the hand joints in JOINT_NAMES order;
    actuators drive them in the same order (ctrl index k = joint k).
    obj_qpos: qpos address of the object's free joint (pos 3, quat wxyz 4); obj_dof: its dof address (6);
    both -1 for a fixed object.
    obj_body: the object's body id; obj_geoms: its geom ids; hand_geom_finger: geom id -> finger index
    (0..4 for FF, MF, RF, LF, TH; -1 for palm, wrist and forearm).
    mass (kg), volume (m^3): of the object at this scale.
    """

    model: mujoco.MjModel
    data: mujoco.MjData
    hand_qpos: np.ndarray
    hand_dof: np.ndarray
    obj_qpos: int
    obj_dof: int
    obj_mocap: int  # mocap index when the object is fixed (build_scene(fixed_object=True)), else -1
    obj_body: int
    obj_geoms: np.ndarray
    obj_geom_mask: np.ndarray  # (ngeom,) bool
    hand_geoms: np.ndarray
    hand_geom_mask: np.ndarray  # (ngeom,) bool
    finger_of_dof: np.ndarray  # (nv,) finger index of each hand dof, -1 for wrist and the object
    mass: float
    volume: float
    lower: np.ndarray  # (24,) joint limits
    upper: np.ndarray

    def reset(
        self, translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray, data: mujoco.MjData | None = None
    ) -> mujoco.MjData:
        """Reset ``data`` to a grasp: hand joints at ``joints``, servo targets there, object at the inverse root pose.

        translation (3,), rotation (3, 3): the grasp's root pose in the object frame (p_obj = R p_root + t).
        """
        d = self.data if data is None else data
        mujoco.mj_resetData(self.model, d)
        d.qpos[self.hand_qpos] = joints
        d.ctrl[:] = joints
        pos, quat = object_pose(translation, rotation)
        if self.obj_mocap >= 0:
            d.mocap_pos[self.obj_mocap] = pos
            d.mocap_quat[self.obj_mocap] = quat
        else:
            d.qpos[self.obj_qpos : self.obj_qpos + 3] = pos
            d.qpos[self.obj_qpos + 3 : self.obj_qpos + 7] = quat
        mujoco.mj_forward(self.model, d)
        return d


def object_pose(translation: np.ndarray, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object's pose in the hand (world) frame: the inverse of the root pose, as (pos, quat wxyz)."""
    r = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    rt = r.T
    pos = -rt @ t
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, rt.reshape(-1))
    return pos, quat


def hand_settings(config: FilterConfig) -> tuple:
    """The settings that shape the scene's hand (the key of its cached spec)."""
    return (config.kp, config.dampratio, config.force_limit, config.self_collision)


@functools.lru_cache(maxsize=4)
def _hand_spec_for(settings: tuple) -> mujoco.MjSpec:
    """The hand part of the scene for the hand-related settings (cached; callers copy it)."""
    kp, dampratio, force_limit, self_collision = settings
    spec = hand_spec()
    for a in list(spec.actuators):
        spec.delete(a)
    for t in list(spec.tendons):
        spec.delete(t)
    for s in list(spec.sensors):
        spec.delete(s)
    if not self_collision:
        for p in list(spec.pairs):
            spec.delete(p)
    for g in list(spec.geoms):
        if g.name.startswith(PREFIX + "V_") and g.contype == 0 and g.conaffinity == 0:
            spec.delete(g)
        elif not g.name.startswith(PREFIX + "C_"):
            g.contype, g.conaffinity = 0, 0  # the thumb's 1 mm placeholder boxes
    for m in list(spec.meshes):
        if m.name != PREFIX + "forearm_cvx":
            spec.delete(m)
    for name in JOINT_NAMES:
        j = spec.joint(PREFIX + name)
        j.frictionloss = 0.0
        j.margin = 0.0
        act = spec.add_actuator()
        act.name = "servo:" + name
        act.target = PREFIX + name
        act.trntype = mujoco.mjtTrn.mjTRN_JOINT
        act.set_to_position(kp=kp, dampratio=dampratio)
        if force_limit > 0:
            act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
            act.forcerange = [-force_limit, force_limit]
    return spec


def _add_parts(
    spec: mujoco.MjSpec, parts: list[trimesh.Trimesh], scale: float, config: FilterConfig, fixed: bool
) -> None:
    body = spec.worldbody.add_body()
    body.name = OBJECT_BODY
    if fixed:
        body.mocap = True  # posed through data.mocap_pos/quat, immovable
    else:
        joint = body.add_joint()
        joint.name = OBJECT_JOINT
        joint.type = mujoco.mjtJoint.mjJNT_FREE
    for i, part in enumerate(parts):
        mesh = spec.add_mesh()
        mesh.name = f"object:part{i:03d}"
        mesh.uservert = np.asarray(part.vertices, dtype=np.float64).reshape(-1).tolist()
        mesh.userface = np.asarray(part.faces, dtype=np.int64).reshape(-1).tolist()
        mesh.scale = [scale, scale, scale]
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_CONVEX  # parts are convex: MuJoCo collides their hulls
        geom = body.add_geom()
        geom.name = f"object:part{i:03d}"
        geom.type = mujoco.mjtGeom.mjGEOM_MESH
        geom.meshname = mesh.name
        geom.density = config.density
        geom.friction = [config.friction, config.torsional_friction, 0.0001]
        geom.condim = config.condim
        geom.contype = 0  # the object collides with the hand (hand contype 1), not with itself
        geom.conaffinity = 1
        geom.margin = config.object_margin


def scene_spec(
    parts: list[trimesh.Trimesh], scale: float, config: FilterConfig, fixed_object: bool = False
) -> mujoco.MjSpec:
    """The filter's scene for one object (its convex parts in the object frame, metres) at ``scale``, as an MjSpec.

    Everything the filter sets is in the spec (so ``spec.to_xml()`` writes the scene the filter simulates).
    ``fixed_object``: the object is an immovable mocap body instead of a free one (for constructing
    grasps by closing the fingers on it, as the tests and the benchmark do); the filter never uses it.
    """
    if not parts:
        raise ValueError("the object has no convex parts; re-ingest it (dga-engine ingest ...)")
    base = _hand_spec_for(hand_settings(config))
    spec = base.copy()
    _add_parts(spec, parts, float(scale), config, fixed_object)
    opt = spec.option
    opt.timestep = config.timestep
    opt.gravity = [0.0, 0.0, 0.0]
    opt.integrator = _INTEGRATORS[config.integrator]
    opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
    opt.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    opt.iterations = config.solver_iterations
    opt.tolerance = config.solver_tolerance
    opt.noslip_iterations = config.noslip_iterations
    flags = int(mujoco.mjtDisableBit.mjDSBL_GRAVITY) | int(mujoco.mjtDisableBit.mjDSBL_FRICTIONLOSS)
    opt.disableflags = flags
    _multiccd(opt, config.multiccd)
    # Every contact (hand-object and the hand's own pairs) gets the configured stiffness.
    for item in (*spec.geoms, *spec.pairs):
        item.solref = [config.solref_timeconst, 1.0]
        item.solimp = [config.solimp_d, config.solimp_d, *list(item.solimp)[2:]]
    return spec


def build_scene(parts: list[trimesh.Trimesh], scale: float, config: FilterConfig, fixed_object: bool = False) -> Scene:
    """Compile the scene for one object (its convex parts in the object frame, metres) at ``scale`` (see
    :func:`scene_spec`).

    The object's damping (``object_linear_damping`` / ``object_angular_damping``, per unit mass and inertia)
    is set on the compiled model: a free joint's six DOFs take different values, which a spec cannot hold.
    """
    model = scene_spec(parts, scale, config, fixed_object).compile()
    scene = _index(model, config)
    if scene.obj_dof >= 0:
        a = scene.obj_dof
        model.dof_damping[a : a + 3] = config.object_linear_damping * model.dof_M0[a : a + 3]
        model.dof_damping[a + 3 : a + 6] = config.object_angular_damping * model.dof_M0[a + 3 : a + 6]
    return scene


def _multiccd(opt, on: bool) -> None:
    # mujoco 4 has multi-point CCD on by default behind a disable flag; 3.x had an enable flag.
    dis = getattr(mujoco.mjtDisableBit, "mjDSBL_MULTICCD", None)
    if dis is not None:
        opt.disableflags = (opt.disableflags | int(dis)) if not on else (opt.disableflags & ~int(dis))
        return
    en = getattr(mujoco.mjtEnableBit, "mjENBL_MULTICCD", None)
    if en is not None:
        opt.enableflags = (opt.enableflags | int(en)) if on else (opt.enableflags & ~int(en))


def _index(model: mujoco.MjModel, config: FilterConfig) -> Scene:
    data = mujoco.MjData(model)
    hand_joint = [model.joint(PREFIX + n).id for n in JOINT_NAMES]
    hand_qpos = np.array([model.jnt_qposadr[j] for j in hand_joint])
    hand_dof = np.array([model.jnt_dofadr[j] for j in hand_joint])
    for k, name in enumerate(JOINT_NAMES):
        if model.actuator_trnid[k, 0] != hand_joint[k]:  # pragma: no cover - guards the ctrl = joints convention
            raise RuntimeError(f"servo {k} does not drive joint {name}")
    obj_body = model.body(OBJECT_BODY).id
    mocap = int(model.body_mocapid[obj_body])
    obj_geoms = np.where(model.geom_bodyid == obj_body)[0]
    obj_mask = np.zeros(model.ngeom, dtype=bool)
    obj_mask[obj_geoms] = True
    hand_geoms = np.array([g for g in range(model.ngeom) if model.geom(g).name.startswith(PREFIX + "C_")])
    hand_mask = np.zeros(model.ngeom, dtype=bool)
    hand_mask[hand_geoms] = True
    finger_of_dof = np.full(model.nv, -1, dtype=np.int64)
    for k, name in enumerate(JOINT_NAMES):
        for f, prefix in enumerate(FINGERS):
            if name.startswith(prefix):
                finger_of_dof[hand_dof[k]] = f
    mass = float(model.body_mass[obj_body])
    volume = mass / config.density  # every part has the configured density
    return Scene(
        model=model,
        data=data,
        hand_qpos=hand_qpos,
        hand_dof=hand_dof,
        obj_qpos=int(model.jnt_qposadr[model.joint(OBJECT_JOINT).id]) if mocap < 0 else -1,
        obj_dof=int(model.jnt_dofadr[model.joint(OBJECT_JOINT).id]) if mocap < 0 else -1,
        obj_mocap=mocap,
        obj_body=obj_body,
        obj_geoms=obj_geoms,
        obj_geom_mask=obj_mask,
        hand_geoms=hand_geoms,
        hand_geom_mask=hand_mask,
        finger_of_dof=finger_of_dof,
        mass=mass,
        volume=volume,
        lower=model.jnt_range[hand_joint, 0].copy(),
        upper=model.jnt_range[hand_joint, 1].copy(),
    )
