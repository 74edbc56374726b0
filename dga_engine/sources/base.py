"""What every source loader produces, and the helpers they share.

A loader reads one source dataset as its users download it and yields, per work unit (a file or a
folder of the source), :class:`GraspBatch` es already in the engine's pose convention, plus the
:class:`SourceObject` each batch refers to. The object frame of a batch is the *source's metric object
frame*: the object there is the source mesh file (in its own units) multiplied by ``mesh_scale[i]``.
The curate stage maps that frame onto the ingested object (see :mod:`dga_engine.sources.curate`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from dga_engine.sources.kinematics import PoseConverter, converter
from dga_engine.sources.safeload import SourceFileError

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb")


@dataclass
class SourceObject:
    """One object as a source names it."""

    key: str  # the source's own object id: DexGraspNet code, 'core/bottle-<id>', 'contactdb+apple', ...
    label: str  # human-readable name (category words), used as the ObjectMeta label
    mesh_path: str | None  # the mesh file grasps refer to; None when the source does not ship it here
    split: str | None = None  # train | test | val as the source's split files say; None when unspecified
    extra: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping (category, dataset, ...)


@dataclass
class GraspBatch:
    """N grasps of one object from one source file, in the engine's convention.

    translation: (N, 3) float64, metres: the engine's forearm origin in the source's metric object frame.
    rotation: (N, 3, 3) float64: the forearm orientation in that frame.
    joints: (N, 24) float64 radians, JOINT_NAMES order; not clamped to the engine's limits.
    mesh_scale: (N,) float64: the source object in that frame is ``mesh file * mesh_scale``.
    record_ids: N strings ``<source file relative to the source root>:<record index>``.
    residual_mm: (5,) the largest fingertip distance (ff, mf, rf, lf, th) between the source model and
        the converted pose over the FK-verified grasps of this batch.
    """

    object_key: str
    source_file: str
    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    mesh_scale: np.ndarray
    record_ids: list[str]
    residual_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.record_ids)


@dataclass
class UnitResult:
    """What one work unit of a source gave: its batches, and what in it could not be read."""

    unit: str
    batches: list[GraspBatch] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    bad_records: int = 0  # records that were skipped inside files that otherwise loaded
    bad_record_example: str = ""  # the first such problem, for the report


class SourceLoader(Protocol):
    """A loader for one source format (see the modules next to this one)."""

    name: str  # the --source name
    licence: str  # the source's licence, recorded on every object
    hand_model: str  # which SourceHand its poses are in (key of kinematics.HAND_MODELS)

    def units(self) -> list[str]:
        """Work units (source-relative paths), in a stable order."""

    def load_unit(self, unit: str) -> UnitResult:
        """Read one unit; a fully unreadable unit raises SourceFileError."""

    def object(self, key: str) -> SourceObject:
        """The object ``key`` (mesh located, split looked up)."""


# ---- shared helpers -----------------------------------------------------------------------------------


def rel(root: Path, path: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def unit_key(unit: str) -> str:
    """A file-name-safe key for a unit (used as the candidates file key and completion-record unit)."""
    key = re.sub(r"[^A-Za-z0-9._+\-]+", "_", unit.strip("/")).strip("._") or "root"
    if not key[0].isalnum():
        key = "u" + key
    if len(key) > 180:
        import hashlib

        key = key[:160] + "-" + hashlib.sha256(unit.encode()).hexdigest()[:16]
    return key


def label_from_key(key: str) -> str:
    """Readable words from a source object id: 'core-mug-8570d9...' -> 'mug', 'ycb+power_drill' -> 'power drill'."""
    parts = re.split(r"[/+]", key)
    words = []
    for part in parts:
        for tok in re.split(r"[-_\s]+", part):
            if not tok or tok.lower() in {"core", "sem", "ddg", "mujoco", "contactdb", "ycb", "gd", "kit"}:
                continue
            if re.fullmatch(r"[0-9a-f]{16,}", tok.lower()) or tok.isdigit():
                continue
            words.append(tok.lower())
    return " ".join(words) or key


def checked_member(name: str, what: str, path: str) -> str:
    """An object name from inside a file, checked before it is used to build a path."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith(("/", "\\")) or ".." in name.replace("\\", "/").split("/"):
        raise SourceFileError(path, f"{what} {name!r} is not a safe relative name")
    return name


