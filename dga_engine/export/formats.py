"""The layouts other projects read, one small writer per format, each with the reader that checks it.

Every format converts the engine's poses with the inverse of the converter our loaders use
(:func:`dga_engine.export.convert.to_source`), writes files in the layout that project reads, and reads
them back with our own loader for that layout (``read_back``), so the stage can compare fingertips.

- ``dexgraspnet``: ``dataset/<object>.npy`` (1-D object array of ``{'qpos': {28 floats}, 'scale', 'grasp_id'}``;
  joints ``robot0:FFJ3..THJ0``, ``WRJTx/y/z`` metres, ``WRJRx/y/z`` transforms3d euler 'sxyz' of the palm, the
  wrist folded into the root) and ``meshdata/<object>/coacd/decomposed.obj`` (the convex parts). The mesh is
  metric (metres) and ``scale`` is the grasp's ``object_scale`` (DexGraspNet's own meshes are unit-size with
  scales 0.06..0.15: a metric mesh times ``scale`` is the same contract). Read back by ``DexGraspNetLoader``.
- ``dga``: ``dga_engine_shadowhand.pt`` ``{'info': {'num_per_object'}, 'metadata': [{'rotations', 'translations',
  'joint_positions', 'object_name', 'scale', 'grasp_id'}]}`` on the sr_grasp_description URDF (hand = R (x + t)),
  ``scale`` multiplying the object as in DGA's DexGraspNet file; ``object_pcds_nors.pkl`` ``{object: (10240, 6)}``
  points and normals of the stored mesh; ``grasp.json`` splits. Read back by ``DGALoader(scale_mode="multiply")``.
- ``bodex``: DexGraspBench's per-grasp ``graspdata/<object>/<k>.npy`` ``{'obj_path', 'obj_scale', 'obj_pose' (7),
  'pregrasp_qpos', 'grasp_qpos', 'squeeze_qpos' (29 each: hand root position + quaternion wxyz + 22 joints),
  'grasp_id'}`` and ``objects/<object>/urdf/meshes/convex_piece_<i>.obj`` + ``info/simplified.json``.
  Pre-grasp opens every joint by ``open_fraction`` toward zero; squeeze = 2 grasp - pregrasp (BODex's rule).
- ``mjcf-keyframes``: ``<object>-s<scale>.xml``, the filter's own MuJoCo scene (hand with one servo per joint,
  free object with its convex parts, every protocol setting) with one ``<key>`` per grasp (``qpos`` = hand
  joints + object pose, ``ctrl`` = joint targets, named by grasp id). The hand's forearm collision mesh is
  referenced from the installed gymnasium-robotics (``<compiler meshdir>``). Read back with MuJoCo itself.
"""

from __future__ import annotations

import io
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mujoco
import numpy as np
import trimesh

from dga_engine.conventions import JOINT_NAMES
from dga_engine.export.convert import to_source
from dga_engine.objects.store import ObjectAsset
from dga_engine.sources.kinematics import converter, quat_wxyz_matrix


@dataclass
class Rows:
    """N grasps of one object in the engine's convention (float64)."""

    grasp_id: list[str]
    translation: np.ndarray  # (N, 3)
    rotation: np.ndarray  # (N, 3, 3)
    joints: np.ndarray  # (N, 24)
    scale: np.ndarray  # (N,)

    def __len__(self) -> int:
        return len(self.grasp_id)

    def take(self, idx: np.ndarray) -> Rows:
        return Rows(
            [self.grasp_id[i] for i in idx],
            self.translation[idx],
            self.rotation[idx],
            self.joints[idx],
            self.scale[idx],
        )


@dataclass
class Poses:
    """Engine poses read back from an export, in the order they were written, and the source model's fingertip check."""

    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray


class Format(Protocol):
    name: str
    hand_model: str  # the hand model the files are in

    def add(self, object_id: str, asset: ObjectAsset, rows: Rows) -> None: ...
    def finish(self, splits: dict[str, str]) -> None: ...
    def files(self) -> list[str]: ...
    def read_back(self) -> Poses: ...
    # (N, 5) over every row written: the format's hand model vs ours
    def model_residual_mm(self, rows: Rows) -> np.ndarray: ...


def _matrix_to_quat(r: np.ndarray) -> np.ndarray:
    out = np.empty((len(r), 4))
    for i, m in enumerate(r):
        mujoco.mju_mat2Quat(out[i], np.ascontiguousarray(m).reshape(-1))
    out[out[:, 0] < 0] *= -1
    return out


def _euler_sxyz(r: np.ndarray) -> np.ndarray:
    import torch

    from dga_engine.hand.rotations import matrix_to_euler_sxyz

    return matrix_to_euler_sxyz(torch.as_tensor(r, dtype=torch.float64)).numpy()


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _npy(obj: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, obj, allow_pickle=True)
    return buf.getvalue()


