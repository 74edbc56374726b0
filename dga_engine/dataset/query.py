"""SQL over a dataset with DuckDB: views over exactly the files the manifests name.

Views:

* ``grasps``  — accepted grasps of every committed shard (files no manifest names are not included);
* ``rejects`` — rejected grasps with ``reason`` and ``detail``;
* ``shards``  — one row per Parquet part: shard, part, rows, bytes, objects, path, split.

Remote roots (``s3://`` and other fsspec URLs) are read through DuckDB's fsspec bridge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from dga_engine import fs as fsio
from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA

if TYPE_CHECKING:
    from dga_engine.dataset.store import Dataset


# DuckDB types of the columns a file of an older schema may lack (schema.ADDED_IN_V2: strings and float32s).
_DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.float32(): "FLOAT"}


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def connect(ds: "Dataset"):
    """A DuckDB connection with the ``grasps``, ``rejects`` and ``shards`` views of ``ds``."""
    import duckdb

    from dga_engine.dataset.store import REJECTS_FILE

    con = duckdb.connect()
    if not ds.layout.is_local:
        fs, _ = fsio.filesystem(ds.path)
        con.register_filesystem(fs)
    norm = _local if ds.layout.is_local else (lambda p: p)
    manifests = ds.shards()
    files = [norm(ds.p(p.path)) for m in manifests for p in m.parts]
    rejects = [norm(ds.p(REJECTS_FILE.format(key=k))) for k in ds.reject_keys()]
    for view, paths, schema in (("grasps", files, GRASP_SCHEMA), ("rejects", rejects, REJECT_SCHEMA)):
        if paths:
            # Files of schema v1 lack the refine columns: the view selects them as typed NULLs there.
            con.execute(f"CREATE VIEW _{view}_files AS SELECT * FROM read_parquet({_sql_list(paths)}, union_by_name=true)")
            have = {row[0] for row in con.execute(f"DESCRIBE _{view}_files").fetchall()}
            cols = [f'"{f.name}"' if f.name in have else f'CAST(NULL AS {_DUCKDB_TYPES[f.type]}) AS "{f.name}"'
                    for f in schema]
            con.execute(f"CREATE VIEW {view} AS SELECT {', '.join(cols)} FROM _{view}_files")
        else:  # an empty view with the right columns, so queries still bind
            con.register(f"_{view}_empty", schema.empty_table())
            con.execute(f"CREATE VIEW {view} AS SELECT * FROM _{view}_empty")
    parts = pa.table({
        "shard": [m.key for m in manifests for _ in m.parts],
        "part": [p.name for m in manifests for p in m.parts],
        "rows": pa.array([p.rows for m in manifests for p in m.parts], pa.int64()),
        "bytes": pa.array([p.bytes for m in manifests for p in m.parts], pa.int64()),
        "objects": pa.array([len(p.objects) for m in manifests for p in m.parts], pa.int64()),
        "path": [p.path for m in manifests for p in m.parts],
        "split": pa.array([m.split for m in manifests for _ in m.parts], pa.string()),
    })
    con.register("_shards_table", parts)
    con.execute("CREATE VIEW shards AS SELECT * FROM _shards_table")
    return con


def run_query(ds: "Dataset", sql: str) -> pa.Table:
    """Run ``sql`` against :func:`connect` and return the result as an Arrow table."""
    con = connect(ds)
    try:
        rel = con.sql(sql)
        return rel.to_arrow_table() if rel is not None else pa.table({})  # statements without a result
    finally:
        con.close()
