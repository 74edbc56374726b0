"""A MANO-format hand model with human proportions, and human-like grasp motions for it (test data only).

The real ``MANO_RIGHT.pkl`` is licensed and never in this repository. :func:`synthetic_mano` builds a model
with the real file's keys, shapes and dtypes (v_template 778x3, f 1538x3, J_regressor 16x778 scipy CSC,
weights 778x16, posedirs 778x3x135, shapedirs 778x3x10, kintree_table 2x16, hands_components 45x45,
hands_mean 45) whose values are synthetic but shaped like a hand: an adult hand (wrist to middle fingertip
19 cm; segment lengths of a typical adult hand) with skin points on capsules around the bones, rigid
skinning, a J_regressor that averages a ring of skin points around each joint, the fingertip vertices at
MANO's indices (744 thumb, 320 index, 443 middle, 554 ring, 671 little) and PCA components whose first 21
span the joint rotations the motions use. :func:`write_chumpy_pickle` writes it the way the real file is
written: a Python-2-style pickle in which arrays are ``chumpy.ch.Ch`` / ``chumpy.reordering.Select``
nodes (stand-in classes with chumpy's module and class names, in a throw-away module) and J_regressor a
scipy CSC matrix.

Canonical frame of the model: fingers along +x, the back of the hand +y (the palm faces -y), the thumb
on the -z side (a right hand), the wrist joint at the origin.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
from scipy.spatial.transform import Rotation

N_VERTS, N_FACES, N_JOINTS = 778, 1538, 16
TIP_VERTICES = {"thumb": 744, "index": 320, "middle": 443, "ring": 554, "little": 671}
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
# MANO joint order: 0 wrist, 1-3 index, 4-6 middle, 7-9 little ("pinky"), 10-12 ring, 13-15 thumb.
FINGER_JOINTS = {
    "index": (1, 2, 3),
    "middle": (4, 5, 6),
    "little": (7, 8, 9),
    "ring": (10, 11, 12),
    "thumb": (13, 14, 15),
}

# (first joint, direction, segment lengths to the next joint / the fingertip, radius) of each finger, metres.
_FINGERS = {
    "index": ((0.088, 0.004, -0.025), (1.0, 0.0, -0.08), (0.040, 0.024, 0.022), 0.0085),
    "middle": ((0.092, 0.004, -0.005), (1.0, 0.0, 0.0), (0.045, 0.028, 0.024), 0.0090),
    "ring": ((0.087, 0.003, 0.014), (1.0, 0.0, 0.06), (0.041, 0.027, 0.023), 0.0085),
    "little": ((0.079, 0.001, 0.031), (1.0, 0.0, 0.13), (0.033, 0.020, 0.021), 0.0075),
    "thumb": ((0.022, -0.012, -0.022), (0.62, -0.30, -0.72), (0.042, 0.032, 0.028), 0.0100),
}


@dataclass
class SyntheticMano:
    """The model's arrays under the real file's keys (J_regressor a scipy CSC), and how to pose it."""

    arrays: dict
    rest_joints: np.ndarray  # (16, 3) = J_regressor @ v_template
    synergies: np.ndarray  # (21, 45): unit pose directions (see POSE_PARAMS); a pose is params @ synergies


# The motion parameters, in the order of the rows of SyntheticMano.synergies.
POSE_PARAMS = tuple(
    f"{f}_{p}" for f in ("index", "middle", "ring", "little") for p in ("mcp_flex", "mcp_abd", "pip", "dip")
) + ("thumb_cmc_flex", "thumb_cmc_abd", "thumb_cmc_roll", "thumb_mcp", "thumb_ip")


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _perpendicular(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to ``d`` (and to each other)."""
    a = np.cross(d, [0.0, 1.0, 0.0])
    a = _unit(a if np.linalg.norm(a) > 1e-6 else np.cross(d, [1.0, 0, 0]))
    return a, np.cross(d, a)