def _parts_obj(parts: list[trimesh.Trimesh]) -> bytes:
    """A multi-object OBJ of the convex parts (``o piece_<i>`` groups), as CoACD's decomposed.obj."""
    lines, base = [], 1
    for i, p in enumerate(parts):
        lines.append(f"o piece_{i}")
        lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in np.asarray(p.vertices)]
        lines += [f"f {a + base} {b + base} {c + base}" for a, b, c in np.asarray(p.faces)]
        base += len(p.vertices)
    return ("\n".join(lines) + "\n").encode()


def _mesh_obj(mesh: trimesh.Trimesh) -> bytes:
    return _parts_obj([mesh]).replace(b"o piece_0\n", b"")


# ---- DexGraspNet ---------------------------------------------------------------------------------------------


class DexGraspNetFormat:
    name = "dexgraspnet"
    hand_model = "dexgraspnet_mjcf"

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.conv = converter(self.hand_model)
        self._codes: list[str] = []
        self._files: list[str] = []

    def add(self, object_id: str, asset: ObjectAsset, rows: Rows) -> None:
        r, t, q = to_source(self.conv, rows.translation, rows.rotation, rows.joints)
        euler = _euler_sxyz(r)
        names = self.conv.hand.joint_order
        records = np.empty(len(rows), dtype=object)
        for i in range(len(rows)):
            qpos = {n: float(v) for n, v in zip(names, q[i])}
            qpos.update({f"WRJT{a}": float(v) for a, v in zip("xyz", t[i])})
            qpos.update({f"WRJR{a}": float(v) for a, v in zip("xyz", euler[i])})
            records[i] = {"qpos": qpos, "scale": float(rows.scale[i]), "grasp_id": rows.grasp_id[i]}
        npy = self.out / "dataset" / f"{object_id}.npy"
        _write(npy, _npy(records))
        mesh = self.out / "meshdata" / object_id / "coacd" / "decomposed.obj"
        _write(mesh, _parts_obj(asset.parts or [asset.mesh]))
        self._codes.append(object_id)
        self._files += [str(npy), str(mesh)]

    def finish(self, splits: dict[str, str]) -> None:
        if splits:
            path = self.out / "splits.json"
            groups: dict[str, list[str]] = {}
            for oid, split in splits.items():
                groups.setdefault(split, []).append(oid)
            _write(path, json.dumps(groups, indent=1, sort_keys=True).encode())
            self._files.append(str(path))

    def files(self) -> list[str]:
        return list(self._files)

    def read_back(self) -> Poses:
        from dga_engine.sources.dexgraspnet import DexGraspNetLoader

        loader = DexGraspNetLoader(self.out, verify=0)
        batches = [b for code in self._codes for b in loader.load_unit(f"dataset/{code}.npy").batches]
        return _concat(batches)

    def model_residual_mm(self, rows: Rows) -> np.ndarray:
        r, t, q = to_source(self.conv, rows.translation, rows.rotation, rows.joints)
        return self.conv.fingertip_residual_mm(r, t, q)


# ---- DexGrasp-Anything release ----------------------------------------------------------------------------------


class DGAFormat:
    name = "dga"
    hand_model = "sr_grasp_description"
    FILE = "dga_engine_shadowhand.pt"

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.conv = converter(self.hand_model)
        self._metadata: list[dict] = []
        self._counts: dict[str, int] = {}
        self._pcs: dict[str, np.ndarray] = {}
        self._files: list[str] = []

    def add(self, object_id: str, asset: ObjectAsset, rows: Rows) -> None:
        import torch

        r, t, q = to_source(self.conv, rows.translation, rows.rotation, rows.joints)
        offset = np.einsum("bji,bj->bi", r, t)  # hand = R (x + t): t = R^T T
        for i in range(len(rows)):
            self._metadata.append({
                "rotations": torch.tensor(r[i], dtype=torch.float32),
                "translations": torch.tensor(offset[i], dtype=torch.float32),
                "joint_positions": torch.tensor(q[i], dtype=torch.float32),
                "object_name": object_id,
                "scale": float(rows.scale[i]),
                "grasp_id": rows.grasp_id[i],
            })
        self._counts[object_id] = self._counts.get(object_id, 0) + len(rows)
        if object_id not in self._pcs:
            self._pcs[object_id] = np.concatenate([asset.dense_points, asset.dense_normals], axis=1).astype(np.float32)

    def finish(self, splits: dict[str, str]) -> None:
        import torch

        buf = io.BytesIO()
        torch.save({"info": {"num_per_object": dict(self._counts)}, "metadata": self._metadata}, buf)
        _write(self.out / self.FILE, buf.getvalue())
        _write(self.out / "object_pcds_nors.pkl", pickle.dumps(self._pcs, protocol=4))
        objects = sorted(self._counts)
        test = sorted(o for o in objects if splits.get(o) == "test")
        grasp = {"_train_split": [o for o in objects if o not in set(test)], "_test_split": test, "_all_split": objects}
        _write(self.out / "grasp.json", json.dumps(grasp, indent=1).encode())
        self._files = [str(self.out / n) for n in (self.FILE, "object_pcds_nors.pkl", "grasp.json")]

    def files(self) -> list[str]:
        return list(self._files)

    def read_back(self) -> Poses:
        from dga_engine.sources.dga import DGALoader

        result = DGALoader(self.out, verify=0, scale_mode="multiply").load_unit(self.FILE)
        return _concat(result.batches)

    def model_residual_mm(self, rows: Rows) -> np.ndarray:
        r, t, q = to_source(self.conv, rows.translation, rows.rotation, rows.joints)
        return self.conv.fingertip_residual_mm(r, t, q)


