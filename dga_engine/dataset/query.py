"""SQL over a dataset with DuckDB: read-only views over exactly the rows that are committed.

Views:

* ``grasps``  — accepted grasps: the compacted files (without rows of shards rewritten since the last
  compaction) and the parts of the shards committed since; files nothing names are not included;
* ``rejects`` — rejected grasps with ``reason`` and ``detail`` (built only when the SQL names it; a rejects
  file that cannot be read is left out and reported, so it never breaks a query on ``grasps``);
* ``shards``  — one row per shard and data file: shard, part, rows, bytes, objects, path, split.

The SQL is untrusted: only one ``SELECT`` (or ``EXPLAIN``) statement runs, and after the views are
defined the connection is locked down — DuckDB may then open exactly the dataset's files, nothing else
(no ``read_csv`` of other files, no ``COPY ... TO``, no ``ATTACH``, no extension loading), and the settings
cannot be changed back. Warnings (skipped files) are logged and returned in the result's schema metadata
under ``dga_warnings`` (a JSON list). Remote roots are read through DuckDB's fsspec bridge.
"""

from __future__ import annotations

import json
import logging
import re
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dga_engine import fs as fsio
from dga_engine.dataset.paths import REJECTS_FILE
from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA

if TYPE_CHECKING:
    from dga_engine.dataset.store import Dataset

log = logging.getLogger(__name__)

# DuckDB types of the columns a file of an older schema may lack (schema.ADDED_IN_V2: strings and float32s).
_DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.float32(): "FLOAT"}
_ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
_MENTIONS_REJECTS = re.compile(r"\brejects\b", re.IGNORECASE)


class QueryRefused(ValueError):
    """The SQL is not one read-only SELECT statement."""


def _quote(p: str) -> str:
    return "'" + p.replace("'", "''") + "'"


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join(_quote(p) for p in paths) + "]"


def _check_sql(sql: str) -> None:
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryRefused(f"query failed: {exc}") from exc
    if len(statements) != 1:
        raise QueryRefused(f"shards query runs exactly one SELECT statement; got {len(statements)} statements")
    kind = str(statements[0].type).rsplit(".", 1)[-1]
    if kind not in _ALLOWED_STATEMENTS:
        raise QueryRefused(f"shards query runs read-only SELECT statements only, not {kind}: the dataset is changed "
                           "through dga-engine's writers, and results are exported with --json")


def _project(con: Any, source: str, schema: pa.Schema) -> str:
    """SELECT list giving ``schema``'s columns from ``source``; columns files of schema v1 lack become typed NULLs."""
    have = {row[0] for row in con.execute(f"DESCRIBE {source}").fetchall()}
    return ", ".join(f'"{f.name}"' if f.name in have else f'CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS "{f.name}"'
                     for f in schema)


def _readable(ds: Dataset, path: str) -> str | None:
    """None if ``path`` has a readable Parquet footer, else why not."""
    try:
        if ds.layout.is_local:
            pq.read_metadata(fsio.strip_file_scheme(path))
        else:
            fs, p = fsio.filesystem(path)
            with fs.open(p, "rb") as fh:
                pq.read_metadata(fh)
    except (OSError, pa.ArrowException) as exc:
        return str(exc)
    return None


