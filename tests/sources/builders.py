"""Tiny source datasets in each source's exact on-disk format, written with the real numpy/torch savers.

Every grasp is built in the *source's* convention from a known source-model pose, placed so that its
thumb tip touches a known vertex of the source object (the mesh's max corner times the grasp's metric
scale). Tests then check, after conversion and curation, that the engine's thumb tip touches the same
vertex of the stored object (times ``object_scale``): that pins down joint mapping, root frame, rotation
encoding, scale semantics and the ingest transform together.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from dga_engine.sources.kinematics import source_hand

DGN = "dexgraspnet_mjcf"
SR = "sr_grasp_description"


@dataclass
class Truth:
    """What a fixture wrote: per record id, the source thumb tip in the source metric frame, and the metric scale."""

    object_key: str
    corner: np.ndarray  # the source mesh vertex the thumb touches (mesh units, before the metric scale)
    scales: dict[str, float] = field(default_factory=dict)  # record id -> metric scale (object = mesh * scale)


def source_pose(
    model: str, rng: np.random.Generator, corner_metric: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random in-limits pose of ``model`` whose thumb tip is at ``corner_metric``: (R, t, q)."""
    hand = source_hand(model)
    lo, hi = hand.limits()
    q = rng.uniform(lo, hi) * 0.8 + 0.1 * (lo + hi)
    r = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
    tip = hand.fingertips(q[None], r[None], np.zeros((1, 3)))[0, 4]
    return r, corner_metric - tip, q


def normalised_box(extents=(1.2, 1.0, 1.4)) -> trimesh.Trimesh:
    """A unit-size box like DexGraspNet's normalised meshes (radius ~1)."""
    return trimesh.creation.box(extents=extents)


def write_multi_object_obj(path: Path, mesh: trimesh.Trimesh) -> None:
    """DexGraspNet's decomposed.obj: several 'o' objects (convex pieces); here the box cut in two halves."""
    lo, hi = mesh.bounds
    mid = (lo[0] + hi[0]) / 2
    halves = []
    for a, b in ((lo[0], mid), (mid, hi[0])):
        ext = np.array([b - a, hi[1] - lo[1], hi[2] - lo[2]])
        centre = np.array([(a + b) / 2, (lo[1] + hi[1]) / 2, (lo[2] + hi[2]) / 2])
        halves.append(trimesh.creation.box(extents=ext).apply_translation(centre))
    lines, base = [], 1
    for i, h in enumerate(halves):
        lines.append(f"o piece_{i}")
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in h.vertices]
        lines += [f"f {a + base} {b + base} {c + base}" for a, b, c in h.faces]
        base += len(h.vertices)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def save_object_npy(path: Path, arr: np.ndarray, protocol: int = 3, numpy1: bool = False) -> None:
    """An object-array .npy as DexGraspNet ships it (format 1.0, pickle protocol 3), optionally spelling
    the numpy globals the way numpy 1 writers did (``numpy.core.multiarray``)."""
    from numpy.lib import format as npformat

    body = pickle.dumps(arr, protocol=protocol)
    if numpy1:
        assert protocol <= 3  # text GLOBAL opcodes: the module name can be respelled in place
        body = body.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        npformat.write_array_header_1_0(fh, npformat.header_data_from_array_1_0(arr))
        fh.write(body)


def _dgn_qpos(r: np.ndarray, t: np.ndarray, q: np.ndarray) -> dict:
    hand = source_hand(DGN)
    ex, ey, ez = Rotation.from_matrix(r).as_euler("xyz")  # extrinsic xyz == transforms3d 'sxyz'
    qpos = {name: float(v) for name, v in zip(hand.joint_order, q)}
    qpos.update(
        WRJRx=float(ex), WRJRy=float(ey), WRJRz=float(ez), WRJTx=float(t[0]), WRJTy=float(t[1]), WRJTz=float(t[2])
    )
    return qpos


# ---- DexGraspNet -----------------------------------------------------------------------------------------