# ---- DexGraspBench / BODex --------------------------------------------------------------------------------------


class BODexFormat:
    name = "bodex"
    hand_model = "dexgraspbench_shadow"
    DENSITY = 1000.0  # kg/m^3 written to info/simplified.json (DexGraspBench rescales it to its configured mass)

    def __init__(self, out: Path, open_fraction: float = 0.2) -> None:
        from dga_engine.export.dexgraspbench import bench_converter

        if not 0.0 <= open_fraction < 1.0:
            raise ValueError("open_fraction must be in [0, 1)")
        self.out = Path(out)
        self.conv = bench_converter()
        self.open_fraction = open_fraction
        self._grasp_files: list[Path] = []
        self._files: list[str] = []

    def _object_folder(self, object_id: str, asset: ObjectAsset) -> Path:
        folder = self.out / "objects" / object_id
        if not (folder / "info" / "simplified.json").exists():
            for i, part in enumerate(asset.parts or [asset.mesh]):
                _write(folder / "urdf" / "meshes" / f"convex_piece_{i}.obj", _mesh_obj(part))
            volume = float(asset.meta.volume or abs(asset.mesh.volume))
            info = {"mass": volume * self.DENSITY, "density": self.DENSITY, "scale": 1.0}
            _write(folder / "info" / "simplified.json", json.dumps(info).encode())
            self._files.append(str(folder))
        return folder

    def add(self, object_id: str, asset: ObjectAsset, rows: Rows) -> None:
        folder = self._object_folder(object_id, asset)
        r, t, q = to_source(self.conv, rows.translation, rows.rotation, rows.joints)
        pose = np.concatenate([t, _matrix_to_quat(r)], axis=1)
        pre = q * (1.0 - self.open_fraction)
        base = len([p for p in self._grasp_files if p.parent.name == object_id])
        for i in range(len(rows)):
            record = {
                "obj_path": str(folder.resolve()),
                "obj_scale": float(rows.scale[i]),
                "obj_pose": np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]),
                "pregrasp_qpos": np.concatenate([pose[i], pre[i]]),
                "grasp_qpos": np.concatenate([pose[i], q[i]]),
                "squeeze_qpos": np.concatenate([pose[i], 2.0 * q[i] - pre[i]]),
                "grasp_id": rows.grasp_id[i],
            }
            path = self.out / "graspdata" / object_id / f"{base + i:06d}.npy"
            holder = np.empty((), dtype=object)
            holder[()] = record
            _write(path, _npy(holder))
            self._grasp_files.append(path)

    def finish(self, splits: dict[str, str]) -> None:
        pass

    def files(self) -> list[str]:
        return self._files + [str(p) for p in self._grasp_files]

    def read_back(self) -> Poses:
        """Each grasp file read with the safe loader; ``grasp_qpos`` converted as our loaders convert."""
        from dga_engine.sources.safeload import SourceFileError, load_npy

        r, t, q = [], [], []
        for path in self._grasp_files:
            arr = load_npy(path)
            record = arr.item() if arr.shape == () else None
            if not isinstance(record, dict) or "grasp_qpos" not in record:
                raise SourceFileError(str(path), "expected a DexGraspBench grasp dict with 'grasp_qpos'")
            g = np.asarray(record["grasp_qpos"], dtype=np.float64)
            if g.shape != (7 + self.conv.hand.n_joints,):
                raise SourceFileError(str(path), f"grasp_qpos has shape {g.shape}, expected (29,)")
            r.append(quat_wxyz_matrix(g[3:7]))
            t.append(g[:3])
            q.append(g[7:])
        tt, rr, qq = self.conv.convert(
            np.array(r).reshape(-1, 3, 3), np.array(t).reshape(-1, 3), np.array(q).reshape(len(q), -1)
        )
        return Poses(tt, rr, qq)

    def model_residual_mm(self, rows: Rows) -> np.ndarray:
        r, t, q = to_source(self.conv, rows.translation, rows.rotation, rows.joints)
        return self.conv.fingertip_residual_mm(r, t, q)


