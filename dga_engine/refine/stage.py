"""The ``refine`` stage: candidates in, refined candidates out, resumable; the filter then judges them.

Input: the candidates of one source (``Dataset(layout, dataset).candidates(source)``, one file per key).
Output, per candidate key, ``candidates/<source>+refined/<key>.parquet``: **every** input row, with its
refine fields filled (GRASP_SCHEMA v2):

- ``unchanged``: the filter's cheap checks pass (or the pose is invalid, which the filter reports):
  the row is the input row, same ``grasp_id``;
- ``refined``: a new pose within the preset's bounds that passes the penetration and joint-limit checks;
  a new ``grasp_id`` (from the same provenance plus the preset tag), ``refined_from`` = the input's id,
  and the largest joint change, the root's translation and rotation change;
- ``failed``: not fixable within the bounds: the input pose, same ``grasp_id``, so the filter gives it
  the verdict it would have had without refine.

A unit is one candidate key. Its completion record (stage ``refine``) carries the preset tag and the
fingerprint of the input rows; it is deleted before the output is rewritten and written after, so a
kill at any point leaves either no record (the unit is redone, the same output rewritten) or a record
that matches the output. ``dga-engine filter --source S`` (refine on by default) reads the refined
files; ``--no-refine`` reads the raw ones.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from dga_engine import runs
from dga_engine.dataset.schema import GRASP_SCHEMA, make_grasp_id, pose_arrays
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.procs import single_thread_worker_init
from dga_engine.refine.config import REPAIR, RefineConfig
from dga_engine.refine.optimize import STATUS_REFINED, RefineOutcome
from dga_engine.simulate.config import FilterConfig
from dga_engine.units import join_key, table_fingerprint

log = logging.getLogger(__name__)

STAGE = "refine"
REFINED_SUFFIX = "+refined"
_KEEP_REFINERS = 16  # objects (their points, parts and grid) a process keeps between tasks


def refined_source(source: str) -> str:
    """The candidates area that holds a source's refined candidates."""
    return source + REFINED_SUFFIX


@dataclass
class RefineSummary:
    """What one ``run_refine`` call did (grasps of the units refined now; skipped units not included).

    statuses: unchanged/refined/failed counts. seconds: wall time; cpu_seconds: refine work summed
    over processes (the figure to compare with the filter's cost per grasp).
    """

    source: str
    preset: str
    total: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    units_done: int = 0
    units_skipped: int = 0
    skipped_files: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    max_joint_change: float = 0.0
    max_translation_change: float = 0.0
    max_rotation_change: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Part:
    """Grasps of one (object, scale) in a task: ``rows`` index the unit's table; arrays are (n, ...)."""

    object_id: str
    scale: float
    rows: np.ndarray
    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    seed: int


@dataclass
class _Task:
    root: str
    parts: list[_Part]
    config: dict[str, Any]
    filter_config: dict[str, Any]
    tag: int = 0  # unit index


_REFINERS: "OrderedDict[tuple, Any]" = OrderedDict()


def _refiner(root: str, object_id: str, scale: float, config: RefineConfig, filter_config: FilterConfig):
    """The refiner of one (object, scale), kept for the last few objects this process saw."""
    from dga_engine.objects.store import ObjectStore
    from dga_engine.refine.optimize import ObjectRefiner

    key = (root, object_id, scale, config.config_hash(), filter_config.protocol_version)
    if key in _REFINERS:
        _REFINERS.move_to_end(key)
        return _REFINERS[key]
    layout = Layout.at(root)
    _REFINERS[key] = ObjectRefiner(ObjectStore(layout).load(object_id), scale, config, filter_config, layout=layout)
    while len(_REFINERS) > _KEEP_REFINERS:
        _REFINERS.popitem(last=False)
    return _REFINERS[key]


def _run_task(task: _Task) -> tuple[_Task, list[RefineOutcome | str], float]:
    """Refine one task (in-process or in a worker). An object that cannot be loaded leaves its rows as they are."""
    from dga_engine.refine.optimize import refine_together

    t0 = time.process_time()
    config, filter_config = RefineConfig(**task.config), FilterConfig(**task.filter_config)
    outcomes: list[RefineOutcome | str] = []
    items, where = [], []
    for k, part in enumerate(task.parts):
        try:
            items.append((_refiner(task.root, part.object_id, part.scale, config, filter_config), part.translation,
                          part.rotation, part.joints, part.seed))  # fmt: skip
            where.append(k)
            outcomes.append("")
        except Exception as exc:  # noqa: BLE001 - the object's rows go to the filter unrefined, which reports them
            outcomes.append(f"{type(exc).__name__}: {exc}")
    try:
        for k, out in zip(where, refine_together(items)):
            outcomes[k] = out
    except Exception as exc:  # noqa: BLE001 - e.g. odd geometry: the task's grasps go to the filter as they are
        for k in where:
            outcomes[k] = f"{type(exc).__name__}: {exc}"
    return task, outcomes, time.process_time() - t0


