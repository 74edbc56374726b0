"""The scene a grasp is drawn in: the filter's frame and hand, with the hand's visual meshes and the object's mesh.

Same conventions as the physics filter's scene (:mod:`dga_engine.simulate.scene`): the hand's forearm frame
is the world frame, the hand never moves as a whole, and the object sits at the inverse of the grasp's root
pose (:func:`dga_engine.simulate.scene.object_pose`). Unlike the filter's scene it keeps what the filter
deletes because it never collides: the ShadowHand's visual meshes (the STL files of the installed
gymnasium-robotics package, read in place) and the object's full mesh (``objects/<id>/mesh.obj``, not only
its convex parts). The filter's collision geometry (hand capsules and boxes, the object's convex parts) is
in the model too, in geom group 4, hidden unless asked for. Nothing here simulates: poses are set and
forward kinematics run.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import trimesh

from dga_engine.hand.mjcf import JOINT_NAMES, PREFIX, hand_spec
from dga_engine.simulate.scene import object_pose

OBJECT_BODY = "object"
VISUAL_GROUP = 1  # the package's visual meshes are in group 1 (class robot0:D_Vizual)
COLLISION_GROUP = 4  # collision geoms: the package's hand geoms, and the object's convex parts here
OBJECT_RGBA = (0.78, 0.72, 0.60, 1.0)  # a warm neutral that every verdict colour stands out against
HAND_RGBA = (0.55, 0.57, 0.60, 1.0)


@dataclass
class RenderScene:
    """A compiled scene for one object at one scale, posed per grasp.

    hand_qpos (24,): qpos addresses of the hand joints in JOINT_NAMES order. hand_visual (G,): geom ids of
    the hand's visual meshes. centre (3,), radius: the object's bounding sphere at this scale, object frame.
    """

    model: mujoco.MjModel
    data: mujoco.MjData
    hand_qpos: np.ndarray
    hand_visual: np.ndarray
    obj_mocap: int
    centre: np.ndarray
    radius: float

    def pose(self, translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray) -> np.ndarray:
        """Set one grasp (t (3,), R (3,3) or quaternion wxyz (4,), q (24,)); returns the object centre in the world."""
        rotation = np.asarray(rotation, dtype=np.float64)
        if rotation.shape == (4,):
            mat = np.zeros(9)
            mujoco.mju_quat2Mat(mat, rotation / np.linalg.norm(rotation))
            rotation = mat.reshape(3, 3)
        pos, quat = object_pose(translation, rotation)
        d = self.data
        d.qpos[:] = 0.0
        d.qpos[self.hand_qpos] = np.asarray(joints, dtype=np.float64)
        d.mocap_pos[self.obj_mocap] = pos
        d.mocap_quat[self.obj_mocap] = quat
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_camlight(self.model, d)
        return pos + rotation.T @ self.centre

    def tint_hand(self, rgba: tuple[float, float, float, float] | None) -> None:
        """Colour the hand's visual meshes (None: one neutral grey)."""
        self.model.geom_rgba[self.hand_visual] = rgba if rgba is not None else HAND_RGBA


def _add_mesh_geom(spec: mujoco.MjSpec, body, name: str, mesh: trimesh.Trimesh, scale: float, group: int,
                   rgba) -> None:
    m = spec.add_mesh()
    m.name = name
    m.uservert = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1).tolist()
    m.userface = np.asarray(mesh.faces, dtype=np.int64).reshape(-1).tolist()
    m.scale = [scale, scale, scale]
    m.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL  # never used (mocap body), but must compile for open meshes
    g = body.add_geom()
    g.name = name
    g.type = mujoco.mjtGeom.mjGEOM_MESH
    g.meshname = name
    g.contype = g.conaffinity = 0
    g.group = group
    g.rgba = rgba
    g.mass = 0.0


