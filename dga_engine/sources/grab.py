"""GRAB (Taheri et al., ECCV 2020) as downloaded -> DexGRAB: human grasps retargeted to the ShadowHand.

Layout under the source root (``<root>/sources/grab``: the folder GRAB's archives unzip into)::

    grab/s1..s10/<object>_<intent>[_n].npz      one capture sequence each (120 fps)
    tools/object_meshes/contact_meshes/<object>.ply   object meshes, metres
    tools/subject_meshes/{male,female}/s<k>_rhand.ply the subjects' own MANO hand templates

(the ``grab`` folder itself may be given as the root; its parent then holds ``tools``). Every key of a
sequence file is a 0-d object array read with ``.item()``; the ones used here::

    obj_name, sbj_id, motion_intent, n_comps (24), framerate (120)
    rhand   {params: {global_orient (T,3) axis-angle, hand_pose (T,n_comps) PCA, transl (T,3), fullpose}, vtemp: path}
    object  {params: {global_orient (T,3) axis-angle, transl (T,3)}, object_mesh: path}
    contact {object (T, V_obj) int labels 0..55, body (T, V_body)}

(``body``, ``lhand`` and ``table`` are not read). Paths inside a file are relative to the folder holding
``grab`` and ``tools``, as GRAB's own code resolves them.

Per sequence (one work unit, streamed: one file in memory at a time):

1. contact frames: those whose object contact labels include the right hand (22 = R_Hand, 41-55 = the
   right fingers); of those, every ``frame_stride``-th frame of the sequence is considered;
2. the MANO right hand (the user's ``MANO_RIGHT.pkl``, :mod:`dga_engine.retarget.mano`) is posed as GRAB
   poses it (subject template, PCA hand pose, flat hand mean) and its 21 keypoints are moved into the
   object frame. GRAB places the object as ``v @ R + t`` (row vectors, R from the axis-angle, no centre),
   i.e. ``p_world = R^T p_obj + t``, so ``p_obj = R (p_world - t)``;
3. near-duplicate consecutive frames are thinned: a frame is kept when some keypoint moved at least
   ``min_change_mm`` since the last kept frame (the first frame of each run of contact frames is always
   kept);
4. the kept frames are retargeted in order (:mod:`dga_engine.retarget.engine`), each run of contact
   frames warm-started afresh; frames whose retargeted fingertips miss the human ones by more than
   ``max_tip_error_mm`` are counted as bad records and dropped.

Record ids: ``grab/s1/mug_drink_1.npz:<frame>;subject=s1;intent=drink``. Splits are GRAB's defaults
(test: mug, wineglass, camera, binoculars, fryingpan, toothpaste; val: apple, toothbrush, elephant, hand;
train: the rest). Memory per sequence: the file's ``contact`` member (T x 10475 body labels, about
T x 84 kB as int64) is the largest; the rest is O(T x 21 x 3).
"""

from __future__ import annotations

import weakref
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dga_engine.retarget.engine import RetargetConfig, Retargeter
from dga_engine.retarget.mano import ManoHand, load_mano_arrays, mano_model_path
from dga_engine.sources.base import GraspBatch, SourceObject, UnitResult, checked_member, iter_files, rel
from dga_engine.sources.kinematics import axis_angle_matrix
from dga_engine.sources.safeload import SourceFileError, npy_from_bytes

HAND_MODEL = "mano"
RIGHT_HAND_LABELS = frozenset({22, *range(41, 56)})  # R_Hand, R_Index1 .. R_Thumb3 (GRAB's contact_ids)
TEST_OBJECTS = frozenset({"mug", "wineglass", "camera", "binoculars", "fryingpan", "toothpaste"})
VAL_OBJECTS = frozenset({"apple", "toothbrush", "elephant", "hand"})
MESH_DIR = "tools/object_meshes/contact_meshes"
MEMBERS = ("obj_name", "sbj_id", "motion_intent", "n_comps", "rhand", "object", "contact")
MAX_MEMBER_BYTES = 2 << 30  # a member larger than this (decompressed) is not a GRAB sequence


def split_of(obj_name: str) -> str:
    return "test" if obj_name in TEST_OBJECTS else "val" if obj_name in VAL_OBJECTS else "train"


def right_hand_contact(labels: np.ndarray) -> np.ndarray:
    """(T,) frames whose object contact labels (T, V) include the right hand or one of its fingers."""
    lab = np.asarray(labels)
    return np.isin(lab, list(RIGHT_HAND_LABELS)).any(axis=1)


