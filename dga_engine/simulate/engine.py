"""Scheduling and table assembly for the physics filter: grasp tables in, per-object tasks out to
workers, their results back into one table in input order.

The decision for each grasp (pose checks, penetration, push test, reason) is
:mod:`dga_engine.simulate.decide`. Work is split into tasks of at most ``TASK_ROWS`` grasps of one object,
in a fixed order, so the results do not depend on the number of worker processes. Each task loads its
object once, computes penetration for its grasps in one batch and runs the backend on one scene.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import FILTER_FIELDS, GRASP_SCHEMA, pose_arrays, upgrade
from dga_engine.layout import Layout
from dga_engine.procs import single_thread_worker_init
from dga_engine.simulate.backends import check_backend
from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.decide import Task, TaskResult, run_task
from dga_engine.threads import compute_threads

TASK_ROWS = 32  # grasps per task (one object): small enough to spread one object over workers; fixed so
# that results never depend on the worker count (a worker keeps the object, its point cloud and scene
# between consecutive tasks of the same object, so small tasks cost little)

# The filter's output: GRASP_SCHEMA (filter fields filled) plus the decision and the reference metrics
# that GRASP_SCHEMA has no field for (they do not reach the dataset's shards).
RESULT_FIELDS = [
    pa.field("reason", pa.string()),  # null = accepted; else one of REJECT_REASONS
    pa.field("detail", pa.string()),  # human-readable why (which joint, which depth, which direction)
]
FILTERED_SCHEMA = pa.schema(list(GRASP_SCHEMA) + RESULT_FIELDS, metadata=GRASP_SCHEMA.metadata)


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------


def make_tasks(layout: Layout, table: pa.Table, config: FilterConfig, backend: str, tag: int = 0) -> list[Task]:
    """Split ``table`` (GRASP_SCHEMA) into per-object tasks of at most TASK_ROWS rows, in a fixed order."""
    arrays = pose_arrays(table)
    ids = np.asarray(table.column("object_id").to_pylist(), dtype=object)
    cfg = config.to_dict()
    tasks = []
    for oid in sorted(set(ids.tolist())):
        rows = np.where(ids == oid)[0]
        for s in range(0, len(rows), TASK_ROWS):
            r = rows[s : s + TASK_ROWS]
            tasks.append(Task(layout.root, oid, r, arrays["translation"][r], arrays["rotation"][r], arrays["joints"][r],
                              arrays["object_scale"][r], cfg, backend, tag))
    return tasks


def iter_results(tasks: list[Task], workers: int = 1) -> Iterator[TaskResult]:
    """Run tasks in-process (workers <= 1) or on a process pool; yields results as they finish."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            with compute_threads(1):  # as in a pool worker: one thread of torch and of BLAS (dga_engine/threads.py)
                result = run_task(task)
            yield result
        return
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe with torch/OpenMP threads already running
    with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx,
                             initializer=single_thread_worker_init, initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(run_task, t) for t in tasks]
        for fut in as_completed(futures):
            yield fut.result()


def unit_quaternions(q: np.ndarray) -> np.ndarray:
    """(n, 4) wxyz quaternions scaled to unit norm with ``w >= 0`` (the same rotation, the stored convention)."""
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = q / np.linalg.norm(q, axis=1, keepdims=True)
    return np.where(unit[:, :1] < 0, -unit, unit)