def _axes(finger: str) -> tuple[np.ndarray, np.ndarray]:
    """(flexion axis, side axis) of a finger: flexing by +angle turns the finger toward its pad side."""
    d = _unit(_FINGERS[finger][1])
    pad = np.array([0.0, -1.0, 0.0]) if finger != "thumb" else _unit([0.25, -0.45, 0.85])
    flex = _unit(np.cross(d, pad))
    return flex, _unit(np.cross(flex, d)) if finger == "thumb" else np.array([0.0, 1.0, 0.0])


def _synergies() -> np.ndarray:
    rows = []
    for finger in ("index", "middle", "ring", "little"):
        flex, side = _axes(finger)
        mcp, pip, dip = FINGER_JOINTS[finger]
        for joint, axis in ((mcp, flex), (mcp, side), (pip, flex), (dip, flex)):
            row = np.zeros(45)
            row[3 * (joint - 1): 3 * joint] = axis
            rows.append(row)
    flex, side = _axes("thumb")
    cmc, mcp, ip = FINGER_JOINTS["thumb"]
    roll = _unit(_FINGERS["thumb"][1])
    for joint, axis in ((cmc, flex), (cmc, side), (cmc, roll), (mcp, flex), (ip, flex)):
        row = np.zeros(45)
        row[3 * (joint - 1): 3 * joint] = axis
        rows.append(row)
    return np.stack(rows)


def synthetic_mano(seed: int = 0) -> SyntheticMano:
    rng = np.random.default_rng(seed)
    joints = np.zeros((N_JOINTS, 3))
    seg_end = np.zeros((N_JOINTS, 3))  # where each joint's bone ends (child joint or fingertip)
    radius = np.full(N_JOINTS, 0.012)
    for finger, (base, direction, lengths, r) in _FINGERS.items():
        d = _unit(direction)
        p = np.asarray(base, dtype=np.float64)
        for j, length in zip(FINGER_JOINTS[finger], lengths):
            joints[j], seg_end[j], radius[j] = p, p + length * d, r
            p = p + length * d
            r *= 0.92
    seg_end[0] = np.array([0.085, 0.0, 0.0])

    tips = set(TIP_VERTICES.values())
    free = [i for i in range(N_VERTS) if i not in tips]
    verts = np.zeros((N_VERTS, 3))
    owner = np.zeros(N_VERTS, dtype=np.int64)
    ring_rows, ring_cols = [], []
    k = 0
    for j in range(N_JOINTS):  # 8 skin points in a ring around every joint: the joint is their mean
        a, b = _perpendicular(_unit(seg_end[j] - joints[j]))
        for m in range(8):
            ang = 2 * np.pi * m / 8
            verts[free[k]] = joints[j] + radius[j] * (np.cos(ang) * a + np.sin(ang) * b)
            owner[free[k]] = j
            ring_rows.append(j)
            ring_cols.append(free[k])
            k += 1
    for finger, v in TIP_VERTICES.items():  # the fingertips at MANO's vertex indices, at the end of the distal bone
        j = FINGER_JOINTS[finger][2]
        verts[v], owner[v] = seg_end[j], j
    rest = free[k:]  # the rest on the bones' capsules; the palm (owned by the wrist) a flat slab
    area = np.linalg.norm(seg_end - joints, axis=1) * radius
    area[0] *= 4
    counts = np.floor(area / area.sum() * len(rest)).astype(int)
    counts[0] += len(rest) - counts.sum()
    i = 0
    for j in range(N_JOINTS):
        for _ in range(counts[j]):
            t = rng.uniform(0.05, 0.95)
            if j == 0:
                verts[rest[i]] = (
                    t * 0.085,
                    rng.choice([-1.0, 1.0]) * 0.013 * rng.uniform(0.7, 1.0),
                    rng.uniform(-0.035, 0.038),
                )
            else:
                a, b = _perpendicular(_unit(seg_end[j] - joints[j]))
                ang = rng.uniform(0, 2 * np.pi)
                verts[rest[i]] = (
                    joints[j] + t * (seg_end[j] - joints[j]) + radius[j] * (np.cos(ang) * a + np.sin(ang) * b)
                )
            owner[rest[i]] = j
            i += 1
    weights = np.zeros((N_VERTS, N_JOINTS))
    weights[np.arange(N_VERTS), owner] = 1.0
    regressor = scipy.sparse.csc_matrix(
        (np.full(len(ring_rows), 1 / 8), (ring_rows, ring_cols)), shape=(N_JOINTS, N_VERTS)
    )
    faces = np.zeros((N_FACES, 3), dtype=np.uint32)  # triangles between nearby skin points of one bone
    for f in range(N_FACES):
        mine = np.flatnonzero(owner == int(rng.integers(N_JOINTS)))
        c = mine[rng.integers(len(mine))]
        near = mine[np.argsort(np.linalg.norm(verts[mine] - verts[c], axis=1))[1:3]]
        faces[f] = (c, near[0], near[1])
    synergies = _synergies()
    # PCA components: an orthonormal basis whose first 21 rows span the synergies (mixed, as PCA rows are dense).
    q, _ = np.linalg.qr(np.concatenate([synergies.T, rng.normal(size=(45, 24))], axis=1))
    components = q.T.copy()
    mix, _ = np.linalg.qr(rng.normal(size=(len(synergies), len(synergies))))
    components[: len(synergies)] = mix @ components[: len(synergies)]
    shapedirs = rng.normal(scale=2e-4, size=(N_VERTS, 3, 10))
    shapedirs[:, :, 0] = verts * 0.05  # beta 0: 5% larger per unit
    arrays = {
        "v_template": verts,
        "f": faces,
        "J_regressor": regressor,
        "weights": weights,
        "posedirs": rng.normal(scale=5e-5, size=(N_VERTS, 3, 135)),
        "shapedirs": shapedirs,
        "kintree_table": np.stack([np.where(PARENTS < 0, 4294967295, PARENTS), np.arange(N_JOINTS)]).astype(np.int64),
        "hands_components": components,
        "hands_mean": 0.2 * synergies.sum(axis=0),
        "hands_coeffs": rng.normal(scale=0.1, size=(1554, 45)),
        "J": np.asarray(regressor @ verts),
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }
    return SyntheticMano(arrays, np.asarray(regressor @ verts), synergies)


