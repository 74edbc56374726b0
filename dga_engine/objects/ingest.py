"""Object ingestion: any mesh source -> clean, metric, watertight, decomposed, sampled objects in the store.

Per object: load (a scene becomes one mesh) -> clean (non-finite vertices, duplicate vertices, degenerate
and duplicate faces) -> check (empty, face cap, flat, triangle soup) -> centre and scale to a graspable
size -> content id (skip if stored) -> make watertight (fix winding, fill small holes, union overlapping
bodies, else a level-set remesh) -> convex decomposition (the hull for convex meshes; otherwise CoACD in a
child process with a time limit) -> point clouds with normals (2048 and 10240) -> write (meta.json last).

Sizes. The grasp size is the middle extent of the oriented bounding box (a bottle's diameter, a book's
width). A mesh whose grasp size is already in ``grasp_size_range`` and whose longest side is at most
``max_extent`` keeps its units (taken as metres); any other is scaled so its grasp size is
``target_grasp_size`` (then shrunk until its longest side fits). ``scales`` instead asks for several
explicit grasp sizes: one object per value, with ids ``<content id>-s<grasp size in mm>`` (DexGraspNet
ingests each mesh at several scales; this is the same idea with a physical meaning).

Ids. ``store.content_id`` of the cleaned, centred, scaled mesh (before repair), so re-ingesting the
same mesh with the same size settings finds it stored and reports it as ``skipped``.

Bad input never stops a batch: the object is quarantined with a JSON record under
``<root>/objects/_quarantine/`` whose ``reason`` says what went wrong and what to do; a later successful
ingest of the same input removes the record.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

from dga_engine import fs
from dga_engine.layout import Layout
from dga_engine.objects import mesh as meshops
from dga_engine.objects.decompose import CoacdParams, DecompositionError, run_coacd
from dga_engine.objects.mesh import MESH_EXTENSIONS, BadMeshError
from dga_engine.objects.store import N_DENSE_POINTS, N_POINTS, ObjectMeta, ObjectStore, content_id, sample_surface
from dga_engine.procs import pool_worker_init

log = logging.getLogger(__name__)

__all__ = [
    "BadMeshError",
    "IngestConfig",
    "IngestItem",
    "IngestReport",
    "ingest_builtin",
    "ingest_items",
    "ingest_mesh",
    "ingest_mesh_all",
    "ingest_paths",
    "find_mesh_files",
    "quarantine_records",
]


@dataclass(frozen=True)
class IngestConfig:
    """How objects are normalised, repaired and decomposed. Lengths in metres."""

    grasp_size_range: tuple[float, float] = (0.02, 0.12)  # grasp sizes kept as-is (file taken as metric)
    target_grasp_size: float = 0.08  # grasp size an out-of-range mesh is scaled to
    max_extent: float = 0.30  # longest side after scaling; larger objects are shrunk to it
    scales: tuple[float, ...] = ()  # explicit grasp sizes, one object per value (ids get -s<mm>); () = automatic
    max_faces: int = 500_000  # inputs with more faces are quarantined (decimate them first)
    max_file_bytes: int = 256 * 1024 * 1024  # larger files are quarantined before loading
    max_open_edge_fraction: float = 0.5  # more open/non-manifold edges than this = triangle soup, quarantined
    remesh_resolution: int = 40  # level-set cells along the longest side when repairing an open mesh
    max_solid_faces: int = 20_000  # stored meshes with more faces are decimated (or remeshed) to this
    coacd_max_faces: int = 2_000  # CoACD gets a decimated copy above this (its time grows with faces)
    # volume / hull volume at or above this = convex: the hull is the single part (5% slack for remeshed bumps)
    convex_ratio: float = 0.95
    coacd_threshold: float = 0.05  # CoACD concavity threshold (paper/peers' default)
    coacd_max_parts: int = 16  # cap on convex parts per object
    coacd_timeout_s: float = 300.0  # CoACD time limit per object; over it the object is quarantined
    coacd_resolution: int = 2000  # CoACD sampling resolution
    coacd_mcts_iterations: int = 150  # CoACD search iterations per cut (lower = faster, coarser cuts)
    seed: int = 0  # seed of the surface point sampling (points use seed, dense points seed + 1)

    def coacd_params(self) -> CoacdParams:
        return CoacdParams(
            threshold=self.coacd_threshold,
            max_parts=self.coacd_max_parts,
            preprocess="off",
            resolution=self.coacd_resolution,
            mcts_iterations=self.coacd_mcts_iterations,
        )

    def __post_init__(self) -> None:
        lo, hi = self.grasp_size_range
        if not (0 < lo <= hi):
            raise ValueError(f"grasp_size_range must be 0 < low <= high, got {self.grasp_size_range}")
        if any(s <= 0 or s > self.max_extent for s in self.scales):
            raise ValueError(f"scales are grasp sizes in metres in (0, {self.max_extent}], got {self.scales}")
        if len(set(self.scales)) != len(self.scales):
            raise ValueError(f"scales must be distinct, got {self.scales}")

    def replace(self, **changes) -> IngestConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class IngestItem:
    """One input to ingest: a mesh file, a builtin shape name or an in-memory mesh, plus provenance."""

    source: str  # builtin | local | objaverse | ...
    source_id: str  # id inside the source (file path, uid, shape name); metadata only, never a path
    label: str  # human-readable name
    path: str | None = None  # mesh file to load
    builtin: str | None = None  # builtin shape name, built in the worker
    mesh: trimesh.Trimesh | None = None  # in-memory mesh (single-process use)
    licence: str = "unknown"
    categories: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def display(self) -> str:
        return self.path or (f"builtin:{self.builtin}" if self.builtin else f"{self.source}:{self.source_id}")


@dataclass
class IngestReport:
    """What one ingestion batch did.

    ``ingested`` / ``skipped``: object ids; ``quarantined``: quarantine record keys; ``quarantine``:
    ``[{"path", "reason"}]`` in input order; ``timings``: seconds summed over objects per stage (load,
    clean, repair, decompose, sample, write) plus ``wall`` for the batch; ``notes``: warnings for people.
    """

    ingested: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    quarantine: list[dict[str, str]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    processes: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def object_ids(self) -> list[str]:
        """Every object id the batch resolved to (ingested or already stored), in order, no duplicates."""
        return list(dict.fromkeys(self.ingested + self.skipped))

    def objects_per_minute(self) -> float:
        wall = self.timings.get("wall", 0.0)
        return 60.0 * len(self.ingested) / wall if wall > 0 else 0.0

    def merge(self, other: IngestReport) -> IngestReport:
        self.ingested += other.ingested
        self.skipped += other.skipped
        self.quarantined += other.quarantined
        self.quarantine += other.quarantine
        self.notes += other.notes
        for k, v in other.timings.items():
            self.timings[k] = self.timings.get(k, 0.0) + v
        return self

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` shape: counts under ``ingested``/``skipped``/``quarantined``, ids under ``*_ids``."""
        return {
            "ingested": len(self.ingested),
            "skipped": len(self.skipped),
            "quarantined": len(self.quarantined),
            "quarantine": self.quarantine,
            "ingested_ids": self.ingested,
            "skipped_ids": self.skipped,
            "quarantined_keys": self.quarantined,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "objects_per_minute": round(self.objects_per_minute(), 2),
            "processes": self.processes,
            "notes": self.notes,
        }


