"""The DexGrasp-Anything release (and the files of it that curate other sources: RealDex, MultiDex_UR).

Each release file is a torch ``.pt`` next to its split file and object point clouds::

    <name>_shadowhand[_downsample].pt   {'info': {'num_per_object': {...}},
                                         'metadata': [{'rotations' (3,3), 'translations' (3,),
                                                       'joint_positions' (24,), 'object_name', 'scale'}, ...]}
    grasp.json                          {'_train_split': [...], '_test_split': [...], '_all_split': [...]}
    object_pcds_nors.pkl                {object_name: (10240, 6) points + normals}

Pose: the DGA code rotates the object by ``R^T`` and places the hand (sr_grasp_description URDF, root
link ``forearm``, identity orientation) at ``translations``: ``hand = R (x + t)`` in the object frame, i.e.
root rotation ``R`` and root translation ``R @ t``. Joints are in pytorch_kinematics order of that URDF.

``scale`` means different things per file (the DGA loaders): DexGraspNet-derived files multiply the object
(``pc * scale``), the UniDexGrasp-, RealDex-derived and combined ``Grasp_anyting`` files divide it
(``pc / scale``). :func:`scale_mode_for` picks it from the file name; unknown names need ``scale_mode``.
MultiDex_UR files hold tuples ``(q[33], object_rot_mat (3,3), object_name)`` instead (see
:func:`decode_records`). The release does not ship meshes: they are looked up (:func:`~.base.find_mesh`)
next to the file, under the source root and in ``mesh_dirs``; objects without one are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dga_engine.sources.base import (
    SourceObject,
    UnitResult,
    checked_member,
    find_mesh,
    iter_files,
    label_from_key,
    make_batch,
    pose_check,
    read_split_file,
    rel,
)
from dga_engine.sources.kinematics import rot6d_robust_matrix
from dga_engine.sources.safeload import SourceFileError, load_pickle, load_torch

HAND_MODEL = "sr_grasp_description"
SCALE_MODES = ("multiply", "divide", "none")
PC_CHECK_MAX_BYTES = 512 * 2**20  # larger point-cloud files are not loaded just for the size check


def scale_mode_for(filename: str) -> str | None:
    """How ``scale`` relates a release file's object to its point cloud/mesh, from the file name."""
    n = filename.lower()
    if "dexgraspnet" in n:
        return "multiply"
    if any(k in n for k in ("unidexgrasp", "realdex", "grasp_anyting", "grasp_anything")):
        return "divide"
    if n.startswith("shadowhand") or "multidex" in n:
        return "none"
    return None


def _array(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=np.float64)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{what} has {arr.size} values, expected shape {shape}")
    return arr.reshape(shape)


@dataclass
class Decoded:
    """Records of one release file, in the source's metric object frame (object = mesh * mesh_scale)."""

    names: list[str]  # object name per record
    index: np.ndarray  # (N,) record index in the file
    rotation: np.ndarray  # (N, 3, 3) sr_grasp_description forearm
    translation: np.ndarray  # (N, 3)
    q: np.ndarray  # (N, 24) URDF joint order
    mesh_scale: np.ndarray  # (N,)
    bad: int
    bad_example: str