# ---- writing the file the way the real one is written ---------------------------------------------------


@contextlib.contextmanager
def chumpy_standins():
    """Temporary modules ``chumpy.ch`` / ``chumpy.reordering`` with classes named like chumpy's."""
    saved = {m: sys.modules.get(m) for m in ("chumpy", "chumpy.ch", "chumpy.reordering")}
    chumpy, ch, reordering = (types.ModuleType(n) for n in ("chumpy", "chumpy.ch", "chumpy.reordering"))

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False

    class Select(Ch):
        def __init__(self, a, idxs, preferred_shape):
            self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape
            self._dirty_vars = set()

    for cls, mod in ((Ch, ch), (Select, reordering)):
        cls.__module__ = mod.__name__
        cls.__qualname__ = cls.__name__
        setattr(mod, cls.__name__, cls)
    chumpy.ch, chumpy.reordering = ch, reordering
    sys.modules.update({"chumpy": chumpy, "chumpy.ch": ch, "chumpy.reordering": reordering})
    try:
        yield ch.Ch, reordering.Select
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod


def write_chumpy_pickle(path: Path, arrays: dict, protocol: int = 2) -> Path:
    """``arrays`` pickled like the MANO release: v_template, weights, posedirs as Ch, shapedirs as a Select."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with chumpy_standins() as (Ch, Select):
        data = dict(arrays)
        for key in ("v_template", "weights", "posedirs"):
            data[key] = Ch(arrays[key])
        sd = np.asarray(arrays["shapedirs"])
        wide = np.concatenate([sd, np.zeros(sd.shape[:2] + (10,))], axis=2)  # stored with 20, selected down to 10
        idxs = np.arange(wide.size).reshape(wide.shape)[:, :, :10].ravel()
        data["shapedirs"] = Select(Ch(wide), idxs, sd.shape)
        body = pickle.dumps(data, protocol=protocol)
    # Python 2 spelled the numpy and scipy modules this way; so does the real file.
    body = body.replace(b"numpy._core.multiarray", b"numpy.core.multiarray").replace(
        b"scipy.sparse._csc", b"scipy.sparse.csc"
    )
    path.write_bytes(body)
    return path


# ---- posing the model, and grasp motions -------------------------------------------------------------------


def mano_layer(model: SyntheticMano, v_template: np.ndarray | None = None, n_comps: int = 24):
    """smplx's MANO on the synthetic arrays (as GRAB calls it: PCA hand pose, flat hand mean)."""
    import smplx
    from smplx.utils import Struct

    kwargs = {} if v_template is None else {"v_template": np.asarray(v_template, dtype=np.float32)}
    with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a note on MANO's 10 shape components
        return smplx.MANO("synthetic", data_struct=Struct(**model.arrays), use_pca=True, num_pca_comps=n_comps,
                          flat_hand_mean=True, batch_size=1, **kwargs)


