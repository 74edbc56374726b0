"""UniDexGrasp (PKU-EPIC) DFCData, as downloaded.

Layout under the source root (``<root>/sources/unidexgrasp``; the ``DFCData/`` folder itself or its parent)::

    splits/<source>.json                          {"train": [instance, ...], "test": [...]}
    poses/<source>/<Category-id>/NNNNN.npz        one grasp per file:
        qpos.npy   0-d object array: the DexGraspNet 28-key dict (robot0:FFJ3.., WRJTx.., WRJRx..)
        scale.npy  0-d float32 = 1 / object_scale: the metric object is the mesh divided by it
        plane.npy  (4,) table plane A, B, C, D (kept out of the grasp record)
    meshes/<source>/<Category-id>/coacd/decomposed.obj   the normalised object mesh

The hand is DexGraspNet's wrist-free MJCF (palm root, euler 'sxyz'), kinematics table ``dexgraspnet_mjcf``.
One work unit is one object folder; an unreadable grasp file is skipped and reported, the rest load.
Licence CC BY-NC 4.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dga_engine.sources.base import (
    SourceObject,
    UnitResult,
    find_mesh,
    label_from_key,
    make_batch,
    read_split_file,
    reject_implausible,
    rel,
)
from dga_engine.sources.dexgraspnet import qpos_dicts_to_arrays
from dga_engine.sources.kinematics import source_hand
from dga_engine.sources.safeload import SourceFileError, load_npz


class UniDexGraspLoader:
    name = "unidexgrasp"
    licence = "CC BY-NC 4.0"
    hand_model = "dexgraspnet_mjcf"

    def __init__(self, root: Path, verify: int = 64, mesh_dirs: tuple[Path, ...] = ()) -> None:
        root = Path(root)
        self.root = root / "DFCData" if (root / "DFCData").is_dir() else root
        self.verify = verify
        self.mesh_dirs = tuple(Path(p) for p in mesh_dirs)
        self.splits: dict[str, str] = {}
        split_dir = self.root / "splits"
        if split_dir.is_dir():
            for f in sorted(split_dir.glob("*.json")):
                for inst, split in read_split_file(f).items():
                    self.splits[f"{f.stem}/{inst}"] = split

    def units(self) -> list[str]:
        poses = self.root / "poses"
        if not poses.is_dir():
            return []
        out = []
        for src in sorted(p for p in poses.iterdir() if p.is_dir() and not p.name.startswith(".")):
            out += [rel(self.root, d) for d in sorted(src.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        return out

    def object(self, key: str) -> SourceObject:
        mesh = find_mesh(key, [self.root, *self.mesh_dirs])
        src, inst = key.split("/", 1)
        return SourceObject(
            key=key,
            label=label_from_key(inst.rsplit("-", 1)[0]),
            mesh_path=str(mesh) if mesh else None,
            split=self.splits.get(key),
            extra={"dataset": "UniDexGrasp", "subset": src, "instance": inst},
        )

    def load_unit(self, unit: str) -> UnitResult:
        folder = self.root / unit
        key = "/".join(Path(unit).parts[-2:])  # <source>/<Category-id>
        result = UnitResult(unit)
        qposes, scales, ids = [], [], []
        files = sorted(p for p in folder.glob("*.npz") if not p.name.startswith("."))
        if not files:
            raise SourceFileError(str(folder), "no .npz grasp files in this object folder")
        for f in files:
            name = rel(self.root, f)
            try:
                z = load_npz(f)
                missing = [k for k in ("qpos", "scale") if k not in z]
                if missing:
                    raise SourceFileError(
                        str(f), f"missing member(s) {missing}; expected qpos.npy, scale.npy, plane.npy"
                    )
                qpos = z["qpos"]
                qpos = qpos.item() if isinstance(qpos, np.ndarray) and qpos.dtype == object and qpos.size == 1 else qpos
                if not isinstance(qpos, dict):
                    raise SourceFileError(
                        str(f), f"qpos holds a {type(qpos).__name__}, expected a 0-d object array of a dict"
                    )
                scale = np.asarray(z["scale"], dtype=np.float64).reshape(-1)
                if scale.size != 1:
                    raise SourceFileError(str(f), f"scale has {scale.size} values, expected one")
            except SourceFileError as exc:
                result.skipped_files.append((name, exc.problem))
                continue
            qposes.append(qpos)
            scales.append(float(scale[0]))
            ids.append(f"{name}:0")
        if not qposes:
            return result
        joint_order = source_hand(self.hand_model).joint_order
        rot, trans, joints, ok, problems = qpos_dicts_to_arrays(qposes, joint_order, str(folder))
        scale_arr = np.asarray(scales)
        ok &= np.isfinite(scale_arr) & (scale_arr > 0)
        problems += reject_implausible(ok, rot, trans, joints)
        result.bad_records = int((~ok).sum())
        if result.bad_records:
            result.bad_record_example = f"{unit}: {problems[0] if problems else 'non-finite or non-positive scale'}"
        idx = np.flatnonzero(ok)
        if len(idx):
            # scale.npy stores 1/object_scale: the metric object is the mesh divided by it.
            result.batches.append(
                make_batch(
                    self.hand_model,
                    key,
                    unit,
                    rot[idx],
                    trans[idx],
                    joints[idx],
                    1.0 / scale_arr[idx],
                    [ids[i] for i in idx],
                    self.verify,
                )
            )
        return result
