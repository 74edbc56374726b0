"""The curate stage: one source dataset -> ingested objects + unfiltered candidate grasps.

For every work unit of the source (a file or an object folder, see the loaders), in order:

1. the loader reads it safely and converts every grasp to the engine's pose convention, checking a
   sample by forward kinematics against the source's own hand model (fingertips, mm);
2. each object the grasps refer to is ingested once (``dga_engine.objects.ingest.ingest_mesh``), from the
   source's mesh file multiplied by a canonical factor (0.1 for the unit-size normalised meshes of
   DexGraspNet/UniDexGrasp, 1.0 for metric ones), so the stored mesh is metric and one source mesh
   always gives the same stored object; ingestion may centre (and rescale) the mesh: the similarity it
   applied is measured and every grasp is moved with it;
3. the grasps become GRASP_SCHEMA rows (round 0, filter fields null, provenance in ``source`` and
   ``source_record_id`` = ``<file>:<record index>``) with ``object_scale`` = the source's scale for
   that grasp relative to the stored mesh, written to ``datasets/<name>/candidates/<source>/<unit>.parquet``;
4. the unit's completion record is written (``runs/stages/curate-<source>/<unit>.json``), so a rerun
   skips it. Units with objects whose mesh was not found are not marked done (add the meshes, rerun).

The per-object split of the source is written to ``datasets/<name>/splits/<source>.json``
(``{"objects": {object_id: {"split", "source_id"}}}``), which the dataset metadata can include.
Unreadable files and malformed records are skipped and listed in the :class:`CurateReport`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import inspect
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import trimesh

from dga_engine import fs, runs
from dga_engine.dataset.schema import pose_table
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.sources.base import GraspBatch, SourceLoader, SourceObject, legacy_unit_key, unit_key
from dga_engine.sources.safeload import SourceFileError

log = logging.getLogger(__name__)

SOURCES = ("dexgraspnet", "unidexgrasp", "multidex", "realdex", "dga", "grab")
CURATE_VERSION = "curate-1"
# Largest fingertip disagreement (mm) accepted between a source model and the converted pose. The
# DexGraspNet MJCF is the engine's hand (exact); the sr_grasp_description URDF differs in the little
# finger's metacarpal (~1.8 mm) and the thumb base (0.5 mm).
# GRAB's human hands are retargeted, not converted: the tolerance there is the largest fingertip distance
# between the retargeted ShadowHand and the MANO hand a kept frame may have (worse frames are dropped).
TOLERANCE_MM = {"dexgraspnet_mjcf": 0.5, "sr_grasp_description": 2.5, "mano": 25.0}
NORMALISED_DIAGONAL = 0.8  # a source mesh with a larger bounding-box diagonal is unit-size normalised (not metres)
NORMALISED_CANONICAL = 0.1  # ... and is stored at this factor (DexGraspNet's middle scale)


class CurateError(RuntimeError):
    """The source cannot be curated at all (missing folder, no files); the message says what to do."""


@dataclass(frozen=True)
class CurateConfig:
    """How one source is curated."""

    path: str | None = None  # source root; default <root>/sources/<source>
    dataset: str = DEFAULT_DATASET  # dataset whose candidates/ and splits/ receive the grasps
    mesh_dirs: tuple[str, ...] = ()  # extra folders searched for object meshes (the DGA release ships none)
    verify_samples: int = 64  # grasps per batch checked by FK against the source's hand model
    tolerance_mm: float | None = None  # FK fingertip tolerance; None = TOLERANCE_MM of the source's hand model
    chunk_rows: int = 200_000  # largest candidates file; bigger units are written as <unit>-000, -001, ...
    resume: bool = True  # skip units with a completion record
    scale_mode: str = "auto"  # dga only: what 'scale' means in a release file (auto from its name | multiply | divide)
    frame_stride: int = 1  # realdex raw captures and grab sequences: consider every n-th frame
    min_change_mm: float = 5.0  # grab: a frame is kept when a keypoint moved this much since the last kept one
    mano_model: str | None = None  # grab: the user's MANO_RIGHT.pkl (default $DGA_MANO_MODEL)
    contact_mm: float = 10.0  # realdex raw captures: fingertip-to-object distance that counts as contact
    min_contacts: int = 3  # realdex raw captures: fingertips in contact for a frame to be kept
    max_units: int | None = None  # stop after this many units (trial runs)

    def replace(self, **changes) -> CurateConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class PlacedObject:
    """An ingested object and how the source's mesh maps onto it: stored = k * canonical * source + offset."""

    key: str
    object_id: str
    canonical: float
    k: float
    offset: np.ndarray
    split: str | None
    source_diagonal: float  # bounding-box diagonal of the source mesh, in its file units


