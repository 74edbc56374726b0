"""The ``filter`` stage: candidate grasps in, accepted shards and rejects out, resumable.

Input: the candidates of one source (``Dataset(layout, dataset).candidates(source)``, one file per
candidate key), or with ``refined=True`` the same keys as the refine stage wrote them
(``candidates/<source>+refined/``), or a Parquet file / folder of GRASP_SCHEMA rows (``path``; each file
is a key named after its path inside the folder).

Work is done in **units**: one (candidate key, object) pair. For each unit the stage writes

- the accepted grasps as shard ``filter.<source>.<key>.<object>`` (``Dataset.write_shard``), and
- the rejected ones as ``rejects/filter.<source>.<key>.<object>.parquet`` (``Dataset.write_rejects``),

both idempotent per key, and only then its completion record (stage ``filter``, unit = that key), which
carries the protocol version and the fingerprint of the unit's input rows
(:func:`dga_engine.units.table_fingerprint`). A unit is skipped only when its record matches both; any
other run (a changed ``FilterConfig``, refined instead of raw poses, new candidates) filters it again
and replaces its outputs under the same key. The record is removed before the outputs are rewritten, so
a crash in between leaves the unit undone, never a record that vouches for other verdicts. Raw and
refined poses of one grasp therefore never both sit in the dataset.

A candidates file that cannot be read is skipped and listed in the summary (``skipped_files``); the
rest of the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dga_engine import fs, runs
from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.engine import apply_results, conform_input, iter_results, make_tasks, merge_stats
from dga_engine.simulate.metrics import summarise
from dga_engine.units import join_key, table_fingerprint

STAGE = "filter"


@dataclass
class FilterSummary:
    """What one ``run_filter`` call did.

    total/accepted/rejected: grasps filtered by this call (skipped units not included).
    reasons: reject reason -> count. metrics: :func:`~dga_engine.simulate.metrics.summarise` of the
    grasps filtered by this call. units_done/units_skipped: units filtered now / already done before
    (same protocol, same input).
    seconds: wall time; timings: summed worker seconds per phase (validate, load, penetration,
    scene, closing, push) and counters (steps, simulated).
    """

    source: str
    backend: str
    protocol_version: str
    total: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    units_done: int = 0
    units_skipped: int = 0
    refined: bool = False  # the input was the refine stage's output
    skipped_files: list[dict[str, str]] = field(default_factory=list)  # candidate files that could not be read
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unit_key(source: str, key: str, object_id: str) -> str:
    """The output key (and completion unit) of a unit: ``filter.<source>.<key>.<object>`` (hashed when too long)."""
    return join_key("filter", source, key, object_id)


def _read_path(path: str) -> list[tuple[str, pa.Table]]:
    """(key, table) per Parquet file of ``path`` (a file, or a folder searched recursively)."""
    import pyarrow.parquet as pq

    if not fs.exists(path):
        raise FileNotFoundError(f"{path} does not exist; pass a Parquet file or a folder of them in GRASP_SCHEMA")
    filesystem, p = fs.filesystem(path)
    if filesystem.isdir(p):
        files = sorted(
            f for f in filesystem.find(p) if f.endswith(".parquet") and not f.rsplit("/", 1)[-1].startswith(".")
        )
        if not files:
            raise FileNotFoundError(f"no .parquet files under {path}")
        base = p.rstrip("/") + "/"
        items = [(f[len(base):] if f.startswith(base) else f.rsplit("/", 1)[-1], f) for f in files]
    else:
        items = [(p.rsplit("/", 1)[-1], p)]
    out = []
    for rel, f in items:
        with filesystem.open(f, "rb") as fh:
            table = pq.read_table(fh)
        try:
            table = conform_input(table)
        except ValueError as exc:
            raise ValueError(f"{f}: {exc}") from exc
        out.append((rel[: -len(".parquet")] if rel.endswith(".parquet") else rel, table))
    return out


def _split(table: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(accepted as GRASP_SCHEMA, rejected as REJECT_SCHEMA) from a FILTERED_SCHEMA table."""
    accepted_mask = pc.is_null(table.column("reason"))
    accepted = table.filter(accepted_mask).select(GRASP_SCHEMA.names).cast(GRASP_SCHEMA)
    rejected = table.filter(pc.invert(accepted_mask)).select(REJECT_SCHEMA.names).cast(REJECT_SCHEMA)
    return accepted, rejected


