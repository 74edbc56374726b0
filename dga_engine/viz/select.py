"""Pick grasps to look at: accepted grasps, rejects or candidates of a dataset, each row with its verdict.

Every table returned here has the grasp schema's columns plus ``verdict``: ``accepted``, the reject
reason (one of :data:`~dga_engine.dataset.schema.REJECT_REASONS`), or ``candidate`` (not filtered yet).
Only the public :class:`~dga_engine.dataset.store.Dataset` API is used.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc

from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_REASONS
from dga_engine.dataset.store import Dataset

KINDS = ("accepted", "rejects", "candidates")
VERDICT = "verdict"


def _with_verdict(table: pa.Table, verdict: pa.Array | str) -> pa.Table:
    cols = [c for c in GRASP_SCHEMA.names if c in table.column_names]
    out = table.select(cols)
    if isinstance(verdict, str):
        verdict = pa.array([verdict] * table.num_rows, pa.string())
    return out.append_column(VERDICT, verdict)


def _match(table: pa.Table, column: str, values: Iterable | None) -> pa.Table:
    if values is None or table.num_rows == 0:
        return table
    vals = list(values)
    return table.filter(pc.is_in(table.column(column), pa.array(vals, table.schema.field(column).type)))


def load_grasps(ds: Dataset, kind: str = "accepted", *, object_id: str | None = None, source: str | None = None,
                round_: int | None = None, reason: str | None = None, grasp_ids: Iterable[str] | None = None,
                limit: int | None = None) -> pa.Table:
    """Grasps of ``kind`` (accepted | rejects | candidates), narrowed by object, source, round, reason, ids.

    ``reason`` applies to rejects only. ``limit`` keeps the first rows in the dataset's order.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if reason is not None and reason not in REJECT_REASONS:
        raise ValueError(f"unknown reject reason {reason!r}; the filter's reasons are {', '.join(REJECT_REASONS)}")
    if kind == "accepted":
        table = ds.read(object_ids=object_id, rounds=round_, sources=source)
        table = _with_verdict(table, "accepted")
    elif kind == "rejects":
        table = ds.rejects()
        table = _with_verdict(
            table, table.column("reason").combine_chunks() if table.num_rows else pa.array([], pa.string())
        )
        table = _match(table, VERDICT, None if reason is None else [reason])
    else:
        sources = [source] if source is not None else ds.candidate_sources()
        parts = [ds.candidates(s) for s in sources]
        table = pa.concat_tables(parts) if parts else GRASP_SCHEMA.empty_table()
        table = _with_verdict(table, "candidate")
    if kind != "accepted":
        table = _match(table, "object_id", None if object_id is None else [object_id])
        table = _match(table, "source", None if source is None else [source])
        table = _match(table, "round", None if round_ is None else [int(round_)])
    table = _match(table, "grasp_id", grasp_ids)
    if limit is not None:
        table = table.slice(0, max(0, int(limit)))
    return table


def raw_of(ds: Dataset, refined: pa.Table) -> pa.Table:
    """The raw candidates the refined rows came from (``refined_from``), looked up among the dataset's candidates.

    Returns the candidates whose ``grasp_id`` some row's ``refined_from`` names (any source), with verdict
    ``candidate``; rows without ``refined_from`` have no raw counterpart.
    """
    wanted = {g for g in refined.column("refined_from").to_pylist() if g}
    if not wanted:
        return _with_verdict(GRASP_SCHEMA.empty_table(), "candidate")
    found = []
    for source in ds.candidate_sources():
        t = ds.candidates(source)
        t = _match(t, "grasp_id", wanted)
        if t.num_rows:
            found.append(t)
    table = pa.concat_tables(found) if found else GRASP_SCHEMA.empty_table()
    return _with_verdict(table, "candidate")