# --- one item -------------------------------------------------------------------------------------


@dataclass
class _Outcome:
    status: str  # ingested | skipped | quarantined
    object_id: str | None
    path: str
    reason: str = ""
    quarantine_key: str | None = None
    timings: dict[str, float] = field(default_factory=dict)


class _Clock:
    def __init__(self) -> None:
        self.t: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.t[stage] = self.t.get(stage, 0.0) + now - self._last
        self._last = now


def _id_suffix(target: float | None) -> str:
    return "" if target is None else f"-s{int(round(target * 1000)):03d}"


def _load_item(item: IngestItem, config: IngestConfig) -> trimesh.Trimesh:
    if item.builtin is not None:
        from dga_engine.objects.builtin import builtin_mesh

        return builtin_mesh(item.builtin)
    if item.mesh is not None:
        return meshops.load_mesh(item.mesh, config.max_file_bytes, config.max_faces)
    if item.path is None:
        raise BadMeshError("nothing to ingest: the item has neither a path, a builtin name nor a mesh")
    return meshops.load_mesh(item.path, config.max_file_bytes, config.max_faces)


def _process(layout: Layout, item: IngestItem, config: IngestConfig) -> list[tuple[str, ObjectMeta, dict[str, float]]]:
    """Ingest one item at every requested scale; returns ``[(status, meta, timings)]``. Raises BadMeshError."""
    store = ObjectStore(layout)
    clock = _Clock()
    raw = _load_item(item, config)
    n_input_faces = len(raw.faces)
    clock.lap("load")
    mesh = meshops.clean(raw)
    clock.lap("clean")
    meshops.check_solid(mesh, config.max_open_edge_fraction)
    clock.lap("clean")

    results: list[tuple[str, ObjectMeta, dict[str, float]]] = []
    cache: dict[str, Any] | None = None  # repair + decomposition, done once and rescaled for other scales
    for target in (config.scales or (None,)):
        scale = meshops.choose_scale(mesh, config.grasp_size_range, config.target_grasp_size, config.max_extent, target)
        normalised = meshops.centred_scaled(mesh, scale)
        object_id = content_id(normalised) + _id_suffix(target)
        clock.lap("clean")
        if store.exists(object_id):
            results.append(("skipped", store.meta(object_id), {}))
            continue
        if cache is None:
            solid = meshops.make_watertight(normalised, config.remesh_resolution, config.max_solid_faces)
            solid_mesh, _ = meshops.recentre(solid.mesh)
            clock.lap("repair")
            ratio = meshops.convexity(solid_mesh)
            if ratio >= config.convex_ratio:
                hull = solid_mesh.convex_hull
                parts = [(np.asarray(hull.vertices), np.asarray(hull.faces))]
                decomposition = {"method": "convex-hull", "why": f"convex input (volume / hull volume = {ratio:.3f})"}
            else:
                params = config.coacd_params()
                proxy = meshops.decimate(solid_mesh, config.coacd_max_faces) or solid_mesh
                try:
                    parts, seconds = run_coacd(proxy.vertices, proxy.faces, params, config.coacd_timeout_s)
                except DecompositionError as exc:
                    raise BadMeshError(exc.reason, stage="decompose") from None
                decomposition = {"method": "coacd", **asdict(params), "input_faces": int(len(proxy.faces)),
                                 "seconds": round(seconds, 3)}
            clock.lap("decompose")
            cache = {"scale": scale, "mesh": solid_mesh, "parts": parts, "decomposition": decomposition,
                     "repair": solid.method, "repair_details": solid.details, "convexity": ratio}
        factor = scale / cache["scale"]
        final = trimesh.Trimesh(vertices=cache["mesh"].vertices * factor, faces=cache["mesh"].faces, process=False)
        parts = [trimesh.Trimesh(vertices=v * factor, faces=f, process=False) for v, f in cache["parts"]]
        clock.lap("clean")
        pts, nrm = sample_surface(final, N_POINTS, config.seed)
        dpts, dnrm = sample_surface(final, N_DENSE_POINTS, config.seed + 1)
        clock.lap("sample")
        meta = ObjectMeta(
            object_id=object_id,
            label=item.label,
            source=item.source,
            source_id=item.source_id,
            licence=item.licence,
            scale_applied=float(scale),
            extents=[float(x) for x in final.extents],
            volume=float(final.volume),
            watertight=bool(final.is_watertight),
            decomposition=dict(cache["decomposition"]),
            categories=list(item.categories),
            tags=list(item.tags),
            extra={
                **item.extra,
                "grasp_size": round(meshops.grasp_size(final), 6),
                "target_grasp_size": target,
                "repair": cache["repair"],
                **({"repair_details": cache["repair_details"]} if cache["repair_details"] else {}),
                "convexity": round(cache["convexity"], 4),
                "input_faces": n_input_faces,
                "faces": int(len(final.faces)),
                "file": os.path.basename(item.path) if item.path else None,
            },
        )
        store.write(meta, final, parts, pts, nrm, dpts, dnrm)
        clock.lap("write")
        results.append(("ingested", meta, {}))
    if results:
        results[0] = (results[0][0], results[0][1], dict(clock.t))
    return results