def run_filter(
    layout: Layout,
    source: str,
    path: str | None = None,
    backend: str = "mujoco",
    workers: int = 1,
    dataset: str = DEFAULT_DATASET,
    config: FilterConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
    refined: bool = False,
) -> FilterSummary:
    """Filter the candidates of ``source`` (or the Parquet rows at ``path``) into dataset ``dataset``.

    refined: judge the refine stage's output for every candidate key (``dga-engine refine`` first;
    keys it has not refined from their current candidates are an error naming the command).
    ``progress(done_rows, total_rows)`` is called as grasps finish (total counts only units not done).
    Returns a :class:`FilterSummary`; the written shards/rejects are the durable result.
    """
    from dga_engine.dataset.store import Dataset
    from dga_engine.simulate.backends import check_backend

    config = config or FilterConfig()
    check_backend(backend)
    ds = Dataset(layout, dataset)
    proto = config.protocol_version
    stage = runs.dataset_stage(STAGE, dataset)
    started = time.perf_counter()
    summary = FilterSummary(source=source, backend=backend, protocol_version=proto, refined=refined)

    if path is not None:
        if refined:
            raise ValueError("refined=True reads the refine stage's output; it cannot be combined with path")
        inputs = _read_path(path)
    else:
        inputs = _candidate_inputs(layout, ds, source, dataset, refined, summary)

    pending = _pending_units(layout, stage, source, inputs, proto, summary)
    total_rows = sum(unit.rows.num_rows for unit in pending)
    done_rows = 0
    if progress is not None:
        progress(0, total_rows)

    # One task list over all pending units keeps the pool busy across units; a unit is written as soon
    # as all of its tasks are back (tasks carry their unit index as their tag).
    tasks = [t for u, unit in enumerate(pending) for t in make_tasks(layout, unit.rows, config, backend, tag=u)]
    remaining = np.bincount([t.tag for t in tasks], minlength=len(pending))
    collected: dict[int, list] = {u: [] for u in range(len(pending))}
    all_tables: list[pa.Table] = []
    all_results = []
    for res in iter_results(tasks, workers):
        u = res.tag
        collected[u].append(res)
        all_results.append(res)
        remaining[u] -= 1
        done_rows += len(res.rows)
        if progress is not None:
            progress(done_rows, total_rows)
        if remaining[u] == 0:
            filtered = apply_results(conform_input(pending[u].rows), collected.pop(u), config)
            _write_unit(layout, ds, stage, pending[u], filtered, summary)
            summary.units_done += 1
            all_tables.append(filtered)

    _add_totals(summary, all_tables)
    summary.timings = merge_stats(all_results)
    summary.seconds = time.perf_counter() - started
    return summary


class _Unit(NamedTuple):
    """One (candidate key, object) still to filter."""

    key: str  # output key = completion record name
    fingerprint: str  # of its input rows
    object_id: str
    rows: pa.Table


def _pending_units(layout: Layout, stage: str, source: str, inputs: list[tuple[str, pa.Table]], proto: str,
                   summary: FilterSummary) -> list[_Unit]:
    """The units of ``inputs`` without a current completion record (the others count as skipped)."""
    pending: list[_Unit] = []
    for key, table in inputs:
        if table.num_rows == 0:
            continue
        ids = np.asarray(table.column("object_id").to_pylist(), dtype=object)
        for oid in sorted(set(ids.tolist())):
            out_key = unit_key(source, key, oid)
            rows = table.take(np.where(ids == oid)[0])
            fingerprint = table_fingerprint(rows)
            if runs.is_current(layout, stage, out_key, protocol_version=proto, input=fingerprint):
                summary.units_skipped += 1
                continue
            pending.append(_Unit(out_key, fingerprint, oid, rows))
    return pending


def _write_unit(layout: Layout, ds, stage: str, unit: _Unit, filtered: pa.Table, summary: FilterSummary) -> None:
    """The unit's shard and rejects, then (only then) its completion record."""
    accepted, rejected = _split(filtered)
    runs.clear(layout, stage, unit.key)  # from here until the new record, the unit is not done
    ds.write_shard(accepted, unit.key)
    ds.write_rejects(rejected, unit.key)
    reasons = _reason_counts(filtered)
    runs.mark_done(layout, stage, unit.key, {"grasps": filtered.num_rows, "accepted": accepted.num_rows,
                                             "rejected": rejected.num_rows, "reasons": reasons},
                   source=summary.source, object_id=unit.object_id, key=unit.key,
                   protocol_version=summary.protocol_version, backend=summary.backend, input=unit.fingerprint,
                   refined=summary.refined)  # fmt: skip


def _add_totals(summary: FilterSummary, tables: list[pa.Table]) -> None:
    """Counts, reasons and metrics over every grasp filtered by this call."""
    if not tables:
        return
    everything = pa.concat_tables(tables)
    summary.total = everything.num_rows
    summary.reasons = _reason_counts(everything)
    summary.rejected = sum(summary.reasons.values())
    summary.accepted = summary.total - summary.rejected
    summary.metrics = summarise(everything)


def _candidate_inputs(layout: Layout, ds, source: str, dataset: str, refined: bool,
                      summary: FilterSummary) -> list[tuple[str, pa.Table]]:
    """(key, rows) per candidate key of ``source`` - raw, or the refine stage's output of each key."""
    from dga_engine.refine.stage import STAGE as REFINE_STAGE
    from dga_engine.refine.stage import refined_source, unit_name

    keys = ds.candidate_keys(source)
    if not keys:
        raise FileNotFoundError(
            f"no candidates for source {source!r} in dataset {dataset!r} "
            f"({layout.dataset(dataset)}/candidates/{source}/); run curate/synthesize/generate first, or pass --path"
        )
    inputs, stale = [], []
    for key in keys:
        try:
            table = ds.candidates(source, keys=[key])
            if refined:
                refine_stage = runs.dataset_stage(REFINE_STAGE, dataset)
                record = runs.read_record(layout, refine_stage, unit_name(source, key)) or {}
                if record.get("input") != table_fingerprint(table):
                    stale.append(key)
                    continue
                table = ds.candidates(refined_source(source), keys=[key])
        except Exception as exc:  # noqa: BLE001 - one damaged file must not end the run
            summary.skipped_files.append({"key": key, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        inputs.append((key, table))
    if stale:
        raise FileNotFoundError(
            f"{len(stale)} candidate file(s) of {source!r} are not refined from their current candidates "
            f"(e.g. {stale[0]!r}): run `dga-engine refine --source {source}` first, or filter the raw poses with "
            f"--no-refine"
        )
    return inputs


def _reason_counts(table: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in table.column("reason").to_pylist():
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    return dict(sorted(counts.items()))