def find_mesh(name: str, search_dirs: Sequence[Path]) -> Path | None:
    """Locate the mesh of object ``name`` in the layouts the sources use, under each of ``search_dirs``.

    Tried in order: ``meshes/<name>.<ext>``, ``meshes/<name>/<single mesh>``, DexGraspNet's
    ``meshdata/<name>/coacd/decomposed.obj``, UniDexGrasp's ``meshes/<a>/<b>/coacd/decomposed.obj`` for
    ``a/b``, MultiDex's ``object/<dataset>/<obj>/<obj>.stl`` (also under ``data/``) for ``dataset+obj``,
    and ``<name>.<ext>`` / ``<name>/<single mesh>`` directly.
    """
    name = checked_member(name, "object name", "<mesh lookup>")
    for base in search_dirs:
        base = Path(base)
        cands: list[Path] = []
        for sub in (base / "meshes", base / "models", base):
            cands += [sub / f"{name}{ext}" for ext in MESH_SUFFIXES]
            cands += [sub / name / f"{Path(name).name}{ext}" for ext in MESH_SUFFIXES]
            cands.append(sub / name / "coacd" / "decomposed.obj")
        cands.append(base / "meshdata" / name / "coacd" / "decomposed.obj")
        if "+" in name:
            ds, obj = name.split("+", 1)
            for sub in (base / "object", base / "data" / "object"):
                cands += [sub / ds / obj / f"{obj}{ext}" for ext in MESH_SUFFIXES]
        for c in cands:
            if c.is_file():
                return c
        for sub in (base / "meshes", base / "models", base):
            d = sub / name
            if d.is_dir():
                found = sorted(p for p in d.iterdir() if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
                if len(found) == 1:
                    return found[0]
    return None


def read_split_file(path: Path) -> dict[str, str]:
    """``{object key: split}`` from a split JSON: ``{train: [...], test: [...]}`` or DGA's
    ``{_train_split, _test_split, _all_split}`` (``_all_split`` only adds nothing)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SourceFileError(str(path), f"unreadable split file: {exc}") from None
    if not isinstance(data, dict):
        raise SourceFileError(str(path), "split file is not a JSON object")
    out: dict[str, str] = {}
    for key, values in data.items():
        split = key.strip("_").removesuffix("_split")
        if split in ("all",) or not isinstance(values, list):
            continue
        split = {"validate": "val", "valid": "val", "validation": "val"}.get(split, split)
        for v in values:
            if isinstance(v, str):
                out.setdefault(v, split)
    return out


def verify_sample(conv: PoseConverter, rotation: np.ndarray, translation: np.ndarray, q_src: np.ndarray,
                  n: int) -> np.ndarray:
    """Largest fingertip residual (5,) in mm over up to ``n`` evenly spread grasps of a batch."""
    b = len(q_src)
    if b == 0 or n <= 0:
        return np.zeros(5)
    idx = np.unique(np.linspace(0, b - 1, min(n, b)).round().astype(int))
    return conv.fingertip_residual_mm(rotation[idx], translation[idx], q_src[idx]).max(axis=0)


def make_batch(model: str, object_key: str, source_file: str, rotation: np.ndarray, translation: np.ndarray,
               q_src: np.ndarray, mesh_scale: np.ndarray, record_ids: list[str], verify: int) -> GraspBatch:
    """Convert source root poses (rotation, translation in the metric object frame) and source joints."""
    conv = converter(model)
    rotation = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    translation = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    q_src = np.asarray(q_src, dtype=np.float64).reshape(len(rotation), -1)
    t, r, q = conv.convert(rotation, translation, q_src)
    return GraspBatch(object_key, source_file, t, r, q, np.asarray(mesh_scale, dtype=np.float64).reshape(-1),
                      list(record_ids), verify_sample(conv, rotation, translation, q_src, verify))


def finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Boolean (N,): rows where every array is finite."""
    ok = np.ones(len(arrays[0]), dtype=bool)
    for a in arrays:
        ok &= np.isfinite(np.asarray(a, dtype=np.float64).reshape(len(a), -1)).all(axis=1)
    return ok


def iter_files(root: Path, pattern: str) -> Iterator[Path]:
    """Files under ``root`` matching ``pattern`` (rglob), sorted, skipping hidden ones."""
    for p in sorted(root.rglob(pattern)):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts):
            yield p


def env_path(path: str | os.PathLike) -> Path:
    return Path(path).expanduser()
