"""The ``filter`` stage: candidate grasps in, accepted shards and rejects out, resumable.

Input: the candidates of one source (``Dataset(layout, dataset).candidates(source)``, one file per
candidate key), or a Parquet file / folder of GRASP_SCHEMA rows (``path``; each file is a key named
after its path inside the folder).

Work is done in **units**: one (candidate key, object) pair. For each unit the stage writes

- the accepted grasps as shard ``filter.<source>.<key>.<object>`` (``Dataset.write_shard``), and
- the rejected ones as ``rejects/filter.<source>.<key>.<object>.parquet`` (``Dataset.write_rejects``),

both idempotent per key, and only then marks the unit done (``runs.mark_done``, stage ``filter``, unit
= the key plus the protocol hash). A rerun skips finished units; an interrupted run redoes only the
units without a record, rewriting their outputs under the same keys - no duplicates. A changed
``FilterConfig`` is a different protocol version, so every unit is filtered again (and its outputs
replaced).
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dga_engine import fs, runs
from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.simulate.config import FilterConfig
from dga_engine.simulate.engine import apply_results, conform_input, iter_results, make_tasks, merge_stats
from dga_engine.simulate.metrics import summarise

STAGE = "filter"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+\-]")


@dataclass
class FilterSummary:
    """What one ``run_filter`` call did.

    total/accepted/rejected: grasps filtered by this call (skipped units not included).
    reasons: reject reason -> count. metrics: :func:`~dga_engine.simulate.metrics.summarise` of the
    grasps filtered by this call. units_done/units_skipped: units filtered now / already done before.
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
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _key_part(name: str) -> str:
    """A name made safe for a key; long or changed names get a short hash so they stay unique."""
    clean = _UNSAFE.sub("_", name).strip("._-") or "x"
    if clean != name or len(clean) > 60:
        clean = f"{clean[:40]}+{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return clean


def unit_key(source: str, key: str, object_id: str) -> str:
    """The output key of a unit: ``filter.<source>.<key>.<object>`` (hashed when too long)."""
    k = f"filter.{_key_part(source)}.{_key_part(key)}.{_key_part(object_id)}"
    if len(k) > 180:
        k = f"filter.{_key_part(source)[:40]}.{hashlib.sha256(k.encode()).hexdigest()[:32]}"
    return k


def _read_path(path: str) -> list[tuple[str, pa.Table]]:
    """(key, table) per Parquet file of ``path`` (a file, or a folder searched recursively)."""
    import pyarrow.parquet as pq

    if not fs.exists(path):
        raise FileNotFoundError(f"{path} does not exist; pass a Parquet file or a folder of them in GRASP_SCHEMA")
    filesystem, p = fs.filesystem(path)
    if filesystem.isdir(p):
        files = sorted(f for f in filesystem.find(p) if f.endswith(".parquet") and not f.rsplit("/", 1)[-1].startswith("."))
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
) -> FilterSummary:
    """Filter the candidates of ``source`` (or the Parquet rows at ``path``) into dataset ``dataset``.

    ``progress(done_rows, total_rows)`` is called as grasps finish (total counts only units not done).
    Returns a :class:`FilterSummary`; the written shards/rejects are the durable result.
    """
    from dga_engine.dataset.store import Dataset
    from dga_engine.simulate.backends import check_backend

    config = config or FilterConfig()
    check_backend(backend)
    ds = Dataset(layout, dataset)
    proto = config.protocol_version
    proto_tag = proto.split("+")[-1]
    started = time.perf_counter()
    summary = FilterSummary(source=source, backend=backend, protocol_version=proto)

    if path is not None:
        inputs = _read_path(path)
    else:
        keys = ds.candidate_keys(source)
        if not keys:
            raise FileNotFoundError(
                f"no candidates for source {source!r} in dataset {dataset!r} "
                f"({layout.dataset(dataset)}/candidates/{source}/); run curate/synthesize/generate first, or pass --path"
            )
        inputs = [(k, ds.candidates(source, keys=[k])) for k in keys]

    # Units still to do, with their rows.
    pending: list[tuple[str, str, str, pa.Table]] = []  # (unit output key, unit record name, object, rows)
    for key, table in inputs:
        if table.num_rows == 0:
            continue
        ids = np.asarray(table.column("object_id").to_pylist(), dtype=object)
        for oid in sorted(set(ids.tolist())):
            out_key = unit_key(source, key, oid)
            unit = f"{out_key}.{proto_tag}"
            if runs.is_done(layout, STAGE, unit):
                summary.units_skipped += 1
                continue
            pending.append((out_key, unit, oid, table.take(np.where(ids == oid)[0])))

    total_rows = sum(t.num_rows for *_, t in pending)
    done_rows = 0
    if progress is not None:
        progress(0, total_rows)

    # One task list over all pending units keeps the pool busy across units; a unit is written as soon
    # as all of its tasks are back (tasks carry their unit index as their tag).
    tasks = [t for u, (*_, table) in enumerate(pending) for t in make_tasks(layout, table, config, backend, tag=u)]
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
            out_key, unit, oid, table = pending[u]
            filtered = apply_results(conform_input(table), collected.pop(u), config)
            accepted, rejected = _split(filtered)
            ds.write_shard(accepted, out_key)
            ds.write_rejects(rejected, out_key)
            reasons = _reason_counts(filtered)
            runs.mark_done(layout, STAGE, unit, {"grasps": filtered.num_rows, "accepted": accepted.num_rows,
                                                 "rejected": rejected.num_rows, "reasons": reasons},
                           source=source, object_id=oid, key=out_key, protocol_version=proto, backend=backend)
            summary.units_done += 1
            all_tables.append(filtered)

    if all_tables:
        everything = pa.concat_tables(all_tables)
        summary.total = everything.num_rows
        summary.reasons = _reason_counts(everything)
        summary.rejected = sum(summary.reasons.values())
        summary.accepted = summary.total - summary.rejected
        summary.metrics = summarise(everything)
    summary.timings = merge_stats(all_results)
    summary.seconds = time.perf_counter() - started
    return summary


def _reason_counts(table: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in table.column("reason").to_pylist():
        if r is not None:
            counts[r] = counts.get(r, 0) + 1
    return dict(sorted(counts.items()))