def decode_records(metadata: list, path: str, scale_mode: str, robot: str = "shadowhand") -> Decoded:
    """Decode release/MultiDex metadata entries; malformed entries are counted, not fatal."""
    names, index, rots, trans, qs, scales = [], [], [], [], [], []
    bad, example = 0, ""
    for i, m in enumerate(metadata):
        try:
            if isinstance(m, dict):
                r = _array(m["rotations"], (3, 3), "rotations")
                t = _array(m["translations"], (3,), "translations")
                q = _array(m["joint_positions"], (24,), "joint_positions")
                name = m["object_name"]
                scale = float(_array(m.get("scale", 1.0), (1,), "scale")[0]) if scale_mode != "none" else 1.0
                rot, tr = r, r @ t  # hand = R (x + t)
            elif isinstance(m, (tuple, list)) and len(m) == 3:
                qv = _array(m[0], (33,), "qpos")
                r6 = rot6d_robust_matrix(qv[3:9])
                if isinstance(m[1], str):  # MultiDex: (q, object_name, robot_name)
                    name, who = m[1], m[2]
                    if who != robot:
                        raise ValueError(f"robot {who!r} is not {robot!r}")
                    rot, tr = r6, qv[:3]
                else:  # MultiDex_UR: (q, object_rot_mat, object_name); the object was rotated by M
                    mrot = _array(m[1], (3, 3), "object_rot_mat")
                    name = m[2]
                    rot, tr = mrot.T @ r6, mrot.T @ qv[:3]
                q = qv[9:]
                scale = 1.0
            else:
                raise ValueError(f"entry is a {type(m).__name__}, expected a dict or a 3-tuple")
            if not isinstance(name, str):
                raise ValueError(f"object_name is a {type(name).__name__}")
            checked_member(name, "object_name", path)
            s = scale if scale_mode in ("multiply", "none") else (1.0 / scale if scale != 0 else np.nan)
            if not (np.isfinite(s) and s > 0):
                raise ValueError(f"scale {scale!r} gives no positive object scale")
        except (KeyError, ValueError, TypeError, IndexError, SourceFileError) as exc:
            bad += 1
            if not example:
                example = f"{path}: record {i}: {exc}"
            continue
        names.append(name)
        index.append(i)
        rots.append(rot)
        trans.append(tr)
        qs.append(q)
        scales.append(s)
    n = len(names)
    dec = Decoded(
        names,
        np.asarray(index, dtype=np.int64),
        np.asarray(rots).reshape(n, 3, 3),
        np.asarray(trans).reshape(n, 3),
        np.asarray(qs).reshape(n, 24),
        np.asarray(scales, dtype=np.float64),
        bad,
        example,
    )
    ok, first, why = pose_check(dec.rotation, dec.translation, dec.q)  # record by record, never the whole file
    if not ok.all():
        dec.bad += int((~ok).sum())
        dec.bad_example = dec.bad_example or f"{path}: record {int(dec.index[first])}: {why}"
        keep = np.flatnonzero(ok)
        dec = Decoded(
            [dec.names[i] for i in keep],
            dec.index[keep],
            dec.rotation[keep],
            dec.translation[keep],
            dec.q[keep],
            dec.mesh_scale[keep],
            dec.bad,
            dec.bad_example,
        )
    return dec


def load_release_file(path: Path) -> list:
    """The metadata list of a release ``.pt`` (safe torch load), or a clear error."""
    data = load_torch(path)
    if not isinstance(data, dict) or not isinstance(data.get("metadata"), (list, tuple)):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise SourceFileError(str(path), f"expected a dict with a 'metadata' list, found {keys}")
    return list(data["metadata"])


def batches_from_decoded(dec: Decoded, unit: str, result: UnitResult, verify: int) -> None:
    """Group decoded records by object and convert each group (engine convention) into ``result``."""
    result.bad_records += dec.bad
    if dec.bad and not result.bad_record_example:
        result.bad_record_example = dec.bad_example
    order: dict[str, list[int]] = {}
    for i, name in enumerate(dec.names):
        order.setdefault(name, []).append(i)
    for name, rows in order.items():
        rows_a = np.asarray(rows)
        result.batches.append(
            make_batch(
                HAND_MODEL,
                name,
                unit,
                dec.rotation[rows_a],
                dec.translation[rows_a],
                dec.q[rows_a],
                dec.mesh_scale[rows_a],
                [f"{unit}:{int(dec.index[i])}" for i in rows_a],
                verify,
            )
        )


def release_files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    """``.pt`` files under ``root`` matching any pattern; a ``*_downsample.pt`` is dropped when its full file exists."""
    found: list[Path] = []
    for pat in patterns:
        found += [p for p in iter_files(root, pat) if p not in found]
    found = sorted(set(found))
    names = {p for p in found}
    return [
        p
        for p in found
        if not (p.stem.endswith("_downsample") and p.with_name(p.stem[: -len("_downsample")] + ".pt") in names)
    ]