def pose_mano(
    layer, global_orient: np.ndarray, hand_pca: np.ndarray, transl: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (T, 778, 3), keypoints (T, 21, 3) in MediaPipe order), float64, by smplx."""
    import torch

    from dga_engine.retarget.keypoints import FINGERTIP_VERTICES, MANO_TO_MEDIAPIPE

    t = len(global_orient)
    with torch.no_grad():
        out = layer(global_orient=torch.as_tensor(global_orient, dtype=torch.float32),
                    hand_pose=torch.as_tensor(hand_pca, dtype=torch.float32),
                    transl=torch.as_tensor(transl, dtype=torch.float32), betas=torch.zeros(t, 10))
    verts = out.vertices.double().numpy()
    joints = np.concatenate([out.joints.double().numpy(), verts[:, list(FINGERTIP_VERTICES)]], axis=1)
    return verts, joints[:, list(MANO_TO_MEDIAPIPE)]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def grasp_params(rng: np.random.Generator, kind: str) -> np.ndarray:
    """Synergy parameters (21,) of a closed grasp: 'power' (all fingers wrap) or 'precision' (thumb-index-middle)."""
    p = dict.fromkeys(POSE_PARAMS, 0.0)
    for finger in ("index", "middle", "ring", "little"):
        curl = rng.uniform(0.55, 0.95) if kind == "power" else rng.uniform(0.25, 0.55)
        if kind == "precision" and finger in ("ring", "little"):
            curl = rng.uniform(0.3, 0.8)
        p[f"{finger}_mcp_flex"] = 1.3 * curl
        p[f"{finger}_pip"] = 1.5 * curl
        p[f"{finger}_dip"] = 0.7 * 1.5 * curl  # the DIP follows the PIP at about 2/3
        p[f"{finger}_mcp_abd"] = rng.normal(0.0, 0.06)
    p["thumb_cmc_flex"] = rng.uniform(0.5, 0.9)
    p["thumb_cmc_abd"] = rng.uniform(-0.2, 0.2)
    p["thumb_cmc_roll"] = rng.uniform(-0.2, 0.3)
    p["thumb_mcp"] = rng.uniform(0.1, 0.5)
    p["thumb_ip"] = rng.uniform(0.1, 0.7)
    return np.array([p[k] for k in POSE_PARAMS])


# Which synergy parameters curl each finger (scaled together when a grasp is fitted to an object).
_CURL = {
    f: [POSE_PARAMS.index(f"{f}_{k}") for k in ("mcp_flex", "pip", "dip")]
    for f in ("index", "middle", "ring", "little")
}
_CURL["thumb"] = [POSE_PARAMS.index(k) for k in ("thumb_cmc_flex", "thumb_mcp", "thumb_ip")]
_TIP = {"thumb": 4, "index": 8, "middle": 12, "ring": 16, "little": 20}


def fit_grasp(
    model: SyntheticMano, layer, closed: np.ndarray, radius: float, kind: str, n_comps: int = 24
) -> tuple[np.ndarray, np.ndarray]:
    """Close each finger of the grasp on a sphere of ``radius`` until it touches; returns (params, sphere centre).

    The centre starts at the mean of the contact fingertips of the nominal grasp and moves palm-wards
    until the palm's skin clears the sphere. Each finger (its curl parameters scaled together) then closes
    from open until its skin first touches the sphere (at most 1 mm deep); a finger that never reaches it
    keeps the nominal curl.
    """
    comps = model.arrays["hands_components"][:n_comps]
    owner = np.argmax(model.arrays["weights"], axis=1)
    contact = ["thumb", "index", "middle"] + (["ring", "little"] if kind == "power" else [])
    verts, kp = pose_mano(layer, np.zeros((1, 3)), (closed @ model.synergies @ comps.T)[None], np.zeros((1, 3)))
    centre = kp[0, [_TIP[f] for f in contact]].mean(axis=0)
    palm = verts[0, owner == 0]
    for _ in range(100):
        if np.min(np.linalg.norm(palm - centre, axis=1)) >= radius + 0.001:
            break
        centre = centre + np.array([0.0, -0.001, 0.0])
    scales = np.linspace(0.0, 1.0, 51)
    trial = np.repeat(closed[None], len(scales), axis=0)
    for idx in _CURL.values():
        trial[:, idx] = scales[:, None] * closed[None, idx]
    verts, _ = pose_mano(
        layer, np.zeros((len(scales), 3)), trial @ model.synergies @ comps.T, np.zeros((len(scales), 3))
    )
    fitted = closed.copy()
    for finger, idx in _CURL.items():
        mine = np.isin(owner, FINGER_JOINTS[finger])
        depth = radius - np.linalg.norm(verts[:, mine] - centre, axis=2).min(axis=1)  # > 0: inside the sphere
        inside = np.flatnonzero(depth > 0.001)
        k = len(scales) - 1 if not len(inside) else max(int(inside[0]) - 1, 0)
        fitted[idx] = scales[k] * closed[idx]
    return fitted, centre


@dataclass
class GraspMotion:
    """One human grasp motion in an object's frame (a sphere of ``radius`` on the origin), at 120 fps."""

    global_orient: np.ndarray  # (T, 3) MANO root axis-angle, object frame
    hand_pca: np.ndarray  # (T, n_comps) PCA hand pose
    transl: np.ndarray  # (T, 3) MANO transl, object frame
    closure: np.ndarray  # (T,) 0 open .. 1 closed on the object