def write_dexgraspnet(
    root: Path,
    codes=("core-mug-8570d9a8d24cb0acbebd3c0c0c70fb03", "sem-Bottle-437678d4bc6be981c8724d5673a063a6"),
    per_object: int = 3,
    seed: int = 0,
) -> dict[str, Truth]:
    rng = np.random.default_rng(seed)
    truths = {}
    for ci, code in enumerate(codes):
        mesh = normalised_box((1.2 + 0.1 * ci, 1.0, 1.4))
        write_multi_object_obj(root / "meshdata" / code / "coacd" / "decomposed.obj", mesh)
        corner = mesh.bounds[1].copy()
        truth = Truth(code, corner)
        arr = np.empty(per_object, dtype=object)
        for i in range(per_object):
            scale = float(np.float32([0.06, 0.08, 0.1, 0.12, 0.15][(i + ci) % 5]))
            r, t, q = source_pose(DGN, rng, corner * scale)
            arr[i] = {"qpos": _dgn_qpos(r, t, q), "scale": np.float64(scale)}
            truth.scales[f"dataset/{code}.npy:{i}"] = scale
        if ci == 0:
            save_object_npy(root / "dataset" / f"{code}.npy", arr)  # as DexGraspNet ships it (protocol 3)
        else:
            (root / "dataset").mkdir(parents=True, exist_ok=True)
            np.save(root / "dataset" / f"{code}.npy", arr, allow_pickle=True)  # numpy 2's own writer
        truths[code] = truth
    (root / "splits.json").write_text(json.dumps({"train": [codes[0]], "test": list(codes[1:])}))
    return truths


# ---- UniDexGrasp ---------------------------------------------------------------------------------------


def write_unidexgrasp(
    root: Path,
    instances=("bottle-1a7ba1f4c892e2da30711cdbdbc73924", "mug-9d8c9f8e7a6b5c4d3e2f1a0b9c8d7e6f"),
    per_object: int = 2,
    seed: int = 1,
) -> dict[str, Truth]:
    rng = np.random.default_rng(seed)
    dfc = root / "DFCData"
    truths = {}
    for ii, inst in enumerate(instances):
        key = f"core/{inst}"
        mesh = normalised_box((1.0, 1.1 + 0.1 * ii, 1.3))
        write_multi_object_obj(dfc / "meshes" / "core" / inst / "coacd" / "decomposed.obj", mesh)
        corner = mesh.bounds[1].copy()
        truth = Truth(key, corner)
        folder = dfc / "poses" / "core" / inst
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_object):
            object_scale = [0.06, 0.1, 0.15][(i + ii) % 3]
            r, t, q = source_pose(DGN, rng, corner * object_scale)
            qpos = np.empty((), dtype=object)
            qpos[()] = _dgn_qpos(r, t, q)
            np.savez(
                folder / f"{i:05d}.npz", qpos=qpos, scale=np.float32(1.0 / object_scale), plane=np.array([0, 0, 1, 0.1])
            )
            truth.scales[f"poses/core/{inst}/{i:05d}.npz:0"] = float(np.float32(1.0 / object_scale)) ** -1
        truths[key] = truth
    (dfc / "splits").mkdir(parents=True, exist_ok=True)
    (dfc / "splits" / "core.json").write_text(json.dumps({"train": [instances[0]], "test": list(instances[1:])}))
    return truths


# ---- sr_grasp_description-based files (MultiDex, DGA release, RealDex) -----------------------------------


def rot6d_columns(r: np.ndarray, stretch: float = 1.0) -> np.ndarray:
    """The stored 6D: first two columns of R (optionally not normalised, as MultiDex stores them)."""
    return np.concatenate([r[:, 0] * stretch, r[:, 1] * (2.0 - stretch)])


def metric_box(extents=(0.05, 0.06, 0.08)) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=extents)


