"""DexGraspNet (PKU-EPIC), as downloaded.

Layout under the source root (``<root>/sources/dexgraspnet`` by default)::

    dataset/<code>.npy            grasps of one object: npy v1.0, dtype object, shape (N,), each element
                                  {'qpos': {28 floats}, 'scale': float}; (or graspdata/<code>.npy, which
                                  adds qpos_st and energies; used only when dataset/ is absent)
    meshdata/<code>/coacd/decomposed.obj   the object mesh (multi-object OBJ of convex pieces), centred,
                                  normalised (radius ~1): metric object = vertices * scale
    splits.json | grasp.json      optional train/test split ({train, test} or DGA's {_train_split, ...})

``qpos`` keys: ``robot0:FFJ3 .. robot0:THJ0`` (22 joints, MJCF names), ``WRJTx/y/z`` (metres, the palm
origin in the object frame) and ``WRJRx/y/z`` (transforms3d euler 'sxyz' of the palm). The hand is
``shadow_hand_wrist_free.xml`` rooted at ``robot0:palm`` (kinematics table ``dexgraspnet_mjcf``).
Licence CC BY-NC 4.0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dga_engine.sources.base import (
    SourceObject,
    UnitResult,
    find_mesh,
    finite_rows,
    iter_files,
    label_from_key,
    make_batch,
    read_split_file,
    reject_implausible,
    rel,
)
from dga_engine.sources.kinematics import euler_sxyz_matrix, source_hand
from dga_engine.sources.safeload import SourceFileError, load_npy

TRANSLATION_KEYS = ("WRJTx", "WRJTy", "WRJTz")
ROTATION_KEYS = ("WRJRx", "WRJRy", "WRJRz")


def qpos_dicts_to_arrays(
    records: list[dict], joint_order: list[str], path: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """DexGraspNet/UniDexGrasp qpos dicts -> rotation (N,3,3), translation (N,3), joints (N,22), ok mask, problems."""
    n = len(records)
    trans = np.full((n, 3), np.nan)
    euler = np.full((n, 3), np.nan)
    joints = np.full((n, len(joint_order)), np.nan)
    problems: list[str] = []
    for i, q in enumerate(records):
        if not isinstance(q, dict):
            problems.append(f"record {i}: qpos is a {type(q).__name__}, expected a dict")
            continue
        try:
            trans[i] = [float(q[k]) for k in TRANSLATION_KEYS]
            euler[i] = [float(q[k]) for k in ROTATION_KEYS]
            joints[i] = [float(q[k]) for k in joint_order]
        except KeyError as exc:
            problems.append(f"record {i}: qpos has no key {exc.args[0]!r}")
        except (TypeError, ValueError) as exc:
            problems.append(f"record {i}: qpos value is not a number ({exc})")
    ok = finite_rows(trans, euler, joints)
    rot = np.tile(np.eye(3), (n, 1, 1))
    rot[ok] = euler_sxyz_matrix(euler[ok])
    return rot, trans, joints, ok, problems


class DexGraspNetLoader:
    name = "dexgraspnet"
    licence = "CC BY-NC 4.0"
    hand_model = "dexgraspnet_mjcf"

    def __init__(self, root: Path, verify: int = 64, mesh_dirs: tuple[Path, ...] = ()) -> None:
        self.root = Path(root)
        self.verify = verify
        self.mesh_dirs = tuple(Path(p) for p in mesh_dirs)
        self.grasp_dir = next((self.root / d for d in ("dataset", "graspdata") if (self.root / d).is_dir()), self.root)
        self.splits: dict[str, str] = {}
        for name in ("splits.json", "grasp.json"):
            if (self.root / name).is_file():
                self.splits.update(read_split_file(self.root / name))

    def units(self) -> list[str]:
        return [rel(self.root, p) for p in iter_files(self.grasp_dir, "*.npy") if p.parent == self.grasp_dir]

    def object(self, key: str) -> SourceObject:
        mesh = find_mesh(key, [self.root, *self.mesh_dirs])
        return SourceObject(key=key, label=label_from_key(key), mesh_path=str(mesh) if mesh else None,
                            split=self.splits.get(key), extra={"dataset": "DexGraspNet", "code": key})

    def load_unit(self, unit: str) -> UnitResult:
        path = self.root / unit
        code = path.stem
        arr = load_npy(path)
        if arr.ndim != 1:
            raise SourceFileError(str(path), f"expected a 1-D object array of grasp dicts, got shape {arr.shape}")
        result = UnitResult(unit)
        records, scales, problems = [], [], []
        for i, el in enumerate(arr):
            if not isinstance(el, dict) or "qpos" not in el or "scale" not in el:
                problems.append(f"record {i}: expected a dict with 'qpos' and 'scale'")
                records.append(None)
                scales.append(np.nan)
                continue
            records.append(el["qpos"])
            try:
                scales.append(float(el["scale"]))
            except (TypeError, ValueError):
                problems.append(f"record {i}: scale {el['scale']!r} is not a number")
                scales.append(np.nan)
        joint_order = source_hand(self.hand_model).joint_order
        rot, trans, joints, ok, more = qpos_dicts_to_arrays(records, joint_order, str(path))
        problems += [p for p in more if "NoneType" not in p]
        scales_arr = np.asarray(scales, dtype=np.float64)
        ok &= np.isfinite(scales_arr) & (scales_arr > 0)
        problems += reject_implausible(ok, rot, trans, joints)
        problems.sort(key=lambda p: int(p.split(":")[0].split()[-1]))  # first problem in file order
        result.bad_records = int((~ok).sum())
        if result.bad_records:
            result.bad_record_example = f"{unit}: {problems[0] if problems else 'non-finite or non-positive values'}"
        idx = np.flatnonzero(ok)
        if len(idx):
            result.batches.append(
                make_batch(
                    self.hand_model,
                    code,
                    unit,
                    rot[idx],
                    trans[idx],
                    joints[idx],
                    scales_arr[idx],
                    [f"{unit}:{i}" for i in idx],
                    self.verify,
                )
            )
        return result