def object_vertices_world(vertices: np.ndarray, global_orient: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """GRAB's object placement: (T, V, 3) = ``v @ R + t`` with R from the (T, 3) axis-angle (no centre)."""
    r = axis_angle_matrix(np.asarray(global_orient, dtype=np.float64).reshape(-1, 3))
    return (
        np.einsum("vi,tij->tvj", np.asarray(vertices, dtype=np.float64), r)
        + np.asarray(transl, dtype=np.float64)[:, None]
    )


def world_to_object(points: np.ndarray, global_orient: np.ndarray, transl: np.ndarray) -> np.ndarray:
    """(T, N, 3) world points into the object frame: the inverse of :func:`object_vertices_world`."""
    r = axis_angle_matrix(np.asarray(global_orient, dtype=np.float64).reshape(-1, 3))
    return np.einsum(
        "tij,tnj->tni", r, np.asarray(points, dtype=np.float64) - np.asarray(transl, dtype=np.float64)[:, None]
    )


def thin_frames(keypoints: np.ndarray, starts: np.ndarray, min_change_mm: float) -> np.ndarray:
    """Indices kept: every segment start, then frames whose keypoints moved >= min_change_mm since the last kept.

    keypoints: (N, 21, 3) metres, in sequence order; starts: (N,) bool, True where a contact segment begins.
    """
    keep: list[int] = []
    for i in range(len(keypoints)):
        if not keep or starts[i]:
            keep.append(i)
        elif np.linalg.norm(keypoints[i] - keypoints[keep[-1]], axis=1).max() * 1000.0 >= min_change_mm:
            keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def read_sequence(path: Path, members: tuple[str, ...] = MEMBERS) -> dict[str, Any]:
    """The named members of a GRAB ``.npz`` (each a 0-d array, ``.item()``-ed), read with the safe unpickler."""
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
            missing = [m for m in members if m not in infos]
            if missing:
                raise SourceFileError(str(path), f"not a GRAB sequence: missing {missing}")
            for m in members:
                if infos[m].file_size > MAX_MEMBER_BYTES:
                    raise SourceFileError(
                        str(path), f"member {m} is {infos[m].file_size} bytes, larger than a GRAB sequence's"
                    )
                arr = npy_from_bytes(zf.read(infos[m]), f"{path}[{m}]")
                out[m] = arr.item() if arr.shape == () else arr
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise SourceFileError(str(path), f"not a readable .npz file: {exc}") from None
    return out


def _array(d: Any, key: str, path: Path, shape: tuple[int | None, ...]) -> np.ndarray:
    if not isinstance(d, dict) or key not in d:
        raise SourceFileError(str(path), f"missing {key}")
    a = np.asarray(d[key])
    if (
        a.dtype.kind not in "fiu"
        or a.ndim != len(shape)
        or any(s is not None and s != n for s, n in zip(shape, a.shape))
    ):
        raise SourceFileError(str(path), f"{key} has shape {a.shape} ({a.dtype}), expected {shape}")
    return a


class GrabLoader:
    name = "grab"
    licence = "GRAB (non-commercial research licence, grab.is.tue.mpg.de); hand model MANO (mano.is.tue.mpg.de)"
    hand_model = HAND_MODEL

    def __init__(self, root: Path, mano_model: str | None = None, frame_stride: int = 1, min_change_mm: float = 5.0,
                 max_tip_error_mm: float = 25.0, retarget: RetargetConfig | None = None) -> None:
        root = Path(root)
        self.data = root / "grab" if (root / "grab").is_dir() else root  # holds s1..s10
        self.base = self.data.parent  # holds grab/ and tools/; the files' paths are relative to it
        self.root = root
        self.arrays = load_mano_arrays(mano_model_path(mano_model))
        self.frame_stride = max(1, int(frame_stride))
        self.min_change_mm = float(min_change_mm)
        self.max_tip_error_mm = float(max_tip_error_mm)
        self.retargeter = Retargeter(retarget)
        self._finalizer = weakref.finalize(self, self.retargeter.close)
        self._hands: dict[tuple[str, int], ManoHand] = {}
        self._meshes: dict[str, Path] = {}

    def close(self) -> None:
        self._finalizer()

    def units(self) -> list[str]:
        return [rel(self.root, p) for p in iter_files(self.data, "s*/*.npz")]

    def object(self, key: str) -> SourceObject:
        mesh = self._meshes.get(key) or self._resolve(f"{MESH_DIR}/{checked_member(key, 'object name', key)}.ply")
        return SourceObject(
            key=key,
            label=key.replace("_", " "),
            mesh_path=str(mesh) if mesh else None,
            split=split_of(key),
            extra={"dataset": "GRAB"},
        )

    def _resolve(self, inner: str) -> Path | None:
        """A path named inside a sequence file (relative to the folder holding grab/ and tools/)."""
        for base in (self.base, self.root):
            p = base / inner
            if p.is_file():
                return p
        return None

    def _hand(self, vtemp: Any, n_comps: int, path: Path) -> ManoHand:
        key = (str(vtemp), n_comps)
        if key not in self._hands:
            import trimesh

            inner = checked_member(str(vtemp), "rhand.vtemp", str(path))
            mesh_path = self._resolve(inner)
            if mesh_path is None:
                raise SourceFileError(str(path), f"subject hand template {inner} not found under {self.base}",
                                      "GRAB's tools/subject_meshes must sit next to the grab folder")
            try:
                verts = np.asarray(trimesh.load(mesh_path, process=False).vertices)
            except Exception as exc:  # trimesh raises many types for bad files
                raise SourceFileError(str(mesh_path), f"cannot read the hand template: {exc}") from None
            self._hands[key] = ManoHand(self.arrays, verts, n_comps)
        return self._hands[key]

    def load_unit(self, unit: str) -> UnitResult:
        path = self.root / unit
        seq = read_sequence(path)
        obj = checked_member(str(seq["obj_name"]), "obj_name", str(path))
        subject, intent = str(seq["sbj_id"]), str(seq["motion_intent"])
        n_comps = int(seq["n_comps"])
        rhand, objd, contact = seq["rhand"], seq["object"], seq["contact"]
        params = rhand.get("params") if isinstance(rhand, dict) else None
        oparams = objd.get("params") if isinstance(objd, dict) else None
        go = _array(params, "global_orient", path, (None, 3))
        t = len(go)
        hp = _array(params, "hand_pose", path, (t, n_comps))
        tr = _array(params, "transl", path, (t, 3))
        ogo = _array(oparams, "global_orient", path, (t, 3))
        otr = _array(oparams, "transl", path, (t, 3))
        labels = _array(contact, "object", path, (t, None))
        in_contact = right_hand_contact(labels)
        del seq, contact, labels  # the body contact labels are the bulk of the file
        if isinstance(objd, dict) and objd.get("object_mesh"):
            mesh = self._resolve(checked_member(str(objd["object_mesh"]), "object.object_mesh", str(path)))
            if mesh is not None:
                self._meshes.setdefault(obj, mesh)
        result = UnitResult(unit)
        frames = np.flatnonzero(in_contact & (np.arange(t) % self.frame_stride == 0))
        finite = np.isfinite(np.concatenate([go, hp, tr, ogo, otr], axis=1)[frames]).all(axis=1)
        if (~finite).any():
            result.bad_records += int((~finite).sum())
            result.bad_record_example = f"{unit}: {int((~finite).sum())} contact frames with non-finite values"
        frames = frames[finite]
        if not len(frames):
            return result
        hand = self._hand(rhand.get("vtemp"), n_comps, path)
        world = hand.keypoints(go[frames], hp[frames], tr[frames])
        kp = world_to_object(world, ogo[frames], otr[frames])
        starts = np.r_[True, np.diff(frames) > self.frame_stride]  # a break in the contact starts a segment
        keep = thin_frames(kp, starts, self.min_change_mm)
        frames, kp, starts = frames[keep], kp[keep], starts[keep]
        res = self.retargeter.run(kp, frames, starts)
        worst = res.tip_error_mm.max(axis=1)
        ok = worst <= self.max_tip_error_mm
        if (~ok).any():
            result.bad_records += int((~ok).sum())
            if not result.bad_record_example:
                result.bad_record_example = (
                    f"{unit}:{int(frames[~ok][0])}: retargeted fingertips miss the human ones by "
                    f"{worst[~ok][0]:.1f} mm (> {self.max_tip_error_mm} mm)"
                )
        if ok.any():
            ids = [f"{unit}:{int(f)};subject={subject};intent={intent}" for f in frames[ok]]
            result.batches.append(GraspBatch(obj, unit, res.translation[ok], res.rotation[ok], res.joints[ok],
                                             np.ones(int(ok.sum())), ids, res.tip_error_mm[ok].max(axis=0)))
        return result