@dataclass
class CurateReport:
    """What a curate run did. Counts are grasps unless named otherwise."""

    source: str
    path: str
    dataset: str
    units_total: int = 0
    units_done: int = 0  # processed in this run
    units_resumed: int = 0  # skipped: completed by an earlier run
    grasps_written: int = 0
    grasps_out_of_limits: int = 0  # written, but some joint lies outside the engine's limits (the filter decides)
    grasps_missing_object: int = 0  # not written: their object's mesh was not found or could not be ingested
    bad_records: int = 0  # malformed records skipped inside readable files
    bad_record_examples: list[str] = field(default_factory=list)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)  # (file, why) not read at all
    # source key -> {object_id, split, canonical_scale}
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    missing_objects: dict[str, str] = field(default_factory=dict)  # source key -> why it was not ingested
    fk_residual_mm: dict[str, float] = field(default_factory=dict)  # largest fingertip residual per finger
    warnings: list[str] = field(default_factory=list)
    candidate_keys: list[str] = field(default_factory=list)
    splits_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped_files"] = [{"file": f, "reason": r} for f, r in self.skipped_files]
        return d


def make_loader(source: str, root: Path, config: CurateConfig) -> SourceLoader:
    mesh_dirs = tuple(Path(p).expanduser() for p in config.mesh_dirs)
    verify = config.verify_samples
    if source == "dexgraspnet":
        from dga_engine.sources.dexgraspnet import DexGraspNetLoader

        return DexGraspNetLoader(root, verify, mesh_dirs)
    if source == "unidexgrasp":
        from dga_engine.sources.unidexgrasp import UniDexGraspLoader

        return UniDexGraspLoader(root, verify, mesh_dirs)
    if source == "multidex":
        from dga_engine.sources.multidex import MultiDexLoader

        return MultiDexLoader(root, verify, mesh_dirs)
    if source == "realdex":
        from dga_engine.sources.realdex import RealDexLoader

        return RealDexLoader(root, verify, mesh_dirs, config.frame_stride, config.contact_mm, config.min_contacts)
    if source == "dga":
        from dga_engine.sources.dga import DGALoader

        return DGALoader(root, verify, mesh_dirs, config.scale_mode)
    if source == "grab":
        from dga_engine.retarget.mano import ManoModelMissing
        from dga_engine.sources.grab import GrabLoader

        try:
            return GrabLoader(root, config.mano_model, config.frame_stride, config.min_change_mm,
                              config.tolerance_mm if config.tolerance_mm is not None else TOLERANCE_MM["mano"])
        except ManoModelMissing as exc:
            raise CurateError(str(exc)) from None
    raise CurateError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")


# ---- objects ------------------------------------------------------------------------------------------


def load_source_mesh(path: str) -> trimesh.Trimesh:
    """A source's mesh file as one triangle mesh.

    DexGraspNet's and UniDexGrasp's ``decomposed.obj`` hold the object as several overlapping (or touching)
    convex pieces: closed pieces are merged into one solid by a boolean union, so ingestion gets a clean
    watertight mesh instead of a non-manifold soup of pieces.
    """
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as exc:  # trimesh raises many types for bad files
        raise SourceFileError(path, f"cannot read mesh: {type(exc).__name__}: {exc}") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if not geoms:
            raise SourceFileError(path, "mesh file has no triangles")
        mesh = trimesh.util.concatenate(geoms)
    elif isinstance(loaded, trimesh.Trimesh):
        mesh = loaded
    else:
        raise SourceFileError(path, f"mesh file holds a {type(loaded).__name__}, not a triangle mesh")
    if len(mesh.faces) == 0 or not np.isfinite(mesh.vertices).all():
        raise SourceFileError(path, "mesh has no faces or non-finite vertices")
    bodies = mesh.split(only_watertight=False) if mesh.body_count > 1 else [mesh]
    if len(bodies) > 1 and all(b.is_watertight for b in bodies):
        try:
            for b in bodies:
                trimesh.repair.fix_normals(b)
            union = trimesh.boolean.union(bodies, engine="manifold")
            if union.is_watertight and union.volume > 0:
                mesh = union
        except Exception:  # noqa: BLE001 - keep the pieces; ingestion repairs what it can
            log.debug("union of %d pieces of %s failed", len(bodies), path)
    return mesh


