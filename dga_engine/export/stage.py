"""The export stage: accepted grasps of a dataset -> another project's layout, checked by forward kinematics.

For each object (read with :meth:`Dataset.read_object`, so memory is bounded by one object's grasps plus the
poses kept for the check, 264 bytes a grasp; the ``dga`` format also holds its metadata list until it writes
its single ``.pt`` file, about 1 KB a grasp), the rows are converted and written by the format's writer.
Then every file is read back with our loader for that layout and the engine's fingertips (``HandModel``) of
what came back are compared with those of what was exported: the round trip must agree within
``tolerance_mm`` (0.1 mm) or the export is reported as failed. The fingertips of the format's own hand model
are compared too (``model_residual_mm``): that measures how far the two hand models disagree (the
sr_grasp_description URDF and DexGraspBench's hand differ from the gymnasium-robotics MJCF in the little
finger's metacarpal and the thumb base, by up to ~2 mm), not an error of the export.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dga_engine.dataset.schema import pose_arrays
from dga_engine.dataset.store import Dataset
from dga_engine.export.convert import fingertip_gap_mm
from dga_engine.export.formats import FORMATS, Rows
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.objects.store import ObjectStore

TOLERANCE_MM = 0.1
# A --filter is a WHERE clause over the `grasps` view; statements and comments cannot be smuggled in.
_FORBIDDEN_SQL = re.compile(
    r";|--|/\*|\b(attach|copy|install|load|pragma|create|drop|insert|update|delete|export|call|set)\b", re.I
)


class ExportError(RuntimeError):
    """The export cannot run (bad filter, unknown format, nothing to export); the message says what to do."""


@dataclass
class ExportReport:
    format: str
    out: str
    hand_model: str
    grasps: int = 0
    objects: int = 0
    files: int = 0
    roundtrip_max_mm: float = 0.0  # engine fingertips: exported vs read back by our loader
    model_residual_max_mm: list[float] = field(default_factory=list)  # per finger ff, mf, rf, lf, th
    tolerance_mm: float = TOLERANCE_MM
    verified: bool = False
    skipped_objects: dict[str, str] = field(default_factory=dict)  # object id -> why (e.g. not in the object store)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(table: pa.Table) -> Rows:
    from dga_engine.sources.kinematics import quat_wxyz_matrix

    arr = pose_arrays(table)
    rot = np.array([quat_wxyz_matrix(qq) for qq in arr["rotation"].astype(np.float64)]).reshape(-1, 3, 3)
    return Rows(table.column("grasp_id").to_pylist(), arr["translation"].astype(np.float64), rot,
                arr["joints"].astype(np.float64), arr["object_scale"].astype(np.float64))


def object_tables(ds: Dataset, where: str | None = None) -> Iterator[tuple[str, pa.Table]]:
    """(object_id, its accepted grasps) for every object, optionally only rows matching the SQL ``where``."""
    if where:
        if _FORBIDDEN_SQL.search(where):
            raise ExportError(f"--filter must be one WHERE condition over the grasps view, not {where!r}")
        try:
            hits = ds.query(f"SELECT object_id, grasp_id FROM grasps WHERE {where}")
        except Exception as exc:  # DuckDB parser/binder errors
            raise ExportError(f"--filter {where!r} is not a valid condition on the grasps view: {exc}") from exc
        wanted: dict[str, set[str]] = {}
        for oid, gid in zip(hits.column("object_id").to_pylist(), hits.column("grasp_id").to_pylist()):
            wanted.setdefault(oid, set()).add(gid)
        for oid in sorted(wanted):
            t = ds.read_object(oid)
            yield oid, t.filter(pc.is_in(t.column("grasp_id"), pa.array(sorted(wanted[oid]))))
        return
    objects = sorted({o for m in ds.shards() for o in m.object_ids})
    for oid in objects:
        yield oid, ds.read_object(oid)


def _splits(ds: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in ds.shards():
        if m.split:
            for o in m.object_ids:
                out.setdefault(o, m.split)
    return out


def export_dataset(
    layout: Layout,
    fmt: str,
    out: str | Path,
    *,
    dataset: str = DEFAULT_DATASET,
    where: str | None = None,
    tolerance_mm: float = TOLERANCE_MM,
    progress: Callable[[int], None] | None = None,
    **format_options: Any,
) -> ExportReport:
    """Write the accepted grasps of ``dataset`` (or those matching ``where``) in format ``fmt`` under ``out``, then
    verify."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    ds = Dataset(layout, dataset)
    if not ds.exists():
        raise ExportError(f"dataset {dataset!r} does not exist under {layout.root}; build or filter first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    writer = FORMATS[fmt](out, **format_options)
    report = ExportReport(format=fmt, out=str(out), hand_model=writer.hand_model, tolerance_mm=tolerance_mm)
    store = ObjectStore(layout)
    written: list[Rows] = []
    for oid, table in object_tables(ds, where):
        if table.num_rows == 0:
            continue
        if not store.exists(oid):
            report.skipped_objects[oid] = "not in the object store (ingest or curate it again)"
            continue
        rows = _rows(table)
        rows = rows.take(np.argsort(rows.scale, kind="stable"))  # formats that split by scale keep this order
        writer.add(oid, store.load(oid), rows)
        written.append(rows)
        report.grasps += len(rows)
        report.objects += 1
        if progress is not None:
            progress(len(rows))
    writer.finish(_splits(ds))
    report.files = len(writer.files())
    if not written:
        raise ExportError(
            "no accepted grasps matched: nothing was exported" + (f" (filter {where!r})" if where else "")
        )
    everything = Rows([g for r in written for g in r.grasp_id], np.concatenate([r.translation for r in written]),
                      np.concatenate([r.rotation for r in written]), np.concatenate([r.joints for r in written]),
                      np.concatenate([r.scale for r in written]))
    back = writer.read_back()
    if len(back.translation) != len(everything):
        raise ExportError(f"read back {len(back.translation)} grasps from {out}, wrote {len(everything)}")
    gap = fingertip_gap_mm(everything.translation, everything.rotation, everything.joints,
                           back.translation, back.rotation, back.joints)
    report.roundtrip_max_mm = float(gap.max())
    report.model_residual_max_mm = [float(x) for x in writer.model_residual_mm(everything).max(axis=0)]
    report.verified = report.roundtrip_max_mm <= tolerance_mm
    return report