# --- quarantine -------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]+")


def _quarantine_key(item: IngestItem) -> str:
    """A safe, stable file name for an item's quarantine record (readable prefix + hash of provenance)."""
    base = item.builtin or (Path(item.path).stem if item.path else item.source_id)
    readable = _UNSAFE.sub("_", f"{item.source}-{base}").strip("._-")[:80] or "item"
    if not readable[0].isalnum():
        readable = "q" + readable
    digest = hashlib.sha256("\0".join([item.source, item.source_id, item.path or ""]).encode("utf-8")).hexdigest()[:10]
    return f"{readable.replace('..', '_')}-{digest}"


def _quarantine_path(layout: Layout, key: str) -> str:
    return f"{layout.quarantine()}/{key}.json"


def write_quarantine(layout: Layout, item: IngestItem, reason: str, stage: str, error: str) -> str:
    key = _quarantine_key(item)
    fs.write_json(
        _quarantine_path(layout, key),
        {
            "key": key,
            "path": item.display(),
            "source": item.source,
            "source_id": item.source_id,
            "label": item.label,
            "reason": reason,
            "stage": stage,
            "error": error,
            "at": _dt.datetime.now(_dt.UTC).isoformat(),
        },
    )
    return key


def quarantine_records(layout: Layout) -> list[dict[str, Any]]:
    """Every quarantine record under ``<root>/objects/_quarantine``, sorted by key."""
    out = []
    for name in fs.listdir(layout.quarantine()):
        if name.endswith(".json") and not name.startswith("."):
            try:
                out.append(fs.read_json(f"{layout.quarantine()}/{name}"))
            except Exception as exc:  # a damaged record must not hide the others
                out.append({"key": name[:-5], "path": "?", "reason": f"unreadable quarantine record: {exc}"})
    return out