# ---- MuJoCo keyframes ------------------------------------------------------------------------------------------


class KeyframesFormat:
    name = "mjcf-keyframes"
    hand_model = "gymnasium-robotics ShadowHand MJCF (the engine's own)"

    def __init__(self, out: Path) -> None:
        from dga_engine.simulate.config import FilterConfig

        self.out = Path(out)
        self.config = FilterConfig()
        self._files: list[Path] = []
        self._read: tuple[Poses, np.ndarray] | None = None

    @staticmethod
    def file_name(object_id: str, scale: float) -> str:
        return f"{object_id}-s{scale:.6g}".replace(".", "p") + ".xml"

    def add(self, object_id: str, asset: ObjectAsset, rows: Rows) -> None:
        from dga_engine.simulate.scene import object_pose, scene_spec

        for scale in sorted(set(np.round(rows.scale, 6).tolist())):
            idx = np.flatnonzero(np.isclose(rows.scale, scale, atol=5e-7))
            spec = scene_spec(asset.parts or [asset.mesh], float(scale), self.config)
            model = spec.compile()
            hand = np.array([model.jnt_qposadr[model.joint(f"robot0:{n}").id] for n in JOINT_NAMES])
            obj = int(model.jnt_qposadr[model.joint("object:free").id])
            path = self.out / self.file_name(object_id, scale)
            for i in idx:
                qpos = np.zeros(model.nq)
                qpos[hand] = rows.joints[i]
                pos, quat = object_pose(rows.translation[i], rows.rotation[i])
                qpos[obj:obj + 3], qpos[obj + 3:obj + 7] = pos, quat
                key = spec.add_key()
                key.name = rows.grasp_id[i]
                key.qpos = qpos.tolist()
                key.ctrl = rows.joints[i].tolist()
            spec.compile()  # fails loudly on a malformed key before anything is written
            _write(path, spec.to_xml().encode())
            self._files.append(path)

    def finish(self, splits: dict[str, str]) -> None:
        pass

    def files(self) -> list[str]:
        return [str(p) for p in self._files]

    def _poses(self) -> tuple[Poses, np.ndarray]:
        """Poses and MuJoCo's fingertip sites (object frame) of every key of the written files, in order."""
        if self._read is not None:
            return self._read
        t, r, q, tips = [], [], [], []
        for path in self._files:
            model = mujoco.MjModel.from_xml_path(str(path))
            data = mujoco.MjData(model)
            hand = np.array([model.jnt_qposadr[model.joint(f"robot0:{n}").id] for n in JOINT_NAMES])
            obj = int(model.jnt_qposadr[model.joint("object:free").id])
            sites = [model.site(f"robot0:{s}").id for s in ("S_fftip", "S_mftip", "S_rftip", "S_lftip", "S_thtip")]
            for k in range(model.nkey):
                mujoco.mj_resetDataKeyframe(model, data, k)
                mujoco.mj_kinematics(model, data)
                pos = data.qpos[obj:obj + 3].copy()
                r_obj = quat_wxyz_matrix(data.qpos[obj + 3:obj + 7])  # object in the world (forearm) frame
                rot = r_obj.T
                r.append(rot)
                t.append(-rot @ pos)
                q.append(data.qpos[hand].copy())
                tips.append((data.site_xpos[sites] - pos) @ r_obj)  # into the object frame
        n = len(t)
        self._read = (Poses(np.array(t).reshape(n, 3), np.array(r).reshape(n, 3, 3), np.array(q).reshape(n, 24)),
                      np.array(tips).reshape(n, 5, 3))
        return self._read

    def read_back(self) -> Poses:
        return self._poses()[0]

    def model_residual_mm(self, rows: Rows) -> np.ndarray:
        """MuJoCo's fingertip sites in the written files vs the engine's torch FK of ``rows`` (every row written, in
        order)."""
        from dga_engine.sources.kinematics import engine_fingertips

        _, tips = self._poses()
        ours = engine_fingertips(rows.translation, rows.rotation, rows.joints)
        return np.linalg.norm(tips - ours, axis=-1) * 1000.0


FORMATS = {"dexgraspnet": DexGraspNetFormat, "dga": DGAFormat, "bodex": BODexFormat, "mjcf-keyframes": KeyframesFormat}


def _concat(batches) -> Poses:
    if not batches:
        return Poses(np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 24)))
    return Poses(np.concatenate([b.translation for b in batches]), np.concatenate([b.rotation for b in batches]),
                 np.concatenate([b.joints for b in batches]))