def grasp_motion(
    model: SyntheticMano,
    rng: np.random.Generator,
    radius: float,
    n_frames: int = 240,
    kind: str = "power",
    v_template: np.ndarray | None = None,
    n_comps: int = 24,
    layer=None,
) -> GraspMotion:
    """Reach (the object 8 cm in front of the open palm), close on the sphere, hold (slow drift, tremor, a few degrees
    of wobble), open, withdraw."""
    layer = layer or mano_layer(model, v_template, n_comps)
    comps = model.arrays["hands_components"][:n_comps]
    closed, centre = fit_grasp(model, layer, grasp_params(rng, kind), radius, kind, n_comps)
    r_hand = Rotation.random(random_state=int(rng.integers(1 << 30)))
    tt = np.arange(n_frames) / n_frames
    closure = _smoothstep((tt - 0.1) / 0.3) * (1 - _smoothstep((tt - 0.85) / 0.12))
    approach = (1 - closure)[:, None] * np.array([0.0, -0.08, 0.0])  # the object 8 cm in front of the palm
    drift = np.cumsum(rng.normal(0, 1e-4, (n_frames, 3)), axis=0)
    offsets = centre + approach + drift
    wobble = np.stack(
        [0.04 * np.sin(2 * np.pi * tt * f + ph) for f, ph in zip((0.7, 1.1, 0.9), rng.uniform(0, 6, 3))], 1
    )
    rots = r_hand * Rotation.from_rotvec(wobble)
    params = closure[:, None] * closed[None, :] + rng.normal(0, 0.005, (n_frames, len(POSE_PARAMS)))
    # MANO's root turns about the wrist joint J0: p = R (x - J0) + J0 + transl; we want p = R (x - offset).
    template = model.arrays["v_template"] if v_template is None else v_template
    j0 = (model.arrays["J_regressor"] @ template)[0]
    transl = np.einsum("tij,tj->ti", rots.as_matrix(), j0[None] - offsets) - j0[None]
    return GraspMotion(rots.as_rotvec(), params @ model.synergies @ comps.T, transl, closure)