def _run_item(layout: Layout, item: IngestItem, config: IngestConfig) -> list[_Outcome]:
    """Process one item; every failure becomes a quarantine outcome (the batch goes on)."""
    shown = item.display()
    try:
        results = _process(layout, item, config)
    except BadMeshError as exc:
        key = write_quarantine(layout, item, exc.reason, exc.stage, "BadMeshError")
        return [_Outcome("quarantined", None, shown, exc.reason, key)]
    except OSError as exc:
        if fs.is_storage_error(exc):  # disk full or read-only: not the mesh's fault; every later item fails too
            raise
        log.exception("ingest of %s failed", shown)
        reason = f"unexpected {type(exc).__name__}: {exc}; this is likely an engine bug: report it with the file"
        key = write_quarantine(layout, item, reason, "internal", type(exc).__name__)
        return [_Outcome("quarantined", None, shown, reason, key)]
    except MemoryError:
        reason = "ran out of memory while processing this mesh: simplify it, or lower --processes"
        key = write_quarantine(layout, item, reason, "internal", "MemoryError")
        return [_Outcome("quarantined", None, shown, reason, key)]
    except Exception as exc:  # an engine bug or a library failure on odd input: keep the batch going
        log.exception("ingest of %s failed", shown)
        reason = f"unexpected {type(exc).__name__}: {exc}; this is likely an engine bug: report it with the file"
        key = write_quarantine(layout, item, reason, "internal", type(exc).__name__)
        return [_Outcome("quarantined", None, shown, reason, key)]
    fs.remove(_quarantine_path(layout, _quarantine_key(item)))  # a past failure no longer applies
    return [_Outcome(status, meta.object_id, shown, timings=t) for status, meta, t in results]


