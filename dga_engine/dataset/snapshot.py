"""The compacted half of a dataset: large Parquet files, the object index that locates rows in them, and
the small JSON document that names both.

``meta/snapshot.json`` (:class:`Snapshot`) lists the compacted data files (path, rows, bytes, sha256, footer
sha256, statistics) and names the object index ``meta/index.<snapshot id>.parquet``: one row per (object,
shard key) run of rows with the file, row group, first row and row count, plus the key's write id, split,
commit time and round/source counts. Files are sorted by object and hold one row group per object, so a
one-object lookup reads the index's matching entries and then exactly those row groups.

A compaction writes new files and a new index under fresh names, then replaces ``meta/snapshot.json``: that
rename is its commit. Readers and verify treat everything the snapshot does not name as nonexistent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dga_engine.dataset.manifest import check_data_path, check_version

SNAPSHOT_VERSION = 1

# One row per (object, key) run of rows in a compacted file; sorted by (object_id, key).
INDEX_SCHEMA = pa.schema([
    pa.field("object_id", pa.string(), nullable=False),
    pa.field("key", pa.string(), nullable=False),  # the shard (write key) the rows were committed under
    pa.field("write_id", pa.string(), nullable=False),  # that commit's write id (a newer manifest supersedes it)
    pa.field("file", pa.int32(), nullable=False),  # position in Snapshot.files
    pa.field("row_group", pa.int32(), nullable=False),  # the object's row group in that file
    pa.field("group_offset", pa.int64(), nullable=False),  # first row of the run inside the row group
    pa.field("row_start", pa.int64(), nullable=False),  # first row of the run in the file
    pa.field("rows", pa.int64(), nullable=False),
    pa.field("rounds", pa.string(), nullable=False),  # JSON {round: rows} of the run
    pa.field("sources", pa.string(), nullable=False),  # JSON {source: rows} of the run
    pa.field("split", pa.string()),
    pa.field("created_at", pa.string(), nullable=False),  # when the key was committed
], metadata={b"dga_index_version": b"1"})


@dataclass(frozen=True)
class SnapshotFile:
    """One compacted Parquet file."""

    path: str  # data/c-<snapshot>-<n>.parquet, relative to the dataset folder
    rows: int
    bytes: int
    sha256: str
    footer_sha256: str
    row_groups: int  # = objects in the file (one row group per object)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # column_stats over the file's rows

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str) -> SnapshotFile:
        return cls(path=check_data_path(d["path"], where), rows=int(d["rows"]), bytes=int(d["bytes"]),
                   sha256=str(d["sha256"]), footer_sha256=str(d.get("footer_sha256", "")),
                   row_groups=int(d["row_groups"]), stats=dict(d.get("stats", {})))


@dataclass(frozen=True)
class Snapshot:
    """``meta/snapshot.json``: the compacted files and their object index."""

    id: str
    created_at: str
    index: str  # meta/index.<id>.parquet
    index_sha256: str
    index_rows: int
    files: tuple[SnapshotFile, ...]
    keys: int  # distinct shard keys in the index
    objects: int  # distinct objects in the index
    rows: int
    engine_version: str = ""
    snapshot_version: int = SNAPSHOT_VERSION

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["files"] = [asdict(f) for f in self.files]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "meta/snapshot.json") -> Snapshot:
        check_version("snapshot version", d.get("snapshot_version"), (SNAPSHOT_VERSION,), where)
        sid = str(d["id"])
        index = str(d["index"])
        if index != index_path(sid):
            raise ValueError(f"{where} names index {index!r}, expected {index_path(sid)!r}")
        files = tuple(SnapshotFile.from_json(f, where) for f in d["files"])
        if len({f.path for f in files}) != len(files):
            raise ValueError(f"{where} names a file twice")
        return cls(id=sid, created_at=str(d.get("created_at", "")), index=index, index_sha256=str(d["index_sha256"]),
                   index_rows=int(d["index_rows"]), files=files, keys=int(d["keys"]), objects=int(d["objects"]),
                   rows=int(d["rows"]), engine_version=str(d.get("engine_version", "")))


def index_path(snapshot_id: str) -> str:
    from dga_engine.layout import safe_name

    return f"meta/index.{safe_name(snapshot_id)}.parquet"


class Index:
    """The object index in memory: numpy columns, sorted by (object_id, key), for fast lookups by object and key."""

    def __init__(self, table: pa.Table, n_files: int, where: str) -> None:
        if not table.schema.equals(INDEX_SCHEMA, check_metadata=False):
            raise ValueError(f"{where}: the object index does not have the index schema")
        self.table = table
        self.object_id = np.asarray(table.column("object_id").to_numpy(zero_copy_only=False), dtype=object)
        self.key = np.asarray(table.column("key").to_numpy(zero_copy_only=False), dtype=object)
        self.file = table.column("file").to_numpy()
        self.row_group = table.column("row_group").to_numpy()
        self.group_offset = table.column("group_offset").to_numpy()
        self.row_start = table.column("row_start").to_numpy()
        self.rows = table.column("rows").to_numpy()
        n = table.num_rows
        if n and (
            self.file.min() < 0
            or self.file.max() >= n_files
            or self.rows.min() < 0
            or self.group_offset.min() < 0
            or self.row_group.min() < 0
        ):
            raise ValueError(f"{where}: the object index points at files, row groups or rows that do not exist")
        if n > 1 and not bool(np.all(self.object_id[1:] >= self.object_id[:-1])):
            raise ValueError(f"{where}: the object index is not sorted by object id")
        self._write_ids: dict[str, str] | None = None
        self._by_key: dict[str, np.ndarray] | None = None
        self._json: dict[str, list[Any]] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def entries_of_object(self, object_id: str) -> np.ndarray:
        lo = int(np.searchsorted(self.object_id, object_id, side="left"))
        hi = int(np.searchsorted(self.object_id, object_id, side="right"))
        return np.arange(lo, hi)

    @property
    def write_ids(self) -> dict[str, str]:
        """key -> write id of every key in the index."""
        if self._write_ids is None:
            wid = self.table.column("write_id").to_numpy(zero_copy_only=False)
            self._write_ids = dict(zip(self.key.tolist(), wid.tolist()))
        return self._write_ids

    @property
    def by_key(self) -> dict[str, np.ndarray]:
        """key -> entry positions, in index order."""
        if self._by_key is None:
            order = np.argsort(self.key, kind="stable")
            keys = self.key[order]
            cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1 if len(keys) > 1 else np.array([], dtype=int)
            starts = np.concatenate([[0], cuts]).astype(int) if len(keys) else np.array([], dtype=int)
            stops = np.concatenate([cuts, [len(keys)]]).astype(int) if len(keys) else np.array([], dtype=int)
            self._by_key = {keys[s]: order[s:e] for s, e in zip(starts, stops)}
        return self._by_key

    def counts(self, column: str) -> list[dict[str, int]]:
        """Parsed JSON counts (rounds or sources) of every entry (parsed once)."""
        if column not in self._json:
            self._json[column] = [json.loads(v) for v in self.table.column(column).to_pylist()]
        return self._json[column]

    def column(self, name: str) -> list[Any]:
        return self.table.column(name).to_pylist()


def empty_index() -> pa.Table:
    return INDEX_SCHEMA.empty_table()


def sort_index(table: pa.Table) -> pa.Table:
    if table.num_rows == 0:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[("object_id", "ascending"), ("key", "ascending"),
                                                        ("file", "ascending"), ("row_start", "ascending")]))


__all__ = ["SNAPSHOT_VERSION", "INDEX_SCHEMA", "SnapshotFile", "Snapshot", "Index", "index_path", "empty_index",
           "sort_index"]