def build_render_scene(mesh: trimesh.Trimesh, scale: float, parts: list[trimesh.Trimesh] | None = None,
                       size: tuple[int, int] = (640, 640)) -> RenderScene:
    """Compile the scene for an object mesh (object frame, metres) at ``scale``; ``parts`` adds its convex parts.

    ``size`` (width, height) bounds the offscreen framebuffer of any renderer made for this model.
    """
    if mesh is None or len(mesh.faces) == 0:
        raise ValueError("the object mesh has no faces; re-ingest it (dga-engine ingest ...)")
    spec = hand_spec()
    for kind in (spec.actuators, spec.tendons, spec.sensors):
        for item in list(kind):
            spec.delete(item)  # tendons and actuators are dynamics; the scene only poses joints
    for g in spec.geoms:
        g.contype = g.conaffinity = 0
        if g.name.startswith(PREFIX + "V_"):
            g.material = ""  # drawn with geom_rgba, so a verdict can tint them
    light = spec.worldbody.add_light()
    light.pos, light.dir = [0.0, -1.0, 1.2], [0.0, 0.6, -0.6]
    light.type = mujoco.mjtLightType.mjLIGHT_DIRECTIONAL
    light.diffuse = [0.7, 0.7, 0.7]
    sky = spec.add_texture()
    sky.name = "sky"
    sky.type = mujoco.mjtTexture.mjTEXTURE_SKYBOX
    sky.builtin = mujoco.mjtBuiltin.mjBUILTIN_GRADIENT
    sky.rgb1, sky.rgb2 = [1.0, 1.0, 1.0], [0.82, 0.85, 0.9]
    sky.width = sky.height = 64
    spec.visual.global_.offwidth, spec.visual.global_.offheight = int(size[0]), int(size[1])
    spec.visual.quality.shadowsize = 2048
    spec.visual.headlight.ambient = [0.35, 0.35, 0.35]
    spec.visual.headlight.diffuse = [0.45, 0.45, 0.45]

    body = spec.worldbody.add_body()
    body.name = OBJECT_BODY
    body.mocap = True
    body.explicitinertial = True
    body.mass, body.inertia = 1.0, [1e-3, 1e-3, 1e-3]
    _add_mesh_geom(spec, body, "object:mesh", mesh, scale, 0, OBJECT_RGBA)
    for i, part in enumerate(parts or []):
        _add_mesh_geom(spec, body, f"object:part{i:03d}", part, scale, COLLISION_GROUP, (0.3, 0.5, 0.9, 0.5))
    model = spec.compile()
    data = mujoco.MjData(model)
    hand_qpos = np.array([model.jnt_qposadr[model.joint(PREFIX + n).id] for n in JOINT_NAMES])
    visual = np.array([g for g in range(model.ngeom) if model.geom(g).name.startswith(PREFIX + "V_")])
    bounds = np.asarray(mesh.bounds, dtype=np.float64) * scale
    centre = bounds.mean(axis=0)
    radius = float(np.linalg.norm(bounds[1] - bounds[0]) / 2)
    scene = RenderScene(model, data, hand_qpos, visual, int(model.body_mocapid[model.body(OBJECT_BODY).id]),
                        centre, radius)
    scene.tint_hand(None)
    return scene


def hand_visual_meshes() -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The hand's visual meshes, each in its link's frame: (link index of HandModel, vertices (V,3), faces (F,3)).

    For posing by the engine's own forward kinematics (:class:`dga_engine.hand.model.HandModel`): a mesh's
    world vertices are ``rot[link] @ v + pos[link]``.
    """
    from dga_engine.hand.mjcf import ROOT_BODY, hand_model

    m = hand_model()
    root = m.body(ROOT_BODY).id
    out = []
    for g in range(m.ngeom):
        if not m.geom(g).name.startswith(PREFIX + "V_") or m.geom_type[g] != mujoco.mjtGeom.mjGEOM_MESH:
            continue
        mid = m.geom_dataid[g]
        v = m.mesh_vert[m.mesh_vertadr[mid]: m.mesh_vertadr[mid] + m.mesh_vertnum[mid]].astype(np.float64)
        f = m.mesh_face[m.mesh_faceadr[mid]: m.mesh_faceadr[mid] + m.mesh_facenum[mid]].astype(np.int32)
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, m.geom_quat[g])
        out.append((int(m.geom_bodyid[g]) - root, v @ rot.reshape(3, 3).T + m.geom_pos[g], f))
    return out