class ReleaseObjects:
    """Split and point-cloud lookups for the objects of release files (cached per folder)."""

    def __init__(self, root: Path, mesh_dirs: tuple[Path, ...], dataset: str) -> None:
        self.root = root
        self.mesh_dirs = mesh_dirs
        self.dataset = dataset
        self._splits: dict[Path, dict[str, str]] = {}
        self._pc_diag: dict[Path, dict[str, float]] = {}
        self.folder_of: dict[str, Path] = {}  # object name -> folder of the file it came from

    def splits(self, folder: Path) -> dict[str, str]:
        if folder not in self._splits:
            f = folder / "grasp.json"
            self._splits[folder] = read_split_file(f) if f.is_file() else {}
        return self._splits[folder]

    def pc_diagonal(self, folder: Path, name: str) -> float | None:
        """Bounding-box diagonal of the release's point cloud of ``name`` (None when unavailable)."""
        if folder not in self._pc_diag:
            f = folder / "object_pcds_nors.pkl"
            diags: dict[str, float] = {}
            if f.is_file() and os.path.getsize(f) <= PC_CHECK_MAX_BYTES:
                try:
                    data = load_pickle(f)
                    if isinstance(data, dict):
                        for k, v in data.items():
                            arr = np.asarray(v)
                            if arr.ndim == 2 and arr.shape[1] >= 3 and len(arr):
                                diags[str(k)] = float(np.linalg.norm(arr[:, :3].max(0) - arr[:, :3].min(0)))
                except SourceFileError:
                    diags = {}
            self._pc_diag[folder] = diags
        return self._pc_diag[folder].get(name)

    def object(self, key: str) -> SourceObject:
        folder = self.folder_of.get(key, self.root)
        mesh = find_mesh(key, [folder, self.root, *self.mesh_dirs])
        extra: dict[str, Any] = {"dataset": self.dataset, "release_folder": rel(self.root, folder)}
        diag = self.pc_diagonal(folder, key)
        if diag is not None:
            extra["point_cloud_diagonal"] = diag
        return SourceObject(key=key, label=label_from_key(key), mesh_path=str(mesh) if mesh else None,
                            split=self.splits(folder).get(key), extra=extra)


class DGALoader:
    """Every release ``.pt`` file under the source root (DexGraspNet, UniDexGrasp, RealDex, MultiDex_UR,
    combined ``Grasp_anyting`` subsets)."""

    name = "dga"
    licence = "see the DexGrasp-Anything release and the licence of the dataset each file derives from"
    hand_model = HAND_MODEL
    patterns: tuple[str, ...] = ("*.pt",)

    def __init__(self, root: Path, verify: int = 64, mesh_dirs: tuple[Path, ...] = (), scale_mode: str = "auto",
                 dataset: str = "DexGrasp-Anything release") -> None:
        if scale_mode not in ("auto", *SCALE_MODES):
            raise ValueError(f"scale_mode must be auto or one of {SCALE_MODES}, got {scale_mode!r}")
        self.root = Path(root)
        self.verify = verify
        self.scale_mode = scale_mode
        self.objects = ReleaseObjects(self.root, tuple(Path(p) for p in mesh_dirs), dataset)

    def units(self) -> list[str]:
        return [rel(self.root, p) for p in release_files(self.root, self.patterns)]

    def object(self, key: str) -> SourceObject:
        return self.objects.object(key)

    def load_unit(self, unit: str) -> UnitResult:
        path = self.root / unit
        mode = self.scale_mode if self.scale_mode != "auto" else scale_mode_for(path.name)
        metadata = load_release_file(path)
        if mode is None:
            if metadata and isinstance(metadata[0], (tuple, list)):
                mode = "none"
            else:
                raise SourceFileError(
                    str(path),
                    "cannot tell what 'scale' means in this file from its name",
                    "rename it as released (e.g. dexgraspnet_shadowhand.pt) or pass --scale-mode multiply|divide",
                )
        result = UnitResult(unit)
        dec = decode_records(metadata, str(path), mode)
        for name in set(dec.names):
            self.objects.folder_of.setdefault(name, path.parent)
        batches_from_decoded(dec, unit, result, self.verify)
        return result
