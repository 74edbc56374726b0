"""A tiny GRAB download in GRAB's exact layout and format, with human grasps made by the synthetic MANO model.

Layout (as GRAB's archives unzip)::

    grab/<subject>/<object>_<intent>.npz                 np.savez_compressed; every key a 0-d object array
    tools/object_meshes/contact_meshes/<object>.ply      the object (a sphere here), metres
    tools/subject_meshes/<gender>/<subject>_rhand.ply    the subject's MANO template (778 vertices)

Each sequence is a human grasp motion (``tests.retarget.mano_builders.grasp_motion``) on the object, put in
the world the way GRAB stores it: the object at ``v @ R + t`` (R from its axis-angle), lifted and turned
while held, and the hand's MANO parameters in that world (its root turns about the wrist joint J0). The
object contact labels are GRAB's body-part ids of the nearest hand skin point within 6 mm (22 palm,
41-55 the right fingers); a few approach frames carry a left-hand label (26) and a body label (1) only,
which must not count as right-hand contact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from tests.retarget.mano_builders import SyntheticMano, grasp_motion, mano_layer, pose_mano

# GRAB's contact ids of the right hand's parts, by MANO joint (0 wrist = R_Hand; index, middle, pinky, ring, thumb 1-3).
LABEL_OF_JOINT = np.array([22, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55])
N_BODY_VERTS = 10475
CONTACT_MM = 6.0


@dataclass(frozen=True)
class Sequence:
    subject: str
    obj: str
    intent: str
    n_frames: int = 240
    kind: str = "power"
    gender: str = "male"
    hand_scale: float = 1.0  # the subject's hand relative to the model's template


@dataclass
class SequenceTruth:
    unit: str  # path relative to the download root
    keypoints_object: np.ndarray  # (T, 21, 3) the hand's keypoints in the object frame
    right_contact: np.ndarray  # (T,) bool: frames whose labels include the right hand
    left_only: np.ndarray  # (T,) bool: frames labelled with the left hand / body only
    radius: float


OBJECT_RADIUS = {"apple": 0.036, "mug": 0.032, "cubesmall": 0.028, "torusmedium": 0.04}


def _object(root: Path, name: str) -> trimesh.Trimesh:
    mesh = trimesh.creation.icosphere(subdivisions=3, radius=OBJECT_RADIUS[name])
    path = root / "tools" / "object_meshes" / "contact_meshes" / f"{name}.ply"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        mesh.export(path)
    return mesh


def _obj0(value) -> np.ndarray:
    a = np.empty((), dtype=object)
    a[()] = value
    return a


def write_grab(root: Path, model: SyntheticMano, sequences: list[Sequence], seed: int = 0) -> dict[str, SequenceTruth]:
    root = Path(root)
    rng = np.random.default_rng(seed)
    truths: dict[str, SequenceTruth] = {}
    comps = model.arrays["hands_components"][:24]
    owner = np.argmax(model.arrays["weights"], axis=1)
    for s in sequences:
        mesh = _object(root, s.obj)
        vtemp_rel = f"tools/subject_meshes/{s.gender}/{s.subject}_rhand.ply"
        template = model.arrays["v_template"] * s.hand_scale
        (root / vtemp_rel).parent.mkdir(parents=True, exist_ok=True)
        trimesh.Trimesh(template, model.arrays["f"], process=False).export(root / vtemp_rel)
        layer = mano_layer(model, template)
        motion = grasp_motion(model, rng, OBJECT_RADIUS[s.obj], s.n_frames, s.kind, v_template=template, layer=layer)
        t = s.n_frames
        verts_obj, kp_obj = pose_mano(layer, motion.global_orient, motion.hand_pca, motion.transl)
        # The object in the world: on a table, lifted 10 cm and turned 0.3 rad while held.
        held = np.clip((motion.closure - 0.9) / 0.1, 0.0, 1.0)
        a0 = Rotation.random(random_state=int(rng.integers(1 << 30)))
        world_from_obj = a0 * Rotation.from_rotvec(np.outer(held, [0.0, 0.0, 0.3]))
        t_obj = np.array([0.3, -0.2, 0.8]) + np.outer(held, [0.0, 0.0, 0.10])
        obj_aa = world_from_obj.inv().as_rotvec()  # GRAB: v_world = v @ R + t, so R = world_from_obj^T
        # The hand's MANO parameters in the world: p_w = A p_obj + t_o, with p_obj = R_h (x - J0) + J0 + transl.
        j0 = (model.arrays["J_regressor"] @ template)[0]
        a = world_from_obj.as_matrix()
        go_world = (world_from_obj * Rotation.from_rotvec(motion.global_orient)).as_rotvec()
        transl_world = np.einsum("tij,tj->ti", a, j0 + motion.transl) + t_obj - j0
        # Contact labels: each object vertex takes the part of the nearest hand skin point within 6 mm.
        labels = np.zeros((t, len(mesh.vertices)), dtype=np.int64)
        for f in range(t):
            d, j = cKDTree(verts_obj[f]).query(mesh.vertices)
            near = d * 1000.0 < CONTACT_MM
            labels[f, near] = LABEL_OF_JOINT[owner[j[near]]]
        left_only = np.zeros(t, dtype=bool)
        left_only[5:15] = True  # approach frames: the other hand and the body touch the object
        labels[5:15] = 0
        labels[5:15, :3] = 26
        labels[5:15, 3] = 1
        body = np.zeros((t, N_BODY_VERTS), dtype=np.int64)
        body[:, :4] = labels[:, :4]
        zeros = lambda n: np.zeros((t, n), dtype=np.float32)  # noqa: E731
        data = {
            "gender": s.gender,
            "sbj_id": s.subject,
            "obj_name": s.obj,
            "motion_intent": s.intent,
            "framerate": 120.0,
            "n_frames": t,
            "n_comps": 24,
            "rhand": {
                "params": {
                    "global_orient": go_world.astype(np.float32),
                    "hand_pose": motion.hand_pca.astype(np.float32),
                    "transl": transl_world.astype(np.float32),
                    "fullpose": (motion.hand_pca @ comps).astype(np.float32),
                },
                "vtemp": vtemp_rel,
            },
            "lhand": {
                "params": {
                    "global_orient": zeros(3),
                    "hand_pose": zeros(24),
                    "transl": zeros(3),
                    "fullpose": zeros(45),
                },
                "vtemp": f"tools/subject_meshes/{s.gender}/{s.subject}_lhand.ply",
            },
            "object": {
                "params": {"global_orient": obj_aa.astype(np.float32), "transl": t_obj.astype(np.float32)},
                "object_mesh": f"tools/object_meshes/contact_meshes/{s.obj}.ply",
            },
            "table": {
                "params": {"global_orient": zeros(3), "transl": zeros(3)},
                "table_mesh": "tools/object_meshes/contact_meshes/table.ply",
            },
            "body": {
                "params": {
                    "transl": zeros(3),
                    "global_orient": zeros(3),
                    "body_pose": zeros(63),
                    "jaw_pose": zeros(3),
                    "leye_pose": zeros(3),
                    "reye_pose": zeros(3),
                    "left_hand_pose": zeros(24),
                    "right_hand_pose": zeros(24),
                    "fullpose": zeros(165),
                    "expression": zeros(10),
                },
                "vtemp": f"tools/subject_meshes/{s.gender}/{s.subject}.ply",
            },
            "contact": {"body": body, "object": labels},
        }
        unit = f"grab/{s.subject}/{s.obj}_{s.intent}.npz"
        (root / unit).parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(root / unit, **{k: _obj0(v) for k, v in data.items()})
        right = np.isin(labels, LABEL_OF_JOINT).any(axis=1)
        truths[unit] = SequenceTruth(unit, kp_obj, right, left_only, OBJECT_RADIUS[s.obj])
    return truths


DEFAULT_SEQUENCES = (
    Sequence("s1", "apple", "lift", kind="power"),
    Sequence("s2", "mug", "drink", kind="precision", gender="female", hand_scale=0.93),
    Sequence("s1", "cubesmall", "pass", kind="precision"),
)