def canonical_factor(mesh: trimesh.Trimesh) -> float:
    """Factor that makes a source mesh metric-sized for storage (see the module docstring)."""
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    return NORMALISED_CANONICAL if diag > NORMALISED_DIAGONAL else 1.0


def measure_similarity(
    given: trimesh.Trimesh, stored: trimesh.Trimesh, k: float | None = None
) -> tuple[float, np.ndarray]:
    """``(k, offset)`` with ``stored ~= k * given + offset`` (ingestion centres and may rescale; no rotation).

    ``k`` is the scale ingestion reports applying (``ObjectMeta.scale_applied``), else the ratio of the
    bounding-box diagonals. The offset starts at the difference of the bounding-box centres and is refined
    by translation-only ICP on surface samples, so repairs (welded seams, filled holes, a remesh) do not
    bias it. Raises ValueError when the stored mesh is not a scaled, shifted copy of the given one.
    """
    from scipy.spatial import cKDTree

    dg = float(np.linalg.norm(given.bounds[1] - given.bounds[0]))
    ds = float(np.linalg.norm(stored.bounds[1] - stored.bounds[0]))
    if dg <= 0 or ds <= 0:
        raise ValueError("degenerate mesh: zero size")
    if k is None or not (k > 0 and np.isfinite(k)):
        k = ds / dg
    offset = stored.bounds.mean(axis=0) - k * given.bounds.mean(axis=0)
    pts = k * np.asarray(trimesh.sample.sample_surface(given, 2000, seed=0)[0])
    tree = cKDTree(np.asarray(trimesh.sample.sample_surface(stored, 4000, seed=1)[0]))
    for _ in range(4):
        _, j = tree.query(pts + offset)
        offset = offset + np.median(tree.data[j] - (pts + offset), axis=0)
    d, _ = tree.query(pts + offset)
    if float(np.mean(d)) > 0.02 * ds or abs(k * dg / ds - 1.0) > 0.05:
        raise ValueError(
            f"the stored object is not a scaled, shifted copy of the source mesh (mean gap {np.mean(d):.3g} m, "
            f"size ratio {k * dg / ds:.3f}); cannot place the grasps on it"
        )
    return float(k), offset


def _ingest(layout: Layout, mesh: trimesh.Trimesh, obj: SourceObject, source: str, licence: str, extra: dict) -> Any:
    from dga_engine.objects.ingest import ingest_mesh

    kwargs: dict[str, Any] = dict(label=obj.label, source=source, source_id=obj.key, licence=licence)
    params = inspect.signature(ingest_mesh).parameters
    if "extra" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kwargs["extra"] = extra
    return ingest_mesh(layout, mesh, **kwargs)


def _meta_of(result: Any) -> Any:
    """The ObjectMeta inside whatever ingest_mesh returned (an ObjectMeta or a report holding one)."""
    for attr in ("object_id",):
        if hasattr(result, attr):
            return result
    for attr in ("meta", "object"):
        inner = getattr(result, attr, None)
        if inner is not None and hasattr(inner, "object_id"):
            return inner
    for attr in ("objects", "ingested", "metas"):
        seq = getattr(result, attr, None)
        if seq:
            first = seq[0] if isinstance(seq, (list, tuple)) else next(iter(seq.values()))
            if hasattr(first, "object_id"):
                return first
    failed = getattr(result, "failed", None) or getattr(result, "errors", None)
    raise RuntimeError(f"ingestion gave no object ({failed or result!r})")