def write_multidex(root: Path, names=("contactdb+cube_small", "ycb+foam_brick", "contactdb+apple"), per_object: int = 2,
                   seed: int = 2, ur: bool = False) -> dict[str, Truth]:
    rng = np.random.default_rng(seed)
    truths, metadata = {}, []
    for ni, name in enumerate(names):
        ds, obj = name.split("+")
        mesh = metric_box((0.05 + 0.01 * ni, 0.06, 0.08))
        path = root / "data" / "object" / ds / obj / f"{obj}.stl"
        path.parent.mkdir(parents=True, exist_ok=True)
        mesh.export(path)
        corner = mesh.bounds[1].copy()
        truth = Truth(name, corner)
        for _ in range(per_object):
            r, t, q = source_pose(SR, rng, corner)
            rec = len(metadata)
            if ur:  # DGA's MultiDex_UR: hand at identity in a frame where the object is rotated by M
                m = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
                # p' = M p: the hand there is R6 = M R, t' = M t
                q33 = np.concatenate([m @ t, rot6d_columns(m @ r, 1.3), q])
                metadata.append((torch.tensor(q33, dtype=torch.float32), torch.tensor(m, dtype=torch.float32), name))
            else:
                q33 = np.concatenate([t, rot6d_columns(r, 1.3), q])
                metadata.append((torch.tensor(q33, dtype=torch.float32), name, "shadowhand"))
            truth.scales[f"{{file}}:{rec}"] = 1.0
        truths[name] = truth
    folder = root / ("MultiDex_UR" if ur else "MultiDex") / "shadowhand"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"info": {"num_per_object": {n: per_object for n in names}}, "metadata": metadata}, folder / "shadowhand.pt"
    )
    unit = (folder / "shadowhand.pt").relative_to(root).as_posix()
    for truth in truths.values():
        truth.scales = {k.replace("{file}", unit): v for k, v in truth.scales.items()}
    return truths


def write_release_file(folder: Path, filename: str, objects: dict[str, trimesh.Trimesh], mode: str, per_object: int,
                       seed: int, mesh_layout: str = "meshes", scales=(0.08, 0.1, 0.12)) -> dict[str, Truth]:
    """One DGA release file (+ grasp.json, object_pcds_nors.pkl, meshes) with ``scale`` meaning ``mode``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truths, metadata, pcs = {}, [], {}
    for oi, (name, mesh) in enumerate(objects.items()):
        if mesh_layout == "meshdata":
            write_multi_object_obj(folder / "meshdata" / name / "coacd" / "decomposed.obj", mesh)
        else:
            (folder / "meshes").mkdir(exist_ok=True)
            mesh.export(folder / "meshes" / f"{name}.obj")
        pts, face = trimesh.sample.sample_surface(mesh, 512, seed=oi)
        pcs[name] = np.concatenate([pts, mesh.face_normals[face]], axis=1).astype(np.float32)
        corner = mesh.bounds[1].copy()
        truth = Truth(name, corner)
        for i in range(per_object):
            metric = scales[(i + oi) % len(scales)] if mode != "none" else 1.0
            stored = metric if mode == "multiply" else (1.0 / metric if mode == "divide" else 1.0)
            stored = float(np.float32(stored))
            metric = stored if mode == "multiply" else (1.0 / stored if mode == "divide" else 1.0)
            r, t_src, q = source_pose(SR, rng, corner * metric)
            rec = len(metadata)
            metadata.append({"rotations": torch.tensor(r, dtype=torch.float32),
                             "translations": torch.tensor(r.T @ t_src, dtype=torch.float32),  # hand = R (x + t)
                             "joint_positions": torch.tensor(q, dtype=torch.float32),
                             "object_name": name, "scale": stored})
            truth.scales[f"{{file}}:{rec}"] = metric
        truths[name] = truth
    torch.save({"info": {"num_per_object": {n: per_object for n in objects}}, "metadata": metadata}, folder / filename)
    names = list(objects)
    (folder / "grasp.json").write_text(
        json.dumps({"_train_split": names[:-1], "_test_split": names[-1:], "_all_split": names})
    )
    with open(folder / "object_pcds_nors.pkl", "wb") as fh:
        pickle.dump(pcs, fh)
    return truths


def finish(truths: dict[str, Truth], unit: str) -> dict[str, Truth]:
    for truth in truths.values():
        truth.scales = {k.replace("{file}", unit): v for k, v in truth.scales.items()}
    return truths


def write_dga(root: Path, per_object: int = 2) -> dict[str, Truth]:
    """A release with a DexGraspNet-derived file (multiply, meshdata layout) and a UniDexGrasp-derived one (divide)."""
    t1 = write_release_file(root / "DexGraspNet", "dexgraspnet_shadowhand_downsample.pt",
                            {"core-cup-0a1b2c3d4e5f60718293a4b5c6d7e8f9": normalised_box((1.1, 1.1, 1.5)),
                             "ddg-gd_banana_poisson_002": normalised_box((1.6, 0.6, 0.6))}, "multiply", per_object, 3,
                            mesh_layout="meshdata")
    finish(t1, "DexGraspNet/dexgraspnet_shadowhand_downsample.pt")
    t2 = write_release_file(
        root / "Unidexgrasp",
        "unidexgrasp_shadowhand.pt",
        {
            "sem-Car-2a3b4c5d6e7f8091a2b3c4d5e6f70819": normalised_box((1.4, 0.8, 0.7)),
            "core-jar-1b2c3d4e5f60718293a4b5c6d7e8f90a": normalised_box((0.9, 0.9, 1.3)),
        },
        "divide",
        per_object,
        4,
    )
    finish(t2, "Unidexgrasp/unidexgrasp_shadowhand.pt")
    return {**t1, **t2}


def write_realdex(root: Path, per_object: int = 2) -> dict[str, Truth]:
    """DGA's realdex_shadowhand.pt (divide; metric meshes: scale ~1) and one raw capture."""
    truths = write_release_file(root, "realdex_shadowhand.pt", {"toy_car": metric_box((0.07, 0.04, 0.05)),
                                                                 "sprayer": metric_box((0.05, 0.05, 0.12))},
                                "divide", per_object, 5, scales=(1.0, 1.25))
    return finish(truths, "realdex_shadowhand.pt")


