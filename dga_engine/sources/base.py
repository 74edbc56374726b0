"""What every source loader produces, and the helpers they share.

A loader reads one source dataset as its users download it and yields, per work unit (a file or a
folder of the source), :class:`GraspBatch` es already in the engine's pose convention, plus the
:class:`SourceObject` each batch refers to. The object frame of a batch is the *source's metric object
frame*: the object there is the source mesh file (in its own units) multiplied by ``mesh_scale[i]``.
The curate stage maps that frame onto the ingested object (see :mod:`dga_engine.sources.curate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
    verify_rows: (k,) the rows that were FK-verified; verify_residual_mm: (k, 5) their residuals.
    """

    object_key: str
    source_file: str
    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    mesh_scale: np.ndarray
    record_ids: list[str]
    residual_mm: np.ndarray
    verify_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    verify_residual_mm: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))

    def __len__(self) -> int:
        return len(self.record_ids)

    def without(self, rows: np.ndarray) -> GraspBatch:
        """This batch less ``rows`` (verification results of the rows kept stay)."""
        keep = np.ones(len(self), dtype=bool)
        keep[np.asarray(rows, dtype=np.int64)] = False
        new_index = np.cumsum(keep) - 1
        vkeep = keep[self.verify_rows]
        vres = self.verify_residual_mm[vkeep]
        return GraspBatch(
            self.object_key,
            self.source_file,
            self.translation[keep],
            self.rotation[keep],
            self.joints[keep],
            self.mesh_scale[keep],
            [r for r, k in zip(self.record_ids, keep) if k],
            vres.max(axis=0) if len(vres) else np.zeros(5),
            new_index[self.verify_rows[vkeep]],
            vres,
        )


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
    """A file-name-safe key for a unit (the candidates file key and completion-record unit).

    A readable prefix of the unit's path plus a hash of the exact path, so two units never share a key
    (``a/b`` and ``a_b``, ``ä`` and ``ö`` read alike once made safe). Curate still recognises units
    completed under the keys older versions wrote (:func:`legacy_unit_key`).
    """
    digest = hashlib.sha256(unit.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    readable = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._+\-]+", "_", unit.strip("/"))).strip("._-")[:96] or "root"
    if not readable[0].isalnum():
        readable = "u" + readable
    return f"{readable}-{digest}"


def legacy_unit_key(unit: str) -> str:
    """The key versions before the hashed keys gave a unit (not injective: only for finding old records)."""
    key = re.sub(r"[^A-Za-z0-9._+\-]+", "_", unit.strip("/")).strip("._") or "root"
    if not key[0].isalnum():
        key = "u" + key
    if len(key) > 180:
        key = key[:160] + "-" + hashlib.sha256(unit.encode("utf-8", "surrogateescape")).hexdigest()[:16]
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


MAX_NAME_CHARS = 512  # an object name from inside a file; each path component of it at most MAX_COMPONENT_CHARS
MAX_COMPONENT_CHARS = 200  # file systems allow 255 bytes per name; meshes add an extension