def place_object(layout: Layout, obj: SourceObject, source: str, licence: str) -> PlacedObject:
    """Ingest one source object and measure how its mesh maps onto the stored one."""
    from dga_engine.objects.store import ObjectStore

    if not obj.mesh_path:
        raise FileNotFoundError("mesh not found: put it where the source ships it, or pass --mesh-dir")
    mesh = load_source_mesh(obj.mesh_path)
    canonical = canonical_factor(mesh)
    given = mesh.copy()
    given.apply_scale(canonical)
    extra = {"curated_from": {source: {"source_id": obj.key, "split": obj.split, "canonical_scale": canonical,
                                       "mesh_file": Path(obj.mesh_path).name, **obj.extra}}}
    meta = _meta_of(_ingest(layout, given, obj, source, licence, extra))
    stored = ObjectStore(layout).load(meta.object_id, with_parts=False).mesh
    k, offset = measure_similarity(given, stored, getattr(meta, "scale_applied", None))
    diag = float(np.linalg.norm(mesh.bounds[1] - mesh.bounds[0]))
    return PlacedObject(obj.key, meta.object_id, canonical, k, offset, obj.split, diag)


# ---- grasps -------------------------------------------------------------------------------------------


def batch_table(batch: GraspBatch, placed: PlacedObject, source: str, config_hash: str) -> pa.Table:
    """GRASP_SCHEMA rows of one batch, moved into the stored object's frame."""
    import torch

    from dga_engine.hand import rotations

    object_scale = batch.mesh_scale / (placed.canonical * placed.k)
    # source frame = object_scale * (stored - offset): shift the hand by object_scale * offset.
    translation = batch.translation + object_scale[:, None] * placed.offset[None, :]
    quat = rotations.matrix_to_quat(torch.as_tensor(batch.rotation, dtype=torch.float64)).numpy()
    return pose_table(
        placed.object_id,
        translation,
        quat,
        batch.joints,
        source=source,
        source_record_id=batch.record_ids,
        round_=0,
        generator=f"{CURATE_VERSION}:{source}",
        generator_config_hash=config_hash,
        object_scale=object_scale,
    )


def _out_of_limits(joints: np.ndarray, tol: float = 1e-3) -> int:
    from dga_engine.hand.model import default_hand

    hand = default_hand()
    lo, hi = hand.lower.double().numpy(), hand.upper.double().numpy()
    return int(((joints < lo - tol) | (joints > hi + tol)).any(axis=1).sum())


def _splits_path(layout: Layout, dataset: str, source: str) -> str:
    from dga_engine.layout import safe_name

    return layout.dataset(dataset) + f"/splits/{safe_name(source)}.json"


SPLITS = ("train", "val", "test")


def object_splits(layout: Layout, dataset: str = DEFAULT_DATASET) -> dict[str, str]:
    """{object_id: train | val | test} from every source's split file of the dataset (objects a source
    names no split for are left out). Read back from storage, so checked: a damaged file is skipped with
    a warning, unknown split names are ignored."""
    folder = layout.dataset(dataset) + "/splits"
    out: dict[str, str] = {}
    for name in sorted(fs.listdir(folder)):
        if not name.endswith(".json") or name.startswith("."):
            continue
        path = f"{folder}/{name}"
        try:
            if fs.size(path) > 64 << 20:
                raise ValueError("larger than 64 MiB")
            objects = fs.read_json(path).get("objects", {})
            items = objects.items() if isinstance(objects, dict) else ()
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("skipping split file %s: %s", path, exc)
            continue
        for object_id, entry in items:
            split = entry.get("split") if isinstance(entry, dict) else None
            if isinstance(object_id, str) and split in SPLITS:
                out[object_id] = split
    return out


def _write_splits(layout: Layout, dataset: str, source: str, placed: dict[str, PlacedObject]) -> str:
    path = _splits_path(layout, dataset, source)
    current = fs.read_json(path) if fs.exists(path) else {"source": source, "objects": {}}
    objects = current.setdefault("objects", {})
    for p in placed.values():
        objects[p.object_id] = {"split": p.split, "source_id": p.key}
    current["updated_at"] = _dt.datetime.now(_dt.UTC).isoformat()
    current["note"] = "split per object as the source's split files give it (null: the source names none)"
    fs.write_json(path, current)
    return path