def write_realdex_raw(root: Path, frames: int = 6, seed: int = 6) -> Truth:
    """A raw RealDex capture: frames 0-2 far from the object (approach), 3-5 touching it."""
    rng = np.random.default_rng(seed)
    name = "banana_toy"
    mesh = metric_box((0.12, 0.04, 0.04))
    folder = root / "raw" / name
    folder.mkdir(parents=True, exist_ok=True)
    mesh.export(root / "raw" / name / f"{name}.obj")
    corner = mesh.bounds[1].copy()
    truth = Truth(name, corner)
    hand = source_hand(SR)
    qpos, h_t, h_o, o_t, o_o = [], [], [], [], []
    pts = [trimesh.sample.sample_surface(mesh, 6000, seed=0)[0]]
    for f in range(frames):
        # a closed-ish pose touching the object at several fingertips: put all five tips on the surface points
        r, t, q = source_pose(SR, rng, corner)
        q[:2] = 0.0  # no wrist in a capture
        r_obj = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
        t_obj = rng.normal(size=3) * 0.3
        if f < frames // 2:
            t = t + np.array([0.0, 0.0, 0.5])  # approach: far away
        else:
            tips = hand.fingertips(q[None], r[None], t[None])[0]
            pts.append(tips)  # make the object's points include the touched spots
        # world poses: object at (r_obj, t_obj), hand = object pose o (r, t)
        qpos.append(q[2:])
        h_o.append(Rotation.from_matrix(r_obj @ r).as_rotvec())
        h_t.append(r_obj @ t + t_obj)
        o_o.append(Rotation.from_matrix(r_obj).as_rotvec())
        o_t.append(t_obj)
        if f >= frames // 2:
            truth.scales[f"raw/{name}/capture.npz:{f}"] = 1.0
    np.savez(folder / "capture.npz", qpos=np.array(qpos), hand_transl=np.array(h_t), hand_orient=np.array(h_o),
             object_transl=np.array(o_t), object_orient=np.array(o_o), object_points=np.concatenate(pts)[:7000],
             object_colors=np.zeros((7000, 3), dtype=np.uint8))
    return truth