def _tasks(layout: Layout, table: pa.Table, config: RefineConfig, filter_config: FilterConfig, tag: int) -> list[_Task]:
    """Tasks of at most ``config.batch_size`` grasps, in a fixed order. A task holds one (object, scale), or,
    for presets that anneal (whose cost per step is shared by the whole batch), several."""
    arrays = pose_arrays(table)
    ids = np.asarray(table.column("object_id").to_pylist(), dtype=object)
    scales = arrays["object_scale"]
    cfg, fcfg = config.to_dict(), filter_config.to_dict()
    tasks: list[_Task] = []
    for oid in sorted(set(ids.tolist())):
        for scale in np.unique(scales[ids == oid]):
            rows = np.flatnonzero((ids == oid) & (scales == scale))
            for s in range(0, len(rows), config.batch_size):
                r = rows[s : s + config.batch_size]
                part = _Part(oid, float(scale), r, arrays["translation"][r], arrays["rotation"][r], arrays["joints"][r], s)
                last = tasks[-1] if tasks else None
                if (config.anneal_steps and last is not None
                        and sum(len(p.rows) for p in last.parts) + len(r) <= config.batch_size):
                    last.parts.append(part)
                else:
                    tasks.append(_Task(layout.root, [part], cfg, fcfg, tag=tag))
    return tasks


def _iter_outcomes(tasks: list[_Task], workers: int):
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_task(task)
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch/OpenMP threads run
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                             initializer=single_thread_worker_init) as pool:
        futures = [pool.submit(_run_task, t) for t in tasks]
        for fut in as_completed(futures):
            yield fut.result()


def apply_outcomes(table: pa.Table, results: list[tuple[_Task, list[RefineOutcome | str]]], config: RefineConfig) -> pa.Table:
    """``table`` (GRASP_SCHEMA) with every row's refine fields set and refined rows' poses and ids replaced."""
    n = table.num_rows
    arrays = pose_arrays(table)
    t, quat, q = arrays["translation"].copy(), arrays["rotation"].copy(), arrays["joints"].copy()
    status = np.full(n, "unchanged", dtype=object)
    dq = np.zeros(n, np.float32)
    dt = np.zeros(n, np.float32)
    dr = np.zeros(n, np.float32)
    for task, outs in results:
        for part, out in zip(task.parts, outs):
            if isinstance(out, str):
                log.warning("refine: object %s left unrefined: %s", part.object_id, out)
                continue
            rows = part.rows
            t[rows], quat[rows], q[rows] = out.translation, out.rotation, out.joints
            status[rows] = out.status
            dq[rows], dt[rows], dr[rows] = out.joint_change, out.translation_change, out.rotation_change
    refined = status == STATUS_REFINED
    ids = table.column("grasp_id").to_pylist()
    new_ids = list(ids)
    oids, srcs = table.column("object_id").to_pylist(), table.column("source").to_pylist()
    recs, rounds = table.column("source_record_id").to_pylist(), table.column("round").to_pylist()
    for i in np.flatnonzero(refined):
        new_ids[i] = make_grasp_id(oids[i], srcs[i], f"{recs[i]}#{config.tag}", rounds[i])
    f32 = pa.float32()
    cols = {
        "grasp_id": pa.array(new_ids, pa.string()),
        "translation": pa.FixedSizeListArray.from_arrays(pa.array(t.reshape(-1), f32), 3),
        "rotation": pa.FixedSizeListArray.from_arrays(pa.array(quat.reshape(-1), f32), 4),
        "joints": pa.FixedSizeListArray.from_arrays(pa.array(q.reshape(-1), f32), 24),
        "refined_from": pa.array([ids[i] if refined[i] else None for i in range(n)], pa.string()),
        "refine_preset": pa.array([config.tag] * n, pa.string()),
        "refine_status": pa.array(status.tolist(), pa.string()),
        "refine_joint_change": pa.array(dq, f32),
        "refine_translation_change": pa.array(dt, f32),
        "refine_rotation_change": pa.array(dr, f32),
    }
    out = table.select(GRASP_SCHEMA.names)
    for name, arr in cols.items():
        out = out.set_column(out.schema.get_field_index(name), GRASP_SCHEMA.field(name), arr)
    return out.cast(GRASP_SCHEMA)