def _adopt_legacy(layout: Layout, ds: Any, source: str, stage: str, unit: str, ukey: str) -> bool:
    """Whether ``unit`` was completed under its pre-hash key (:func:`~.base.legacy_unit_key`); if so, record it
    under ``ukey`` too. Old keys were not injective, so the old record counts only when the candidates it
    wrote really came from this unit (their record ids start with the unit's path)."""
    old = legacy_unit_key(unit)
    record = runs.read_record(layout, stage, old) if old != ukey else None
    if not record:
        return False
    keys = set(ds.candidate_keys(source))
    key = next((k for k in (old, f"{old}-000") if k in keys), None)
    if key is None:  # it wrote no grasps: redoing it costs little and cannot duplicate anything
        return False
    ids = ds.candidates(source, keys=[key]).column("source_record_id")
    if not len(ids) or not str(ids[0].as_py()).startswith((f"{unit}:", f"{unit}/")):
        return False
    runs.mark_done(layout, stage, ukey, {**record.get("stats", {}), "adopted_from": old})
    return True


def curate(layout: Layout, source: str, config: CurateConfig | None = None,
           advance: Callable[[int], None] | None = None) -> CurateReport:
    """Curate ``source`` into the dataset's candidates area; see the module docstring.

    ``advance(n)`` is called after each unit (progress bars). Raises :class:`CurateError` when the source
    folder or its files are missing; everything else that goes wrong is reported and skipped.
    """
    config = config or CurateConfig()
    from dga_engine.dataset.store import Dataset

    root, loader, units = _open_source(layout, source, config)
    report = CurateReport(source=source, path=str(root), dataset=config.dataset, units_total=len(units))
    run = _CurateRun(
        layout=layout,
        ds=Dataset(layout, config.dataset),
        stage=runs.dataset_stage(f"curate-{source}", config.dataset),
        loader=loader,
        config=config,
        report=report,
        tol=config.tolerance_mm if config.tolerance_mm is not None else TOLERANCE_MM[loader.hand_model],
        config_hash=hashlib.sha256(f"{CURATE_VERSION}|{loader.hand_model}|{config.scale_mode}".encode()).hexdigest()[:16],
    )
    for unit in units:
        ukey = unit_key(unit)
        if config.resume and (
            runs.is_done(layout, run.stage, ukey) or _adopt_legacy(layout, run.ds, source, run.stage, unit, ukey)
        ):
            report.units_resumed += 1
        else:
            try:
                result = loader.load_unit(unit)
            except SourceFileError as exc:
                report.skipped_files.append((unit, exc.problem))
                log.warning("curate %s: skipped %s", source, exc)
            else:
                run.unit(ukey, result)
        if advance:
            advance(1)
    report.fk_residual_mm = {f: round(float(v), 3) for f, v in zip(("ff", "mf", "rf", "lf", "th"), run.residual)}
    if run.placed:
        report.splits_file = _write_splits(layout, config.dataset, source, run.placed)
    return report


def _open_source(layout: Layout, source: str, config: CurateConfig) -> tuple[Path, SourceLoader, list[str]]:
    """The source folder, its loader and the units to curate, or a :class:`CurateError` saying what to do."""
    if source not in SOURCES:
        raise CurateError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if config.path is None and not layout.is_local:
        raise CurateError("curate reads sources from a local folder: pass --path when the storage root is remote")
    root = Path(config.path).expanduser() if config.path else Path(layout.source(source))
    if not root.is_dir():
        raise CurateError(f"{source}: source folder {root} does not exist; download the dataset and put it there "
                          f"(or pass --path)")
    loader = make_loader(source, root, config)
    units = loader.units()
    if not units:
        raise CurateError(
            f"{source}: no source files found under {root}; see `dga-engine curate --help` for the layout"
        )
    if config.max_units is not None:
        units = units[: config.max_units]
    return root, loader, units