def connect(ds: Dataset, sql: str = "SELECT 1 FROM grasps, rejects, shards"):
    """A locked-down DuckDB connection with the views ``sql`` needs, the warnings met building them, and the
    data files the views read."""
    import duckdb

    warnings: list[str] = []
    con = duckdb.connect()
    if not ds.layout.is_local:
        fs, _ = fsio.filesystem(ds.path)
        con.register_filesystem(fs)
    norm = fsio.strip_file_scheme if ds.layout.is_local else (lambda p: p)
    state = ds._state()
    allowed: list[str] = []

    # grasps: clean files whole; a file with rows of rewritten shards minus those rows.
    dead_ranges: dict[str, list[tuple[int, int]]] = {}
    index, snap = state.index, state.snapshot
    if index is not None and snap is not None and state.dead:
        for k in state.dead:
            for i in index.by_key.get(k, []):
                start = int(index.row_start[i])
                dead_ranges.setdefault(snap.files[int(index.file[i])].path, []).append(
                    (start, start + int(index.rows[i]))
                )
    runs = ds._runs(state)
    rels = list(dict.fromkeys(r.path for r in runs))
    clean = [norm(ds.p(r)) for r in rels if r not in dead_ranges]
    selects = []
    if clean:
        selects.append(f"SELECT * FROM read_parquet({_sql_list(clean)}, union_by_name=true)")
    for rel, ranges in dead_ranges.items():
        if rel not in rels:
            continue  # every row of the file is dead
        cond = " OR ".join(f"(file_row_number >= {a} AND file_row_number < {b})" for a, b in sorted(ranges))
        selects.append(f"SELECT * EXCLUDE (file_row_number) FROM read_parquet({_quote(norm(ds.p(rel)))}, "
                       f"file_row_number=true) WHERE NOT ({cond})")
    allowed += [norm(ds.p(r)) for r in rels]
    views = [("grasps", selects, GRASP_SCHEMA)]

    if _MENTIONS_REJECTS.search(sql):
        paths = [norm(ds.p(REJECTS_FILE.format(key=k))) for k in ds.reject_keys()]
        try:
            con.execute(
                f"SELECT * FROM read_parquet({_sql_list(paths)}, union_by_name=true) LIMIT 0"
            ) if paths else None
        except duckdb.Error:
            good = []
            for p in paths:
                why = _readable(ds, p)
                if why is None:
                    good.append(p)
                else:
                    warnings.append(f"skipped unreadable rejects file {p} ({why}); `dga-engine shards verify` "
                                    "reports it, `dga-engine shards repair` reruns the unit that wrote it")
            paths = good
        allowed += paths
        views.append(
            (
                "rejects",
                [f"SELECT * FROM read_parquet({_sql_list(paths)}, union_by_name=true)"] if paths else [],
                REJECT_SCHEMA,
            )
        )

    for view, sources, schema in views:
        if sources:
            con.execute(f"CREATE VIEW _{view}_files AS " + " UNION ALL BY NAME ".join(sources))
            con.execute(f"CREATE VIEW {view} AS SELECT {_project(con, f'_{view}_files', schema)} FROM _{view}_files")
        else:  # an empty view with the right columns, so queries still bind
            con.register(f"_{view}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")

    parts = [(m, p) for m in ds.shards() for p in m.parts]
    con.register("_shards_table", pa.table({
        "shard": [m.key for m, _ in parts],
        "part": [p.name for _, p in parts],
        "rows": pa.array([p.rows for _, p in parts], pa.int64()),
        "bytes": pa.array([p.bytes for _, p in parts], pa.int64()),
        "objects": pa.array([len(p.objects) for _, p in parts], pa.int64()),
        "path": [p.path for _, p in parts],
        "split": pa.array([m.split for m, _ in parts], pa.string()),
    }))
    con.execute("CREATE VIEW shards AS SELECT * FROM _shards_table")

    # From here on DuckDB may open the dataset's files and nothing else, and nobody can undo that.
    if not ds.layout.is_local:  # DuckDB's fsspec bridge names a URL both as proto://rest and proto:///rest
        allowed += [p.replace("://", ":///", 1) for p in allowed if "://" in p and ":///" not in p]
    con.execute(f"SET allowed_paths = {_sql_list(sorted(set(allowed)))}")
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")
    return con, warnings, [ds.p(r) for r in rels]


def run_query(ds: Dataset, sql: str) -> pa.Table:
    """Run one read-only ``sql`` SELECT against :func:`connect`; the result as an Arrow table.

    A file deleted by a concurrent rewrite or compaction raises FileNotFoundError (the store retries).
    """
    import duckdb

    _check_sql(sql)
    con, warnings, files = connect(ds, sql)
    try:
        try:
            rel = con.sql(sql)
            table = rel.to_arrow_table() if rel is not None else pa.table({})
        except duckdb.Error as exc:
            gone = [p for p in files if not fsio.exists(p)]
            if gone:  # a concurrent rewrite or compaction retired a file after the views were built
                raise FileNotFoundError(f"{gone[0]} was removed while the query ran ({exc})") from exc
            raise
    finally:
        con.close()
    for w in warnings:
        log.warning("%s", w)
    if warnings:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), b"dga_warnings": json.dumps(warnings).encode()}
        )
    return table


def query_warnings(table: pa.Table) -> list[str]:
    """The warnings :func:`run_query` attached to its result (skipped files)."""
    raw = (table.schema.metadata or {}).get(b"dga_warnings")
    return json.loads(raw) if raw else []