def checked_member(name: str, what: str, path: str) -> str:
    """An object name from inside a file, checked before it is used to build a path."""
    if (
        not isinstance(name, str)
        or not name
        or "\x00" in name
        or name.startswith(("/", "\\"))
        or ".." in name.replace("\\", "/").split("/")
    ):
        raise SourceFileError(
            path, f"{what} {name[:80] if isinstance(name, str) else name!r} is not a safe relative name"
        )
    if len(name) > MAX_NAME_CHARS or any(len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT_CHARS
                                         for part in name.replace("\\", "/").split("/")):
        raise SourceFileError(path, f"{what} of {len(name)} characters ({name[:40]!r}...) is longer than any object "
                                    f"name (at most {MAX_NAME_CHARS}, {MAX_COMPONENT_CHARS} per path component)")
    if any(ord(c) < 32 for c in name):
        raise SourceFileError(path, f"{what} {name[:80]!r} holds control characters")
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
                  n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rows (k,), residual (k, 5) mm)``: fingertip residuals of up to ``n`` evenly spread grasps of a batch."""
    b = len(q_src)
    if b == 0 or n <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 5))
    idx = np.unique(np.linspace(0, b - 1, min(n, b)).round().astype(np.int64))
    return idx, conv.fingertip_residual_mm(rotation[idx], translation[idx], q_src[idx])


def make_batch(model: str, object_key: str, source_file: str, rotation: np.ndarray, translation: np.ndarray,
               q_src: np.ndarray, mesh_scale: np.ndarray, record_ids: list[str], verify: int) -> GraspBatch:
    """Convert source root poses (rotation, translation in the metric object frame) and source joints."""
    conv = converter(model)
    rotation = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    translation = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    q_src = np.asarray(q_src, dtype=np.float64).reshape(len(rotation), -1)
    t, r, q = conv.convert(rotation, translation, q_src)
    rows, res = verify_sample(conv, rotation, translation, q_src, verify)
    return GraspBatch(object_key, source_file, t, r, q, np.asarray(mesh_scale, dtype=np.float64).reshape(-1),
                      list(record_ids), res.max(axis=0) if len(res) else np.zeros(5), rows, res)


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


# A source record is judged on its own: one broken record must not cost the others of its file.
ORTHONORMAL_TOL = 1e-3  # largest |R^T R - I| entry of a source rotation (float32 sources round to ~1e-7)
MAX_ROOT_DISTANCE_M = 10.0  # a hand root farther from the object than this is no grasp (units, or a broken record)
MAX_JOINT_RAD = 2 * np.pi  # a joint value beyond a full turn is no angle a hand takes


def pose_check(rotation: np.ndarray, translation: np.ndarray,
               joints: np.ndarray | None = None) -> tuple[np.ndarray, int, str]:
    """``(ok (N,), first, why)``: which source poses (N,3,3), (N,3)[, (N,J)] can be grasps, the first row that
    cannot (-1: none) and why it is refused.

    Refused: non-finite values; a rotation that is not a proper rotation (zero, scaled, sheared or
    mirrored: the conversion would silently turn it into some other pose); a root farther than
    MAX_ROOT_DISTANCE_M; a joint beyond MAX_JOINT_RAD. Joints outside the hand's limits but within a
    turn are kept (the filter decides). Vectorised: millions of records take seconds.
    """
    rotation = np.asarray(rotation, dtype=np.float64).reshape(-1, 3, 3)
    translation = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    n = len(rotation)
    if n == 0:
        return np.ones(0, dtype=bool), -1, ""
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are refused first; their NaNs compare False
        finite = np.isfinite(rotation).all(axis=(1, 2)) & np.isfinite(translation).all(axis=1)
        q = None if joints is None or not np.size(joints) else np.asarray(joints, dtype=np.float64).reshape(n, -1)
        if q is not None:
            finite &= np.isfinite(q).all(axis=1)
        ortho = np.abs(np.matmul(np.swapaxes(rotation, 1, 2), rotation) - np.eye(3)).max(axis=(1, 2))
        det = np.einsum("ni,ni->n", rotation[:, :, 0], np.cross(rotation[:, :, 1], rotation[:, :, 2]))
        dist = np.sqrt(np.einsum("ni,ni->n", translation, translation))
        jmax = np.abs(q).max(axis=1) if q is not None else np.zeros(n)
    checks = [
        (~finite, lambda i: "non-finite pose values"),
        (
            ~(ortho <= ORTHONORMAL_TOL),
            lambda i: (
                "rotation is not a rotation matrix ("
                + ("all zeros" if not np.any(rotation[i]) else f"|R^T R - I| = {ortho[i]:.3g}")
                + f"; allowed {ORTHONORMAL_TOL:g})"
            ),
        ),
        (det < 0, lambda i: "rotation is a mirror image (determinant -1), not a rotation"),
        (
            dist > MAX_ROOT_DISTANCE_M,
            lambda i: f"hand root is {dist[i]:.3g} m from the object (more than {MAX_ROOT_DISTANCE_M:g} m: units?)",
        ),
        (jmax > MAX_JOINT_RAD, lambda i: f"a joint is {jmax[i]:.3g} rad (more than a full turn)"),
    ]
    ok = np.ones(n, dtype=bool)
    first, why = n, ""
    for bad, message in checks:
        bad = bad & ok  # each record is refused for the first reason that applies
        if bad.any():
            i = int(np.argmax(bad))
            if i < first:
                first, why = i, message(i)
            ok &= ~bad
    return ok, (first if first < n else -1), why


def reject_implausible(ok: np.ndarray, rotation: np.ndarray, translation: np.ndarray, joints: np.ndarray) -> list[str]:
    """Clear ``ok`` (in place) for the rows :func:`pose_check` refuses; returns ``["record i: why"]`` for the first."""
    idx = np.flatnonzero(ok)
    plausible, first, why = pose_check(rotation[idx], translation[idx], joints[idx])
    ok[idx[~plausible]] = False
    return [f"record {int(idx[first])}: {why}"] if first >= 0 else []
