"""Processed objects in the storage root: the on-disk format every stage reads.

    <root>/objects/<object_id>/
        meta.json             ObjectMeta (versioned)
        mesh.obj              cleaned, centred, metric (metres) triangle mesh
        parts/part_000.obj …  convex parts (CoACD), same frame and units as mesh.obj
        points.npz            points (2048,3), normals (2048,3), dense_points (10240,3), dense_normals (10240,3),
        float32
        fields/grid-….npz     SDF grids per scale and resolution, built on first use (dga_engine.objects.fields)

The object frame is the frame of mesh.obj. A grasp's ``object_scale`` multiplies this stored mesh
uniformly (1.0 = as stored); consumers scale meshes, parts and points by it.
An object exists when its meta.json exists: it is written last, after every other file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import trimesh

from dga_engine import fs
from dga_engine.layout import Layout, UnsafeNameError, safe_name

log = logging.getLogger(__name__)

OBJECT_SCHEMA_VERSION = 1
META_FILE = "meta.json"
MESH_FILE = "mesh.obj"
PARTS_DIR = "parts"
POINTS_FILE = "points.npz"
N_POINTS = 2048
N_DENSE_POINTS = 10240


class ObjectNotFound(KeyError):
    pass


@dataclass
class ObjectMeta:
    """What the engine knows about one processed object. Lengths in metres, volume in m^3."""

    object_id: str
    label: str  # human-readable name used in prompts and tables ("mug with handle")
    source: str  # builtin | local | objaverse | dexgraspnet | unidexgrasp | multidex | realdex | dga | test
    source_id: str  # the id inside the source (file name, uid, object code)
    licence: str = "unknown"
    scale_applied: float = 1.0  # factor from the source file's units to the stored metres
    extents: list[float] = field(default_factory=list)  # axis-aligned bounding box size of mesh.obj
    volume: float = 0.0
    watertight: bool = False
    n_parts: int = 0
    decomposition: dict[str, Any] = field(default_factory=dict)  # method and parameters (CoACD threshold, ...)
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = OBJECT_SCHEMA_VERSION
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ObjectMeta:
        if not isinstance(d, dict):
            raise ValueError(
                f"object meta.json holds a {type(d).__name__}, not an object: re-ingest it (dga-engine ingest ...)"
            )
        version = d.get("schema_version")
        if version != OBJECT_SCHEMA_VERSION:
            raise ValueError(
                f"object {d.get('object_id')!r} has meta schema_version {version}, this engine reads "
                f"{OBJECT_SCHEMA_VERSION}: re-ingest it (dga-engine ingest ...) or upgrade dga-engine"
            )
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass
class ObjectAsset:
    """One object loaded from the store. Arrays are float32 in the object frame, metres."""

    meta: ObjectMeta
    mesh: trimesh.Trimesh
    parts: list[trimesh.Trimesh]
    points: np.ndarray  # (2048, 3)
    normals: np.ndarray  # (2048, 3) outward unit normals
    dense_points: np.ndarray  # (10240, 3)
    dense_normals: np.ndarray  # (10240, 3)

    @property
    def object_id(self) -> str:
        return self.meta.object_id


def content_id(mesh: trimesh.Trimesh, prefix: str = "obj") -> str:
    """A stable id from mesh content: vertices rounded to 0.1 mm and faces, hashed (16 hex digits)."""
    h = hashlib.sha256()
    h.update(np.round(np.asarray(mesh.vertices, dtype=np.float64), 4).astype(np.float32).tobytes())
    h.update(np.asarray(mesh.faces, dtype=np.int64).tobytes())
    return f"{prefix}-{h.hexdigest()[:16]}"


def _mesh_bytes(mesh: trimesh.Trimesh) -> bytes:
    data = mesh.export(file_type="obj", include_normals=False, include_texture=False)
    return data.encode("utf-8") if isinstance(data, str) else data


def _load_mesh(data: bytes) -> trimesh.Trimesh:
    mesh = trimesh.load(io.BytesIO(data), file_type="obj", force="mesh", process=False)
    return mesh


class ObjectStore:
    """Read and write processed objects under ``<root>/objects``."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def _dir(self, object_id: str) -> str:
        return self.layout.object_dir(object_id)

    def exists(self, object_id: str) -> bool:
        return fs.exists(f"{self._dir(object_id)}/{META_FILE}")

    def ids(self) -> list[str]:
        """Ids of complete objects (those with meta.json), sorted.

        Entries whose name cannot be an object id (a stray ``objects/bad name`` folder) are skipped with a
        warning, so one odd folder does not stop every command that lists the store.
        """
        out = []
        for name in fs.listdir(self.layout.objects()):
            if name.startswith((".", "_")):
                continue
            try:
                safe_name(name)
            except UnsafeNameError:
                log.warning("skipping %r in %s: not an object id (one plain name of letters, digits and '._+-'); "
                            "move it out of the object store", name, self.layout.objects())
                continue
            if self.exists(name):
                out.append(name)
        return out

    def meta(self, object_id: str) -> ObjectMeta:
        path = f"{self._dir(object_id)}/{META_FILE}"
        if not fs.exists(path):
            raise ObjectNotFound(
                f"object {object_id!r} is not in {self.layout.objects()}: ingest it first (dga-engine ingest ...)"
            )
        return ObjectMeta.from_dict(fs.read_json(path))

    def load(self, object_id: str, with_parts: bool = True) -> ObjectAsset:
        meta = self.meta(object_id)
        base = self._dir(object_id)
        mesh = _load_mesh(fs.read_bytes(f"{base}/{MESH_FILE}"))
        parts = []
        if with_parts:
            for i in range(meta.n_parts):
                parts.append(_load_mesh(fs.read_bytes(f"{base}/{PARTS_DIR}/part_{i:03d}.obj")))
        with np.load(io.BytesIO(fs.read_bytes(f"{base}/{POINTS_FILE}")), allow_pickle=False) as z:
            arrays = {k: z[k].astype(np.float32) for k in ("points", "normals", "dense_points", "dense_normals")}
        return ObjectAsset(meta=meta, mesh=mesh, parts=parts, **arrays)

    def write(
        self,
        meta: ObjectMeta,
        mesh: trimesh.Trimesh,
        parts: Sequence[trimesh.Trimesh],
        points: np.ndarray,
        normals: np.ndarray,
        dense_points: np.ndarray,
        dense_normals: np.ndarray,
    ) -> None:
        """Write every file of one object, meta.json last (the object exists only once it is there)."""
        safe_name(meta.object_id)
        for name, arr, n in (("points", points, N_POINTS), ("dense_points", dense_points, N_DENSE_POINTS)):
            if arr.shape != (n, 3):
                raise ValueError(f"{name} must have shape ({n}, 3), got {arr.shape}")
        base = self._dir(meta.object_id)
        fs.write_bytes(f"{base}/{MESH_FILE}", _mesh_bytes(mesh))
        for i, part in enumerate(parts):
            fs.write_bytes(f"{base}/{PARTS_DIR}/part_{i:03d}.obj", _mesh_bytes(part))
        buf = io.BytesIO()
        np.savez(
            buf,
            points=points.astype(np.float32),
            normals=normals.astype(np.float32),
            dense_points=dense_points.astype(np.float32),
            dense_normals=dense_normals.astype(np.float32),
        )
        fs.write_bytes(f"{base}/{POINTS_FILE}", buf.getvalue())
        meta.n_parts = len(parts)
        fs.write_json(f"{base}/{META_FILE}", asdict(meta))