@dataclass
class _CurateRun:
    """One curate call's state: where it writes, the objects placed (or not) so far, the largest FK residual."""

    layout: Layout
    ds: Any
    stage: str
    loader: SourceLoader
    config: CurateConfig
    report: CurateReport
    tol: float  # FK fingertip tolerance, mm
    config_hash: str
    placed: dict[str, PlacedObject] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # source key -> why its object was not ingested
    residual: np.ndarray = field(default_factory=lambda: np.zeros(5))  # largest fingertip residual per finger, mm

    def unit(self, ukey: str, result: Any) -> None:
        """One loaded unit: check its batches, place their objects, write its candidates, then its completion
        record (only when every object was placed)."""
        report = self.report
        report.skipped_files += result.skipped_files
        report.bad_records += result.bad_records
        if result.bad_record_example and len(report.bad_record_examples) < 20:
            report.bad_record_examples.append(result.bad_record_example)
        tables: list[pa.Table] = []
        complete = True
        stats: Counter = Counter()
        for batch in result.batches:
            batch = self.within_tolerance(batch)
            if batch is None:
                continue
            self.residual = np.maximum(self.residual, batch.residual_mm)
            key = batch.object_key
            if key not in self.placed and key not in self.failed:
                self.place(key)
            if key in self.failed:
                report.grasps_missing_object += len(batch)
                complete = False
                continue
            tables.append(batch_table(batch, self.placed[key], report.source, self.config_hash))
            stats["grasps"] += len(batch)
            stats["out_of_limits"] += _out_of_limits(batch.joints)
        written = self.write_candidates(ukey, tables)
        report.grasps_written += written
        report.grasps_out_of_limits += stats["out_of_limits"]
        report.units_done += 1
        if complete:  # unreadable files inside the unit stay reported; --no-resume retries them
            runs.mark_done(self.layout, self.stage, ukey, {"grasps": written, "bad_records": result.bad_records,
                                                           "out_of_limits": stats["out_of_limits"],
                                                           "skipped_files": [f for f, _ in result.skipped_files]})

    def within_tolerance(self, batch: GraspBatch) -> GraspBatch | None:
        """``batch`` without the records whose converted fingertips miss the source model's by more than the
        tolerance; None when nothing is left, or when most checked records miss (the file's convention is wrong)."""
        tol, report = self.tol, self.report
        worst = float(batch.residual_mm.max()) if len(batch.residual_mm) else 0.0
        if worst <= tol:
            return batch
        missed = batch.verify_rows[batch.verify_residual_mm.max(axis=1) > tol]
        if 2 * len(missed) > len(batch.verify_rows):  # most of them: the convention, not a record
            report.skipped_files.append(
                (
                    batch.source_file,
                    f"converted grasps of {batch.object_key} miss the source "
                    f"model's fingertips by {worst:.2f} mm (> {tol} mm): the file's convention "
                    "is not the expected one",
                )
            )
            return None
        # a few records disagree by FK: drop those records, keep the rest of the object's grasps
        report.bad_records += len(missed)
        if len(report.bad_record_examples) < 20:
            report.bad_record_examples.append(
                f"{batch.record_ids[int(missed[0])]}: converted fingertips miss the "
                f"source model's by {worst:.2f} mm (> {tol} mm)"
            )
        batch = batch.without(missed)
        return batch if len(batch) else None

    def place(self, key: str) -> None:
        """Ingest the object behind source key ``key`` into ``placed``, or record why not in ``failed``."""
        report, source = self.report, self.report.source
        try:
            obj = self.loader.object(key)
            self.placed[key] = place_object(self.layout, obj, source, self.loader.licence)
            p = self.placed[key]
            report.objects[key] = {"object_id": p.object_id, "split": p.split, "canonical_scale": p.canonical,
                                   "ingest_scale": p.k}
            diag = obj.extra.get("point_cloud_diagonal")
            if diag:  # the release's point cloud and the mesh found for it should be the same size
                ratio = diag / p.source_diagonal if p.source_diagonal > 0 else float("nan")
                if not 0.9 <= ratio <= 1.1:
                    report.warnings.append(f"{key}: the release's point cloud is {ratio:.3g}x the size of mesh "
                                           f"{obj.mesh_path}; check it is the mesh the release used")
        except (FileNotFoundError, SourceFileError, ValueError, RuntimeError, OSError) as exc:
            self.failed[key] = str(exc)
            report.missing_objects[key] = str(exc)
            log.warning("curate %s: object %s not ingested: %s", source, key, exc)

    def write_candidates(self, ukey: str, tables: list[pa.Table]) -> int:
        """The unit's candidate rows as ``<ukey>`` (``<ukey>-000``, ``-001``... past ``chunk_rows``); rows written."""
        if not tables:
            return 0
        table = pa.concat_tables(tables)
        chunk_rows = self.config.chunk_rows
        n_chunks = max(1, -(-table.num_rows // chunk_rows))
        written = 0
        for c in range(n_chunks):
            key = ukey if n_chunks == 1 else f"{ukey}-{c:03d}"
            part = table.slice(c * chunk_rows, chunk_rows)
            self.ds.write_candidates(part, self.report.source, key)
            self.report.candidate_keys.append(key)
            written += part.num_rows
        return written