def _worker(root: str, item: IngestItem, config: IngestConfig) -> list[_Outcome]:
    return _run_item(Layout(root), item, config)


# --- batches ----------------------------------------------------------------------------------------


def ingest_items(
    layout: Layout,
    items: Sequence[IngestItem],
    processes: int = 1,
    config: IngestConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest ``items`` with ``processes`` worker processes (1 = in this process). Never raises for bad input.

    Raises the OSError when the storage refuses a write (disk full, read-only: :func:`dga_engine.fs.is_storage_error`):
    that is no fault of the item at hand, so it is not quarantined, and the batch stops (objects already written stay).
    """
    config = config or IngestConfig()
    processes = max(1, int(processes))
    t0 = time.perf_counter()
    outcomes: list[list[_Outcome] | None] = [None] * len(items)

    def done(i: int, result: list[_Outcome]) -> None:
        outcomes[i] = result
        if progress is not None:
            progress(1)

    if processes == 1 or len(items) <= 1:
        for i, item in enumerate(items):
            done(i, _run_item(layout, item, config))
    else:
        _run_parallel(layout, items, processes, config, done)

    report = IngestReport(processes=processes)
    seen: set[str] = set()
    for result in outcomes:
        for o in result or []:
            for k, v in o.timings.items():
                report.timings[k] = report.timings.get(k, 0.0) + v
            if o.status == "quarantined":
                report.quarantined.append(o.quarantine_key or "")
                report.quarantine.append({"path": o.path, "reason": o.reason})
            elif o.status == "ingested" and o.object_id not in seen:
                report.ingested.append(o.object_id)  # type: ignore[arg-type]
            else:  # already stored, or a duplicate of an earlier item in this batch
                report.skipped.append(o.object_id)  # type: ignore[arg-type]
            if o.object_id:
                seen.add(o.object_id)
    report.timings["wall"] = time.perf_counter() - t0
    return report


def _run_parallel(layout: Layout, items: Sequence[IngestItem], processes: int, config: IngestConfig,
                  done: Callable[[int, list[_Outcome]], None]) -> None:
    # spawn, not fork: the parent may hold threads (torch, Ray, Prefect) that fork would copy half-locked
    ctx = multiprocessing.get_context("spawn")
    retry: list[int] = []
    die = {"initializer": pool_worker_init, "initargs": (os.getpid(),)}  # workers die with a killed parent
    with cf.ProcessPoolExecutor(max_workers=processes, mp_context=ctx, max_tasks_per_child=100, **die) as pool:
        futures = {pool.submit(_worker, layout.root, item, config): i for i, item in enumerate(items)}
        for fut in cf.as_completed(futures):
            i = futures[fut]
            try:
                done(i, fut.result())
            except cf.process.BrokenProcessPool:
                retry.append(i)  # a worker died (native crash, OOM kill): the culprit is among these
            except OSError:  # the storage refused a write (see _run_item): stop the batch
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    for i in sorted(retry):  # one fresh single-worker pool per item, so one bad mesh cannot sink others
        with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx, **die) as pool:
            try:
                done(i, pool.submit(_worker, layout.root, items[i], config).result())
            except cf.process.BrokenProcessPool:
                reason = ("the worker process crashed while processing this mesh (native library crash or out of "
                          "memory): check the file in a mesh viewer, simplify or re-export it")
                key = write_quarantine(layout, items[i], reason, "internal", "BrokenProcessPool")
                done(i, [_Outcome("quarantined", None, items[i].display(), reason, key)])


# --- public entry points ------------------------------------------------------------------------------


def _label_from_path(path: Path) -> str:
    return re.sub(r"[_\-]+", " ", path.stem).strip() or path.stem


def find_mesh_files(paths: Iterable[str | os.PathLike]) -> list[tuple[Path, str]]:
    """``(file, source_id)`` for every mesh file in ``paths`` (folders searched recursively, sorted).

    ``source_id`` is the path relative to the folder given (or the file name for a file). Missing paths
    are returned as-is so that ingestion quarantines them with a clear reason.
    """
    out: list[tuple[Path, str]] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                rel = f.relative_to(p)
                if (
                    f.is_file()
                    and f.suffix.lower() in MESH_EXTENSIONS
                    and not any(part.startswith(".") for part in rel.parts)
                ):
                    out.append((f, rel.as_posix()))
        else:
            out.append((p, p.name))
    return out


def ingest_paths(
    layout: Layout,
    paths: Iterable[str | os.PathLike],
    processes: int = 1,
    config: IngestConfig | None = None,
    source: str = "local",
    licence: str = "unknown",
    label: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest mesh files (obj, stl, ply, off, glb, gltf) and folders of them. Labels default to file stems."""
    items = [
        IngestItem(source=source, source_id=sid, label=label or _label_from_path(f), path=str(f), licence=licence)
        for f, sid in find_mesh_files(paths)
    ]
    return ingest_items(layout, items, processes, config, progress)


def ingest_builtin(
    layout: Layout,
    names: Sequence[str] | None = None,
    processes: int = 1,
    config: IngestConfig | None = None,
    progress: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest builtin shapes (all of :data:`~dga_engine.objects.builtin.BUILTIN_NAMES` by default)."""
    from dga_engine.objects.builtin import BUILTIN_NAMES, builtin_shape

    names = list(names) if names else list(BUILTIN_NAMES)
    shapes = [builtin_shape(n) for n in names]  # unknown names fail here, before any work
    items = [
        IngestItem(source="builtin", source_id=s.name, label=s.label, builtin=s.name, licence="CC0-1.0 (generated)")
        for s in shapes
    ]
    return ingest_items(layout, items, processes, config, progress)


def ingest_mesh_all(
    layout: Layout,
    mesh_or_path: str | os.PathLike | trimesh.Trimesh | trimesh.Scene,
    label: str,
    source: str = "local",
    source_id: str | None = None,
    licence: str = "unknown",
    config: IngestConfig | None = None,
    categories: Sequence[str] = (),
    tags: Sequence[str] = (),
    extra: dict[str, Any] | None = None,
) -> list[ObjectMeta]:
    """Ingest one mesh at every configured scale, in this process; returns one ObjectMeta per scale.

    Already-stored objects are returned as they are. Raises :class:`BadMeshError` (``.reason``) for bad
    input, a failed repair or a CoACD crash/timeout; nothing is quarantined here.
    """
    config = config or IngestConfig()
    is_path = isinstance(mesh_or_path, (str, os.PathLike))
    item = IngestItem(
        source=source,
        source_id=source_id or (Path(mesh_or_path).name if is_path else label),
        label=label,
        path=str(mesh_or_path) if is_path else None,
        mesh=None if is_path else mesh_or_path,  # type: ignore[arg-type]
        licence=licence,
        categories=list(categories),
        tags=list(tags),
        extra=dict(extra or {}),
    )
    return [meta for _, meta, _ in _process(layout, item, config)]


def ingest_mesh(
    layout: Layout,
    mesh_or_path: str | os.PathLike | trimesh.Trimesh | trimesh.Scene,
    label: str,
    source: str = "local",
    source_id: str | None = None,
    licence: str = "unknown",
    config: IngestConfig | None = None,
    **kwargs: Any,
) -> ObjectMeta:
    """Ingest one mesh (file or in-memory) as one object; see :func:`ingest_mesh_all` (which handles several scales)."""
    config = config or IngestConfig()
    if len(config.scales) > 1:
        raise ValueError("ingest_mesh makes one object; with several IngestConfig.scales use ingest_mesh_all")
    return ingest_mesh_all(layout, mesh_or_path, label, source, source_id, licence, config, **kwargs)[0]