def apply_results(table: pa.Table, results: list[TaskResult], config: FilterConfig) -> pa.Table:
    """``table`` with its filter fields and reason/detail set from ``results`` (rows in input order)."""
    n = table.num_rows
    disp = np.full((n, 6), np.nan, dtype=np.float32)
    suc1 = np.full(n, -1, dtype=np.int8)
    suc6 = np.full(n, -1, dtype=np.int8)
    ho = np.full(n, np.nan, dtype=np.float32)
    oh = np.full(n, np.nan, dtype=np.float32)
    dga = np.full(n, np.nan, dtype=np.float32)
    oh_sum = np.full(n, np.nan, dtype=np.float32)
    cc = np.full(n, -1, dtype=np.int32)
    backend = np.full(n, None, dtype=object)
    reason = np.full(n, None, dtype=object)
    detail = np.full(n, None, dtype=object)
    done = np.zeros(n, dtype=bool)
    for r in results:
        disp[r.rows], suc1[r.rows], suc6[r.rows] = r.displacement, r.suc1, r.suc6
        ho[r.rows], oh[r.rows], cc[r.rows] = r.pen_hand_object_mm, r.pen_object_hand_mm, r.contact_count
        dga[r.rows], oh_sum[r.rows] = r.pen_dga_mm, r.pen_object_hand_sum_mm
        backend[r.rows[r.attempted]] = r.sim_backend
        reason[r.rows] = np.asarray(r.reason + [None], dtype=object)[:-1]
        detail[r.rows] = np.asarray(r.detail + [None], dtype=object)[:-1]
        done[r.rows] = True
    if not done.all():
        raise RuntimeError(f"{int((~done).sum())} rows have no filter result")
    sim = suc1 >= 0
    disp_arr = pa.array([row.tolist() if ok else None for row, ok in zip(disp, sim)], FILTER_TYPES["displacement"])
    cols = {
        "displacement": disp_arr,
        "suc1": pa.array(np.where(sim, suc1 == 1, False), pa.bool_(), mask=~sim),
        "suc6": pa.array(np.where(sim, suc6 == 1, False), pa.bool_(), mask=~sim),
        "pen_hand_object_mm": pa.array(ho, pa.float32(), mask=np.isnan(ho)),
        "pen_object_hand_mm": pa.array(oh, pa.float32(), mask=np.isnan(oh)),
        "pen_dga_mm": pa.array(dga, pa.float32(), mask=np.isnan(dga)),
        "pen_object_hand_sum_mm": pa.array(oh_sum, pa.float32(), mask=np.isnan(oh_sum)),
        "contact_count": pa.array(cc, pa.int32(), mask=cc < 0),
        "sim_backend": pa.array(backend.tolist(), pa.string()),
        "protocol_version": pa.array([config.protocol_version] * n, pa.string()),
    }
    # Valid poses leave in the documented convention (unit quaternion, w >= 0); invalid ones as given.
    quat = pose_arrays(table)["rotation"].astype(np.float64)
    valid = np.array([r != "invalid_pose" for r in reason.tolist()], dtype=bool)
    quat[valid] = unit_quaternions(quat[valid])
    cols["rotation"] = pa.FixedSizeListArray.from_arrays(pa.array(quat.astype(np.float32).reshape(-1), pa.float32()), 4)
    out = table.select(GRASP_SCHEMA.names)
    for name, arr in cols.items():
        out = out.set_column(out.schema.get_field_index(name), GRASP_SCHEMA.field(name), arr)
    out = out.append_column(RESULT_FIELDS[0], pa.array(reason.tolist(), pa.string()))
    out = out.append_column(RESULT_FIELDS[1], pa.array(detail.tolist(), pa.string()))
    return out.cast(FILTERED_SCHEMA)


FILTER_TYPES = {f.name: f.type for f in FILTER_FIELDS}


def conform_input(table: pa.Table) -> pa.Table:
    """The input as GRASP_SCHEMA (extra columns dropped), or a ValueError naming what is missing."""
    table = upgrade(table)  # v1 tables (no refine fields) read as v2
    missing = [n for n in GRASP_SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"the grasp table lacks columns {missing}; build it with dga_engine.dataset.schema.pose_table")
    t = table.select(GRASP_SCHEMA.names)
    try:
        return t.cast(GRASP_SCHEMA)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise ValueError(f"the grasp table does not match GRASP_SCHEMA: {exc}") from exc


def merge_stats(results: list[TaskResult]) -> dict[str, float]:
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.stats.items():
            total[k] = total.get(k, 0) + v
    return total


def filter_table_stats(
    layout: Layout, table: pa.Table, config: FilterConfig | None = None, workers: int = 1, backend: str = "mujoco",
    progress: Callable[[int], None] | None = None,
) -> tuple[pa.Table, dict[str, float]]:
    """:func:`filter_table` that also returns summed timings and counters of the work done."""
    config = config or FilterConfig()
    table = conform_input(table)
    check_backend(backend)
    tasks = make_tasks(layout, table, config, backend)
    results = []
    for r in iter_results(tasks, workers):
        results.append(r)
        if progress is not None:
            progress(len(r.rows))
    return apply_results(table, results, config), merge_stats(results)


def filter_table(
    layout: Layout, table: pa.Table, config: FilterConfig | None = None, workers: int = 1, backend: str = "mujoco",
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Filter grasps (GRASP_SCHEMA rows) and return them in input order with the filter fields set.

    The output has FILTERED_SCHEMA: GRASP_SCHEMA plus ``reason`` (null = accepted, else one of
    REJECT_REASONS) and ``detail``. Fields that were not computed for a row stay null (e.g. no
    displacement for a pose rejected before simulation). ``progress(n)`` is called as rows finish.
    Bad rows never stop the batch; the result is the same for any ``workers``.
    """
    return filter_table_stats(layout, table, config, workers, backend, progress)[0]
