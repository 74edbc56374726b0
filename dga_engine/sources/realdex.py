"""RealDex, in DGA's curated form and (best effort) as the raw per-object captures.

DGA form (``Realdex.zip`` of the DexGrasp-Anything release), read like every release file
(:mod:`dga_engine.sources.dga`)::

    realdex_shadowhand[_downsample].pt   metadata [{rotations, translations, joint_positions(24), object_name, scale}]
                                         hand = R (x + t); the object is the point cloud / mesh divided by scale
    grasp.json, object_pcds_nors.pkl

Raw captures (any ``*.npz`` under the source root; the object is the folder the file is in)::

    qpos (T, 22)            rh_FFJ4 .. rh_THJ1 in URDF order (FF, MF, RF J4..J1, LF J5..J1, TH J5..J1), no wrist
    hand_transl (T, 3), hand_orient (T, 3 axis-angle)       the rh_forearm frame in the world
    object_transl (T, 3), object_orient (T, 3 axis-angle)   the object frame in the world
    object_points (7000, 3)                                 object surface points (object frame)

Raw sequences are motions, not grasps: a frame is kept when at least ``min_contacts`` fingertips are within
``contact_mm`` of ``object_points`` (every ``frame_stride``-th frame is considered). The wrist joints are 0.
The meaning of the raw keys follows our reading of the RealDex release; the FK check and the filter catch
a wrong reading (no frame passes), which the report shows. Meshes are looked up as for the release.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dga_engine.sources.base import (
    SourceObject,
    UnitResult,
    iter_files,
    make_batch,
    pose_check,
    rel,
)
from dga_engine.sources.dga import HAND_MODEL, DGALoader, release_files
from dga_engine.sources.kinematics import axis_angle_matrix, engine_fingertips
from dga_engine.sources.safeload import SourceFileError, load_npz

RAW_KEYS = ("qpos", "hand_transl", "hand_orient", "object_transl", "object_orient")


class RealDexLoader:
    name = "realdex"
    licence = "see RealDex (research use)"
    hand_model = HAND_MODEL

    def __init__(self, root: Path, verify: int = 64, mesh_dirs: tuple[Path, ...] = (), frame_stride: int = 1,
                 contact_mm: float = 10.0, min_contacts: int = 3) -> None:
        self.root = Path(root)
        self.verify = verify
        self.frame_stride = max(1, int(frame_stride))
        self.contact_mm = float(contact_mm)
        self.min_contacts = int(min_contacts)
        self._release = DGALoader(self.root, verify, mesh_dirs, scale_mode="divide", dataset="RealDex")

    def units(self) -> list[str]:
        pt = [rel(self.root, p) for p in release_files(self.root, ("realdex*.pt",))]
        raw = [rel(self.root, p) for p in iter_files(self.root, "*.npz")]
        return pt + raw

    def object(self, key: str) -> SourceObject:
        return self._release.object(key)

    def load_unit(self, unit: str) -> UnitResult:
        if unit.endswith(".pt"):
            return self._release.load_unit(unit)
        return self._load_raw(unit)

    def _load_raw(self, unit: str) -> UnitResult:
        path = self.root / unit
        z = load_npz(path)
        missing = [k for k in RAW_KEYS if k not in z]
        if missing:
            raise SourceFileError(str(path), f"missing arrays {missing}; a RealDex capture has {list(RAW_KEYS)}")
        q22 = np.asarray(z["qpos"], dtype=np.float64)
        t = len(q22)
        shapes = {
            "qpos": (t, 22),
            "hand_transl": (t, 3),
            "hand_orient": (t, 3),
            "object_transl": (t, 3),
            "object_orient": (t, 3),
        }
        for k, shape in shapes.items():
            if np.asarray(z[k]).shape != shape:
                raise SourceFileError(str(path), f"{k} has shape {np.asarray(z[k]).shape}, expected {shape}")
        key = path.parent.name if path.parent != self.root else path.stem
        self._release.objects.folder_of.setdefault(key, path.parent)
        frames = np.arange(0, t, self.frame_stride)
        r_h = axis_angle_matrix(np.asarray(z["hand_orient"], dtype=np.float64)[frames])
        r_o = axis_angle_matrix(np.asarray(z["object_orient"], dtype=np.float64)[frames])
        t_h = np.asarray(z["hand_transl"], dtype=np.float64)[frames]
        t_o = np.asarray(z["object_transl"], dtype=np.float64)[frames]
        rot = np.swapaxes(r_o, 1, 2) @ r_h  # forearm in the object frame
        trans = np.einsum("bji,bj->bi", r_o, t_h - t_o)
        q = np.concatenate([np.zeros((len(frames), 2)), q22[frames]], axis=1)  # no wrist in the capture
        result = UnitResult(unit)
        ok, first, why = pose_check(rot, trans, q)  # frame by frame
        bad = int((~ok).sum())
        if "object_points" in z and ok.any():
            pts = np.asarray(z["object_points"], dtype=np.float64).reshape(-1, 3)
            ok &= self._in_contact(rot, trans, q, pts, ok)
        result.bad_records = bad
        if bad:
            result.bad_record_example = f"{unit}: frame {int(frames[first])}: {why} ({bad} frames refused)"
        idx = np.flatnonzero(ok)
        if len(idx):
            result.batches.append(make_batch(HAND_MODEL, key, unit, rot[idx], trans[idx], q[idx], np.ones(len(idx)),
                                             [f"{unit}:{int(frames[i])}" for i in idx], self.verify))
        return result

    def _in_contact(
        self, rot: np.ndarray, trans: np.ndarray, q: np.ndarray, pts: np.ndarray, ok: np.ndarray
    ) -> np.ndarray:
        """Frames whose converted fingertips touch the object's points (at least ``min_contacts`` of 5)."""
        from scipy.spatial import cKDTree

        from dga_engine.sources.kinematics import converter

        conv = converter(HAND_MODEL)
        keep = np.zeros(len(q), dtype=bool)
        idx = np.flatnonzero(ok)
        t, r, qq = conv.convert(rot[idx], trans[idx], q[idx])
        tips = engine_fingertips(t, r, qq)
        d, _ = cKDTree(pts).query(tips.reshape(-1, 3))
        near = (d.reshape(-1, 5) * 1000.0 <= self.contact_mm).sum(axis=1)
        keep[idx] = near >= self.min_contacts
        return keep