def sample_surface(mesh: trimesh.Trimesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-uniform surface points with outward face normals, deterministic under ``seed``."""
    pts, face = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return np.asarray(pts, dtype=np.float32), np.asarray(mesh.face_normals[face], dtype=np.float32)


def write_simple_object(
    store: ObjectStore,
    mesh: trimesh.Trimesh,
    label: str,
    source: str = "test",
    parts: Sequence[trimesh.Trimesh] | None = None,
    seed: int = 0,
    **meta_fields: Any,
) -> ObjectMeta:
    """Write a mesh that is already clean, centred and metric, using itself (or ``parts``) as convex parts.

    For convex primitives and tests; real ingestion cleans, normalises and decomposes first.
    """
    pts, nrm = sample_surface(mesh, N_POINTS, seed)
    dpts, dnrm = sample_surface(mesh, N_DENSE_POINTS, seed + 1)
    meta = ObjectMeta(
        object_id=meta_fields.pop("object_id", content_id(mesh)),
        label=label,
        source=source,
        source_id=meta_fields.pop("source_id", label),
        extents=[float(x) for x in mesh.extents],
        volume=float(mesh.volume),
        watertight=bool(mesh.is_watertight),
        decomposition=meta_fields.pop("decomposition", {"method": "none (convex input)" if parts is None else "given"}),
        **meta_fields,
    )
    store.write(meta, mesh, list(parts) if parts is not None else [mesh], pts, nrm, dpts, dnrm)
    return meta