def refine_table(layout: Layout, table: pa.Table, config: RefineConfig = REPAIR, filter_config: FilterConfig | None = None,
                 workers: int = 1, progress: Callable[[int], None] | None = None) -> tuple[pa.Table, float]:
    """Refine a GRASP_SCHEMA table; returns (the refined table in input order, CPU seconds spent)."""
    from dga_engine.simulate.engine import conform_input

    table = conform_input(table)
    filter_config = filter_config or FilterConfig()
    results, cpu = [], 0.0
    for task, out, seconds in _iter_outcomes(_tasks(layout, table, config, filter_config, 0), workers):
        results.append((task, out))
        cpu += seconds
        if progress is not None:
            progress(sum(len(p.rows) for p in task.parts))
    return apply_outcomes(table, results, config), cpu


def unit_name(source: str, key: str) -> str:
    return join_key("refine", source, key)


def run_refine(
    layout: Layout,
    source: str,
    config: RefineConfig = REPAIR,
    *,
    dataset: str = DEFAULT_DATASET,
    filter_config: FilterConfig | None = None,
    workers: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> RefineSummary:
    """Refine every candidate key of ``source`` not yet refined from the same input with the same preset.

    ``filter_config``: the limits a refined grasp must meet (the filter's; default protocol).
    ``progress(done_rows, total_rows)`` is called as grasps finish. A candidates file that cannot be
    read is skipped and listed in the summary; the other keys go on.
    """
    from dga_engine.dataset.store import Dataset

    filter_config = filter_config or FilterConfig()
    ds = Dataset(layout, dataset)
    started = time.perf_counter()
    summary = RefineSummary(source=source, preset=config.tag)
    keys = ds.candidate_keys(source)
    if not keys:
        raise FileNotFoundError(
            f"no candidates for source {source!r} in dataset {dataset!r} ({layout.dataset(dataset)}/candidates/{source}/); "
            "run curate/synthesize/generate first"
        )
    pending: list[tuple[str, str, pa.Table, str]] = []  # (key, unit, rows, fingerprint)
    for key in keys:
        try:
            table = ds.candidates(source, keys=[key])
        except Exception as exc:  # noqa: BLE001 - a damaged file must not end the run; the filter reports it too
            summary.skipped_files.append({"key": key, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        unit = unit_name(source, key)
        fp = table_fingerprint(table)
        if runs.is_current(layout, runs.dataset_stage(STAGE, dataset), unit, preset=config.tag, input=fp, limits=filter_config.protocol_version):
            summary.units_skipped += 1
            continue
        pending.append((key, unit, table, fp))

    total = sum(t.num_rows for _, _, t, _ in pending)
    done = 0
    if progress is not None:
        progress(0, total)
    tasks = [task for u, (_, _, table, _) in enumerate(pending) for task in _tasks(layout, table, config, filter_config, u)]
    remaining = np.bincount([t.tag for t in tasks], minlength=len(pending))
    collected: dict[int, list] = {u: [] for u in range(len(pending))}
    for u in np.flatnonzero(remaining == 0):  # empty candidate files: an empty refined file
        _commit(layout, ds, summary, pending[u], [], config, filter_config)
    for task, out, seconds in _iter_outcomes(tasks, workers):
        u = task.tag
        collected[u].append((task, out))
        summary.cpu_seconds += seconds
        remaining[u] -= 1
        done += sum(len(p.rows) for p in task.parts)
        if progress is not None:
            progress(done, total)
        if remaining[u] == 0:
            _commit(layout, ds, summary, pending[u], collected.pop(u), config, filter_config)
    summary.seconds = time.perf_counter() - started
    return summary


def _commit(layout: Layout, ds, summary: RefineSummary, item: tuple[str, str, pa.Table, str], results: list,
            config: RefineConfig, filter_config: FilterConfig) -> None:
    """Write one unit's refined candidates, then its record (the old record goes first: see the module doc)."""
    key, unit, table, fp = item
    refined = apply_outcomes(table, results, config)
    stage = runs.dataset_stage(STAGE, ds.name)
    runs.clear(layout, stage, unit)
    ds.write_candidates(refined, refined_source(summary.source), key)
    counts: dict[str, int] = {}
    for s in refined.column("refine_status").to_pylist():
        counts[s] = counts.get(s, 0) + 1
    stats = {"grasps": refined.num_rows, "statuses": counts}
    runs.mark_done(layout, stage, unit, stats, source=summary.source, key=key, preset=config.tag, input=fp,
                   limits=filter_config.protocol_version)  # fmt: skip
    summary.units_done += 1
    summary.total += refined.num_rows
    for s, c in counts.items():
        summary.statuses[s] = summary.statuses.get(s, 0) + c
    for name, attr in (("refine_joint_change", "max_joint_change"), ("refine_translation_change", "max_translation_change"),
                       ("refine_rotation_change", "max_rotation_change")):
        col = refined.column(name).to_numpy(zero_copy_only=False)
        if len(col):
            setattr(summary, attr, max(getattr(summary, attr), float(np.nanmax(col))))
