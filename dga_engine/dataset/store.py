"""The sharded grasp dataset: small per-key shards compacted into large files with an object index.

Layout of ``<root>/datasets/<name>/`` (constants below)::

    meta/info.json                      summary (totals, conventions, statistics), rewritten by each compaction
    meta/snapshot.json                  the compacted files and the name of their object index
    meta/index.<snapshot>.parquet       object index: (object, key) -> file, row group, first row, rows
    meta/commit.lock                    held while a writer commits (local disks and S3: see dga_engine.lock)
    manifests/<key>.json                shards committed since the last compaction, one per write key
    data/<part>.<write_id>.parquet      their Parquet parts; <part> is <key>, or <key>-000, <key>-001, ...
    data/c-<snapshot>-<n>.parquet       compacted files: sorted by object, one row group per object
    rejects/<key>.parquet               rejected grasps with their reason (REJECT_SCHEMA)
    candidates/<source>/<key>.parquet   unfiltered grasps waiting for the physics filter

A **shard** is what one write key holds. :meth:`Dataset.write_shard` commits a key's rows (replacing any
earlier rows of that key, wherever they live) with a cost that does not depend on the dataset's size:

1. under the dataset's commit lock, its parts are written under names carrying a fresh ``write_id``;
2. ``manifests/<key>.json`` is written: this rename is the commit. A manifest supersedes every row the
   snapshot holds for its key (a manifest marked ``deleted`` is a tombstone left by :meth:`delete_shard`);
3. the parts of the key's previous manifest are deleted.

:meth:`Dataset.compact` (run automatically once ``StoreConfig.compact_after_keys`` shards are pending, at the
end of a filter run, or by ``dga-engine shards compact``) folds the pending manifests into the snapshot under
the same lock: it streams their rows, one object at a time, together with the rows of snapshot files that
hold superseded rows or are under-full, into new files of about ``target_file_rows`` rows; writes a new
index; replaces ``meta/snapshot.json`` (its commit); then deletes the folded manifests and the files nothing
names any more, and rewrites ``meta/info.json``. A crash at any step leaves the old or the new layout, and
leftovers that ``verify`` reports as warnings and ``repair`` removes. Readers list the manifests *before*
reading the snapshot, and ignore a manifest the snapshot already folded (same write id), so a compaction
between the two reads neither hides nor doubles a row. A file that neither a manifest nor the snapshot names
does not exist for any reader.

Integrity while reading: files are written with Parquet page checksums (CRC32 of every data page) and the
sha256 of their footer is recorded; readers verify both as they read (a file's full sha256 is checked by
``verify``, which reads every byte). Files written before these checksums existed are read unchecked.

grasp_id is unique within a dataset: ids hash the object id, so :meth:`Dataset.write_shard` drops (and
reports) rows whose id the dataset already holds for the same object under another key; ``verify`` checks
uniqueness over the whole dataset.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dga_engine import __version__
from dga_engine import fs as fsio
from dga_engine.dataset.manifest import (
    SUPPORTED_SCHEMA_VERSIONS,
    CorruptShardError,
    DatasetInfo,
    ManifestError,
    ObjectSpan,
    SchemaVersionError,
    ShardManifest,
    ShardPart,
    UnsafePathError,
    add_counts,
    build_info,
    check_data_path,
    check_version,
    column_stats,
    merge_stats,
    value_counts,
)
from dga_engine.dataset.paths import (
    CANDIDATES_DIR,
    CANDIDATES_FILE,
    COMPACT_FILE,
    INFO_FILE,
    LAYOUT,
    LOCK_FILE,
    MANIFEST_FILE,
    MANIFESTS_DIR,
    PART_FILE,
    REJECTS_DIR,
    REJECTS_FILE,
    SNAPSHOT_FILE,
)
from dga_engine.dataset.query import run_query
from dga_engine.dataset.schema import (
    GRASP_SCHEMA,
    REJECT_REASONS,
    REJECT_SCHEMA,
    SCHEMA_VERSION,
    file_columns,
    pose_arrays,
    upgrade,
)
from dga_engine.dataset.snapshot import INDEX_SCHEMA, Index, Snapshot, SnapshotFile, index_path, sort_index
from dga_engine.dataset.verify import VerifyReport, repair_dataset, verify_dataset
from dga_engine.layout import DEFAULT_DATASET, Layout, safe_name
from dga_engine.lock import FileLock, LockHeld

log = logging.getLogger(__name__)
T = TypeVar("T")

# Float columns stored with BYTE_STREAM_SPLIT encoding: zstd then compresses them ~25% better.
# No dictionary encoding at all: with one object per row group, zstd already squeezes the repeated
# strings, the files come out no bigger, and writing is ~3x faster than with pyarrow's default
# (which tries a dictionary on every float column too).
_FLOAT_COLUMNS = ["object_scale", "translation", "rotation", "joints", "displacement", "pen_hand_object_mm",
                  "pen_object_hand_mm", "pen_dga_mm", "pen_object_hand_sum_mm", "refine_joint_change",
                  "refine_translation_change", "refine_rotation_change"]
# Parquet min/max statistics for scalar columns only (list columns' per-leaf stats only bloat the footer).
_STATS_COLUMNS = [f.name for f in GRASP_SCHEMA if not pa.types.is_fixed_size_list(f.type)] + ["reason", "detail"]
_MAX_RETRIES = 2  # a reader retries this often when a concurrent rewrite deleted a file it was about to read
_STATS_BATCH_ROWS = 65_536  # compaction computes column statistics over batches of this many rows
# Parsed footers kept per Dataset. A compacted file's footer (one row group per object) takes ~10 MB in memory
# at 100k rows, so this bounds a reader that touched every file to ~300 MB; a warm lookup needs its file's.
_FOOTER_CACHE = 32


@dataclass(frozen=True)
class StoreConfig:
    """How shards are written and compacted."""

    max_rows_per_shard: int = 500_000  # a larger table is split into parts <key>-000, <key>-001, ...
    max_bytes_per_shard: int = 256 * 2**20  # bound on a part's rows in memory (Arrow bytes, before compression)
    compression: str = "zstd"  # Parquet codec for every column
    compression_level: int = 3  # zstd level (3 = zstd's default: fast, good ratio)
    byte_stream_split: bool = True  # BYTE_STREAM_SPLIT for float columns (smaller files; all readers support it)
    # Compaction. Pending shards cost readers one small file each (and one listing entry on S3); compacting
    # more often costs writers more rewriting. 256 keeps a cold listing well under 100 ms.
    compact_after_keys: int = 256  # write_shard compacts once this many shards are pending (0: never by itself)
    # Rows per compacted file (~18 MB at ~180 B/grasp). One row group per object makes a file's footer grow
    # with its objects (~2 KiB each), and a cold lookup parses one footer: 100k rows keep that near 20 ms;
    # 3.4M grasps are then ~60 files. Compaction memory is per object, not per file.
    target_file_rows: int = 100_000
    # Each compaction writes the pending shards into a new file and leaves full files alone; once this many
    # files are under half the target, they are merged. Higher: fewer rewrites, more (smaller) files.
    compact_fanin: int = 8
    lock_timeout_s: float = 900.0  # how long a writer waits for the commit lock before it names the holder

    def __post_init__(self) -> None:
        if self.max_rows_per_shard < 1 or self.max_bytes_per_shard < 1 or self.target_file_rows < 1:
            raise ValueError("StoreConfig: max_rows_per_shard, max_bytes_per_shard and target_file_rows must be >= 1")
        if self.compact_fanin < 2:
            raise ValueError("StoreConfig.compact_fanin must be >= 2")
        if self.compact_after_keys < 0:
            raise ValueError("StoreConfig.compact_after_keys must be >= 0 (0 turns automatic compaction off)")

    def replace(self, **changes) -> StoreConfig:
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------------
# Tables in and out
# ---------------------------------------------------------------------------------------------------

def conform(table: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``table`` with exactly ``schema`` (column order, types, metadata), or a ValueError saying what differs."""
    if not isinstance(table, pa.Table):
        raise TypeError(f"{what}: expected a pyarrow.Table, got {type(table).__name__}")
    table = upgrade(table)  # a v1 table (no refine fields) gets them as nulls
    missing = [n for n in schema.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    if missing or extra:
        raise ValueError(
            f"{what}: table does not match the grasp schema v{SCHEMA_VERSION}: missing columns {missing}, "
            f"unexpected columns {extra}. Build tables with dga_engine.dataset.schema.pose_table (or select/cast to "
            f"the schema)."
        )
    table = table.select(schema.names)
    if not table.schema.equals(schema, check_metadata=False):
        try:
            table = table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            diffs = [f"{f.name}: {table.schema.field(f.name).type} (want {f.type})"
                     for f in schema if table.schema.field(f.name).type != f.type]
            raise ValueError(f"{what}: column types do not match the schema: {diffs}; cast them first ({exc})") from exc
    else:
        table = table.replace_schema_metadata(schema.metadata)
    for f in schema:
        if not f.nullable and table.column(f.name).null_count:
            raise ValueError(f"{what}: column {f.name!r} has {table.column(f.name).null_count} nulls but is required")
    return table


def to_numpy(table: pa.Table) -> dict[str, np.ndarray]:
    """Pose arrays of a grasp table: translation (N,3), rotation (N,4) wxyz, joints (N,24), object_scale (N,);
    float32."""
    return pose_arrays(table)


def to_torch(table: pa.Table, device: Any = None) -> dict[str, Any]:
    """Like :func:`to_numpy` but torch float32 tensors (on ``device`` if given)."""
    import torch

    return {
        k: torch.from_numpy(np.ascontiguousarray(v)).to(device)
        if device is not None
        else torch.from_numpy(np.ascontiguousarray(v))
        for k, v in to_numpy(table).items()
    }


def _object_bounds(table: pa.Table) -> list[tuple[int, int]]:
    """[start, stop) of each run of equal object_id in a table sorted by object_id."""
    n = table.num_rows
    if n == 0:
        return []
    col = table.column("object_id").combine_chunks()
    change = pc.not_equal(col.slice(1), col.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    cuts = (np.flatnonzero(change) + 1).tolist()
    starts = [0, *cuts]
    stops = [*cuts, n]
    return list(zip(starts, stops))


def _plan_parts(bounds: list[tuple[int, int]], cap: int) -> list[tuple[int, int]]:
    """Pack whole objects into parts of at most ``cap`` rows; an object larger than ``cap`` is cut in pieces."""
    parts: list[tuple[int, int]] = []
    start = cur = 0
    for s, e in bounds:
        if cur and cur + (e - s) > cap:
            parts.append((start, s))
            start, cur = s, 0
        while e - s > cap:  # cur == 0 here: full pieces of an oversized object
            parts.append((s, s + cap))
            s = start = s + cap
        cur += e - s
    if cur:
        parts.append((start, bounds[-1][1]))
    return parts


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def _footer_digest(tail: bytes | memoryview) -> str:
    """sha256 of a Parquet file's footer (its thrift metadata, length and magic), from the file's last bytes."""
    tail = memoryview(tail)
    n = int.from_bytes(bytes(tail[-8:-4]), "little")
    if len(tail) < n + 8 or bytes(tail[-4:]) != b"PAR1":
        raise OSError("not a Parquet file (no footer)")
    return hashlib.sha256(tail[-8 - n:]).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


@dataclass(frozen=True)
class Verdicts:
    """The filter's verdicts on a selection of grasps (:meth:`Dataset.verdicts`)."""

    accepted: pa.Table  # GRASP_SCHEMA
    rejected: pa.Table  # REJECT_SCHEMA: the grasp's fields, its reason and detail

    @property
    def judged(self) -> pa.Table:
        """Every judged grasp, accepted then rejected, in the accepted grasps' columns (what metrics summarise)."""
        if not self.rejected.num_rows:
            return self.accepted
        return pa.concat_tables([self.accepted, self.rejected.select(self.accepted.column_names)])


class _Run(NamedTuple):
    """``rows`` live rows of ``object_id`` under ``key``: file rows [row_start, row_start + rows), row group
    ``row_group``."""

    key: str
    object_id: str
    path: str  # data file, relative to the dataset folder
    row_group: int
    row_start: int
    rows: int
    rounds: Any  # {round: rows} of the run, or of the part it is in (a superset, good for skipping)
    sources: Any
    part: str = ""  # the part's name (pending shards) or the compacted file, for messages


@dataclass
class _State:
    """What a reader sees: the snapshot, and the manifests committed since."""

    snapshot: Snapshot | None
    index: Index | None
    deltas: dict[str, ShardManifest]  # pending manifests (tombstones too), by key
    folded: dict[str, ShardManifest]  # manifests the snapshot already holds (left by an interrupted compaction)
    damaged: dict[str, str]  # key (or meta/snapshot.json) -> why it cannot be read
    dead: frozenset[str] = frozenset()  # snapshot keys superseded by a pending manifest
    footers: dict[str, str] = field(default_factory=dict)  # data path -> footer sha256 ("" = not recorded)

    def live_entries(self) -> np.ndarray:
        """Positions of the index entries whose key no pending manifest supersedes."""
        if self.index is None or not len(self.index):
            return np.array([], dtype=np.int64)
        if not self.dead:
            return np.arange(len(self.index))
        return np.flatnonzero(~np.isin(self.index.key, np.asarray(sorted(self.dead), dtype=object)))

    def dirty_files(self) -> set[int]:
        """Snapshot files that still hold rows of superseded keys."""
        if self.index is None or not self.dead:
            return set()
        by_key = self.index.by_key
        return {int(self.index.file[i]) for k in self.dead if k in by_key for i in by_key[k]}


class Dataset:
    """One dataset under ``<root>/datasets/<name>/``: write shards, rejects and candidates; read; compact; verify."""

    def __init__(self, layout: Layout, name: str = DEFAULT_DATASET, config: StoreConfig | None = None) -> None:
        self.layout = layout
        self.name = safe_name(name)
        self.config = config or StoreConfig()
        self.path = layout.dataset(self.name)
        self._local = layout.is_local
        self._manifest_cache: dict[str, tuple[Any, ShardManifest]] = {}
        self._snapshot_cache: tuple[Any, Snapshot] | None = None
        self._index_cache: tuple[str, Index] | None = None
        self._footer_cache: OrderedDict[str, pq.FileMetaData] = OrderedDict()  # data files never change

    def __repr__(self) -> str:
        return f"Dataset({self.path!r})"

    def p(self, rel: str) -> str:
        """Full path (or URL) of ``rel`` inside the dataset folder."""
        return f"{self.path}/{rel}"

    def exists(self) -> bool:
        return any(fsio.exists(self.p(rel)) for rel in (MANIFESTS_DIR, SNAPSHOT_FILE, INFO_FILE))

    # --- the commit lock ---------------------------------------------------------------------------

    @contextmanager
    def _commit_lock(self, purpose: str) -> Iterator[FileLock]:
        lock = FileLock(self.p(LOCK_FILE), purpose=f"{purpose} {self.name}")
        try:
            lock.acquire(timeout=self.config.lock_timeout_s)
        except LockHeld as exc:
            from dga_engine.lock import describe

            raise LockHeld(exc.path, exc.holder,
                           f"dataset {self.name}: the commit lock {exc.path} has been held by {describe(exc.holder)} "
                           f"for more than {self.config.lock_timeout_s:g} s; if that process is gone, its lock "
                           f"expires {lock.ttl_s:g} s after its last heartbeat") from None
        try:
            yield lock
        finally:
            lock.release()

    # --- writing -----------------------------------------------------------------------------------

    def write_shard(self, table: pa.Table, key: str, *, split: str | None = None) -> ShardManifest:
        """Write accepted grasps (GRASP_SCHEMA) as shard ``key``, replacing every earlier row of that key atomically.

        Rows are sorted by object_id (stable) and written one row group per object. A table larger
        than ``config.max_rows_per_shard`` / ``max_bytes_per_shard`` becomes parts ``key-000``, ``key-001``, ...,
        all recorded in the returned manifest. An empty table commits an empty shard (so a rerun that
        accepts nothing replaces what the key held before). Rows whose grasp_id the table repeats, or that
        the dataset already holds under another key, are dropped with a warning (ids are unique in a
        dataset); the manifest counts them in nothing, the log names how many.
        Once ``config.compact_after_keys`` shards are pending, the dataset is compacted after the commit.
        """
        key = safe_name(key)
        if split is not None:
            split = safe_name(split)
        table = conform(table, GRASP_SCHEMA, f"write_shard({key!r})")
        self._check_versions()  # fails loudly on unknown versions before anything is written
        table = _first_of_each_id(table, f"write_shard({key!r})")
        if table.num_rows:
            # stable: keeps input order per object
            order = pc.sort_indices(table, sort_keys=[("object_id", "ascending")])
            table = table.take(order)
        with self._commit_lock("write_shard") as lock:
            state = self._state(strict=False)
            old = state.deltas.get(key)
            table = self._drop_committed_ids(table, key, state)
            manifest = self._write_parts(table, key, split)
            lock.check()
            fsio.write_bytes(self.p(MANIFEST_FILE.format(key=key)), _dumps(manifest.to_json()))  # the commit
            self._manifest_cache.pop(key, None)
            pending = len(state.deltas) + (old is None)
            pending_rows = sum(m.rows for m in state.deltas.values() if m.key != key) + manifest.rows
        if old is not None:
            live = {p.path for p in manifest.parts}
            for p in old.parts:
                if p.path not in live:
                    self._remove_quietly(self.p(p.path))
        log.info("committed shard %s: %d rows in %d part(s)", key, manifest.rows, len(manifest.parts))
        every = self.config.compact_after_keys
        if every and (pending >= every or pending_rows >= self.config.target_file_rows):
            self.compact()
        return manifest

    def _write_parts(self, table: pa.Table, key: str, split: str | None) -> ShardManifest:
        bounds = _object_bounds(table)
        row_bytes = max(1, table.nbytes // max(1, table.num_rows))
        cap = max(1, min(self.config.max_rows_per_shard, self.config.max_bytes_per_shard // row_bytes))
        plan = _plan_parts(bounds, cap)
        write_id = uuid.uuid4().hex[:12]
        parts: list[ShardPart] = []
        stops = [e for _, e in bounds]
        for i, (start, stop) in enumerate(plan):
            name = key if len(plan) == 1 else f"{key}-{i:03d}"
            rel = PART_FILE.format(part=name, write_id=write_id)
            sub = table.slice(start, stop - start)
            first = bisect.bisect_right(stops, start)  # the first object ending after this part's start
            spans = []
            for s, e in bounds[first:]:
                if s >= stop:
                    break
                spans.append((max(s, start) - start, min(e, stop) - start))
            parts.append(self._write_part(sub, spans, name, rel, key, write_id))
        return ShardManifest(key=key, dataset=self.name, write_id=write_id, created_at=_now(),
                             schema_version=SCHEMA_VERSION, parts=tuple(parts), split=split, engine_version=__version__)

    def _file_schema(self, **meta: str) -> pa.Schema:
        return GRASP_SCHEMA.with_metadata({**GRASP_SCHEMA.metadata, b"dga_dataset": self.name.encode(),
                                           **{f"dga_{k}".encode(): v.encode() for k, v in meta.items()}})

    def _write_part(self, sub: pa.Table, spans: list[tuple[int, int]], name: str, rel: str, key: str,
                    write_id: str) -> ShardPart:
        schema = self._file_schema(shard=key, part=name, write_id=write_id)
        sink = pa.BufferOutputStream()
        with pq.ParquetWriter(sink, schema, **self._grasp_writer_options()) as writer:
            for s, e in spans:  # one row group per object
                writer.write_table(sub.slice(s, e - s).replace_schema_metadata(schema.metadata), row_group_size=e - s)
        payload = memoryview(sink.getvalue())
        fsio.write_bytes(self.p(rel), payload)
        oids = sub.column("object_id")
        objects = tuple(ObjectSpan(str(oids[s].as_py()), g, s, e - s) for g, (s, e) in enumerate(spans))
        return ShardPart(name=name, path=rel, rows=sub.num_rows, bytes=len(payload), sha256=_sha256(payload),
                         row_groups=len(spans), objects=objects, rounds=value_counts(sub, "round"),
                         sources=value_counts(sub, "source"), stats=column_stats(sub),
                         footer_sha256=_footer_digest(payload[-min(len(payload), 64 * 2**20):]))

    def _drop_committed_ids(self, table: pa.Table, key: str, state: _State) -> pa.Table:
        """``table`` without rows whose grasp_id the dataset holds (under another key) for the same object."""
        if table.num_rows == 0:
            return table
        objects = set(pc.unique(table.column("object_id")).to_pylist())
        runs = [r for r in self._runs(state, object_ids=objects) if r.key != key]
        if not runs:
            return table
        held = [t.column("grasp_id") for t in self._read_runs(runs, ["grasp_id"], state)]
        if not held:
            return table
        held_ids = pa.chunked_array(held, pa.string()).combine_chunks()
        dup = pc.is_in(table.column("grasp_id"), value_set=held_ids)
        n = int(pc.sum(dup).as_py() or 0)
        if n:
            log.warning("write_shard(%r): dropped %d row(s) whose grasp_id the dataset already holds under another key "
                        "(grasp ids are unique in a dataset; the earlier rows are kept)", key, n)
            table = table.filter(pc.invert(dup))
        return table

    def delete_shard(self, key: str) -> bool:
        """Remove shard ``key``: its manifest and files, or (for a compacted key) a tombstone that the next
        compaction folds in. Returns whether it existed."""
        key = safe_name(key)
        with self._commit_lock("delete_shard") as lock:
            state = self._state(strict=False)
            old = state.deltas.get(key)
            in_snapshot = state.index is not None and key in state.index.write_ids
            if key in state.damaged and not in_snapshot:  # an unreadable manifest: its parts become orphans
                self._remove_quietly(self.p(MANIFEST_FILE.format(key=key)))
                self._manifest_cache.pop(key, None)
                return True
            if old is not None and old.deleted:
                return False
            if old is None and not in_snapshot:
                if key in state.folded:  # a manifest an interrupted compaction already folded: tidy it
                    self._cleanup_leftovers(_State(None, None, {}, {key: state.folded[key]}, {}))
                return False
            lock.check()
            mpath = self.p(MANIFEST_FILE.format(key=key))
            if in_snapshot:
                tomb = ShardManifest(key=key, dataset=self.name, write_id=uuid.uuid4().hex[:12], created_at=_now(),
                                     schema_version=SCHEMA_VERSION, parts=(), engine_version=__version__, deleted=True)
                fsio.write_bytes(mpath, _dumps(tomb.to_json()))
            else:
                fsio.remove(mpath)
            self._manifest_cache.pop(key, None)
        for p in (old.parts if old is not None else ()):
            self._remove_quietly(self.p(p.path))
        return True

    def write_rejects(self, table: pa.Table, key: str) -> str:
        """Write rejected grasps (REJECT_SCHEMA, a non-null ``reason`` from REJECT_REASONS) as
        ``rejects/<key>.parquet``.

        Atomic and idempotent per key: a rewrite replaces the file. Returns the file's path.
        """
        key = safe_name(key)
        table = conform(table, REJECT_SCHEMA, f"write_rejects({key!r})")
        unknown = sorted(set(table.column("reason").unique().to_pylist()) - set(REJECT_REASONS))
        if unknown:
            raise ValueError(
                f"write_rejects({key!r}): unknown reject reasons {unknown}; use one of {list(REJECT_REASONS)} "
                "(add new reasons to dga_engine.dataset.schema.REJECT_REASONS)"
            )
        if table.num_rows:
            table = table.take(pc.sort_indices(table, sort_keys=[("object_id", "ascending")]))
        path = self.p(REJECTS_FILE.format(key=key))
        fsio.write_bytes(path, self._encode_plain(table))
        return path

    def write_candidates(self, table: pa.Table, source: str, key: str) -> str:
        """Write unfiltered grasps (GRASP_SCHEMA) from ``source`` as ``candidates/<source>/<key>.parquet``.

        Atomic and idempotent per (source, key). Returns the file's path.
        """
        source, key = safe_name(source), safe_name(key)
        table = conform(table, GRASP_SCHEMA, f"write_candidates({source!r}, {key!r})")
        path = self.p(CANDIDATES_FILE.format(source=source, key=key))
        fsio.write_bytes(path, self._encode_plain(table))
        return path

    def _parquet_options(self, schema: pa.Schema) -> dict[str, Any]:
        cfg = self.config
        opts: dict[str, Any] = dict(compression=cfg.compression, compression_level=cfg.compression_level,
                                    write_statistics=[n for n in _STATS_COLUMNS if n in schema.names],
                                    write_page_checksum=True)
        opts["use_dictionary"] = False
        if cfg.byte_stream_split:
            opts["use_byte_stream_split"] = [c for c in _FLOAT_COLUMNS if c in schema.names]
        return opts

    def _grasp_writer_options(self) -> dict[str, Any]:
        opts = self._parquet_options(GRASP_SCHEMA)
        opts["sorting_columns"] = [pq.SortingColumn(GRASP_SCHEMA.get_field_index("object_id"))]
        return opts

    def _encode_plain(self, table: pa.Table) -> memoryview:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=65536, **self._parquet_options(table.schema))
        return memoryview(sink.getvalue())

    # --- compaction --------------------------------------------------------------------------------

    def compact(self, force: bool = False) -> dict[str, Any]:
        """Fold the pending shards into object-sorted files and a new object index; see the module docstring.

        Writes the pending shards' rows, and the live rows of snapshot files that hold superseded ones,
        into new files; full, clean files are never rewritten. Files under half of ``target_file_rows`` are
        merged once ``compact_fanin`` of them exist (or always with ``force``), so a row is rewritten about
        log_fanin(target / rows per compaction) times and the cost of one compaction is bounded by the
        pending data plus ``compact_fanin`` small files, not by the dataset. Returns what it did.
        """
        with self._commit_lock("compact") as lock:
            return self._compact_locked(lock, force)

    def _compact_locked(self, lock: FileLock, force: bool) -> dict[str, Any]:
        t0 = time.perf_counter()
        self._check_versions()
        state = self._state(strict=False)
        if "meta/snapshot.json" in state.damaged:
            raise ManifestError(f"{self.p(SNAPSHOT_FILE)} is unreadable ({state.damaged['meta/snapshot.json']}); "
                                "nothing was compacted: run `dga-engine shards verify` and restore it")
        live_pos = state.live_entries()
        rewrite = self._files_to_rewrite(state, live_pos, force)
        folded_keys = sorted(state.deltas)
        if not rewrite and not folded_keys:
            self._cleanup_leftovers(state)
            return {"compacted": False, "keys": 0, "files_written": 0, "files_removed": 0, "rows": 0,
                    "seconds": time.perf_counter() - t0}

        runs, meta = self._rows_to_rewrite(state, live_pos, rewrite)
        sid = f"{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        new_files, new_entries = self._write_compacted(runs, meta, sid, state)
        table, kept_files = self._index_after(state, live_pos, rewrite, new_entries)
        all_files = kept_files + tuple(new_files)
        self._commit_snapshot(lock, sid, table, all_files)
        self._remove_folded(state, folded_keys, rewrite)
        self._cleanup_leftovers(state)
        self.rebuild_info()
        report = {"compacted": True, "snapshot": sid, "keys": len(folded_keys), "files_written": len(new_files),
                  "files_removed": len(rewrite), "rows": int(sum(f.rows for f in new_files)), "files": len(all_files),
                  "seconds": time.perf_counter() - t0}
        log.info("compacted %s: %s", self.name, report)
        return report

    def _files_to_rewrite(self, state: _State, live_pos: np.ndarray, force: bool) -> set[int]:
        """Snapshot files (by position) to rewrite: those holding dead rows or none, and the small ones once
        there are enough of them (``compact_fanin``; with ``force``, whenever two or more could merge)."""
        snap, index = state.snapshot, state.index
        files = list(snap.files) if snap else []
        live_rows = (
            np.bincount(index.file[live_pos], weights=index.rows[live_pos], minlength=len(files)) if files else []
        )
        dirty = state.dirty_files()
        target = self.config.target_file_rows
        empty = [i for i in range(len(files)) if not live_rows[i]]
        pending = [m for m in state.deltas.values() if not m.deleted]
        rewrite = set(dirty) | set(empty)
        small = [i for i, f in enumerate(files) if i not in rewrite and f.rows < target // 2]
        if len(small) + bool(pending or dirty) >= self.config.compact_fanin or (
            force and len(small) + bool(pending) > 1
        ):
            rewrite |= set(small)
        return rewrite

    def _rows_to_rewrite(self, state: _State, live_pos: np.ndarray,
                         rewrite: set[int]) -> tuple[list[_Run], dict[str, tuple]]:
        """Live snapshot runs in the rewritten files, then every pending shard's runs; and per key its
        (write_id, split, created_at)."""
        snap, index = state.snapshot, state.index
        files = list(snap.files) if snap else []
        runs: list[_Run] = []
        meta: dict[str, tuple[str, str | None, str]] = {}  # key -> (write_id, split, created_at)
        if index is not None:
            wid = index.column("write_id")
            split_col, created = index.column("split"), index.column("created_at")
            rounds, sources = index.counts("rounds"), index.counts("sources")
            for i in live_pos.tolist():
                f = int(index.file[i])
                if f in rewrite:
                    k = str(index.key[i])
                    runs.append(_Run(k, str(index.object_id[i]), files[f].path, int(index.row_group[i]),
                                     int(index.row_start[i]), int(index.rows[i]), rounds[i], sources[i]))
                    meta[k] = (wid[i], split_col[i], created[i])
        for m in state.deltas.values():
            if m.deleted:
                continue
            meta[m.key] = (m.write_id, m.split, m.created_at)
            for part in m.parts:
                for o in part.objects:
                    runs.append(_Run(m.key, o.object_id, part.path, o.row_group, o.row_start, o.rows, None, None))
        return runs, meta

    def _index_after(self, state: _State, live_pos: np.ndarray, rewrite: set[int],
                     new_entries: list) -> tuple[pa.Table, tuple]:
        """The new object index (entries of the files kept as they are, then those of the new files, sorted)
        and the files kept."""
        snap, index = state.snapshot, state.index
        files = list(snap.files) if snap else []
        keep = [i for i in range(len(files)) if i not in rewrite]
        remap = {old: new for new, old in enumerate(keep)}
        parts = []
        if index is not None and keep:
            kept_pos = live_pos[np.isin(index.file[live_pos], keep)]
            t = index.table.take(pa.array(kept_pos, pa.int64()))
            t = t.set_column(t.schema.get_field_index("file"), INDEX_SCHEMA.field("file"),
                             pa.array([remap[int(f)] for f in index.file[kept_pos]], pa.int32()))
            parts.append(t)
        if new_entries:
            cols = {f.name: [e[j] for e in new_entries] for j, f in enumerate(INDEX_SCHEMA)}
            cols["file"] = [len(keep) + f for f in cols["file"]]
            parts.append(pa.Table.from_pydict(cols, schema=INDEX_SCHEMA))
        table = sort_index(pa.concat_tables(parts) if parts else INDEX_SCHEMA.empty_table())
        return table, tuple(files[i] for i in keep)

    def _commit_snapshot(self, lock: FileLock, sid: str, table: pa.Table, all_files: tuple) -> Snapshot:
        """Write the index, then (the commit, still holding the lock) ``meta/snapshot.json`` naming it."""
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd", row_group_size=8192, write_page_checksum=True)
        payload = memoryview(sink.getvalue())
        fsio.write_bytes(self.p(index_path(sid)), payload)
        keys = set(table.column("key").to_pylist())
        objects = len(set(table.column("object_id").to_pylist()))
        new = Snapshot(id=sid, created_at=_now(), index=index_path(sid), index_sha256=_sha256(payload),
                       index_rows=table.num_rows, files=all_files, keys=len(keys), objects=objects,
                       rows=int(sum(f.rows for f in all_files)), engine_version=__version__)
        lock.check()
        fsio.write_bytes(self.p(SNAPSHOT_FILE), _dumps(new.to_json()))  # the commit
        self._snapshot_cache = None
        return new

    def _remove_folded(self, state: _State, folded_keys: list[str], rewrite: set[int]) -> None:
        """After the commit: folded manifests and their parts, the rewritten files and the old index."""
        snap = state.snapshot
        files = list(snap.files) if snap else []
        listing = self._manifest_listing()
        gone: list[str] = []
        for k in folded_keys:
            m = state.deltas[k]
            try:  # under the lock nobody rewrote it; the check keeps a manifest that is not the one folded
                current = self.load_manifest(k, stamp=listing.get(f"{k}.json"))
            except (FileNotFoundError, ManifestError, SchemaVersionError):
                current = None
            if current is not None and current.write_id == m.write_id:
                gone.append(self.p(MANIFEST_FILE.format(key=k)))
            self._manifest_cache.pop(k, None)
            gone += [self.p(p.path) for p in m.parts]
        gone += [self.p(files[i].path) for i in sorted(rewrite)]
        if snap is not None:
            gone.append(self.p(snap.index))
        self._remove_many(gone)

    def _cleanup_leftovers(self, state: _State) -> None:
        """Remove manifests an interrupted compaction already folded (their parts went with that compaction)."""
        for k, m in state.folded.items():
            self._remove_quietly(self.p(MANIFEST_FILE.format(key=k)))
            self._manifest_cache.pop(k, None)
            for p in m.parts:
                self._remove_quietly(self.p(p.path))

    def _write_compacted(self, runs: list[_Run], meta: dict[str, tuple[str, str | None, str]], sid: str,
                         state: _State) -> tuple[list[SnapshotFile], list[tuple]]:
        """Stream ``runs`` into files of about ``target_file_rows`` rows sorted by object (one row group each)."""
        runs = sorted(runs, key=lambda r: (r.object_id, r.key, r.path, r.row_start))
        by_object: list[list[_Run]] = []
        for r in runs:
            if by_object and by_object[-1][0].object_id == r.object_id:
                by_object[-1].append(r)
            else:
                by_object.append([r])
        plan: list[list[list[_Run]]] = []
        rows = 0
        for obj in by_object:
            n = sum(r.rows for r in obj)
            if not plan or (rows and rows + n > self.config.target_file_rows):
                plan.append([])
                rows = 0
            plan[-1].append(obj)
            rows += n
        reader = _RunReader(self, state)
        out_files: list[SnapshotFile] = []
        entries: list[tuple] = []
        try:
            for n_file, objs in enumerate(plan):
                rel = COMPACT_FILE.format(snapshot=sid, n=n_file)
                f, e = self._write_one_compacted(rel, objs, meta, reader, n_file, sid)
                out_files.append(f)
                entries.extend(e)
        finally:
            reader.close()
        return out_files, entries

    def _write_one_compacted(self, rel: str, objs: list[list[_Run]], meta: dict[str, tuple[str, str | None, str]],
                             reader: _RunReader, n_file: int, sid: str) -> tuple[SnapshotFile, list[tuple]]:
        schema = self._file_schema(snapshot=sid, file=str(n_file))
        entries: list[tuple] = []
        stats: list[dict[str, dict[str, Any]]] = []
        batch: list[pa.Table] = []
        batch_rows = 0
        row = 0
        fd, tmp = tempfile.mkstemp(prefix=".dga-compact-", suffix=".tmp",
                                   dir=os.path.dirname(fsio.strip_file_scheme(self.p(rel))) if self._local else None)
        os.close(fd)
        try:
            if self._local:
                os.makedirs(os.path.dirname(fsio.strip_file_scheme(self.p(rel))), exist_ok=True)
            with pq.ParquetWriter(tmp, schema, **self._grasp_writer_options()) as writer:
                for g, obj in enumerate(objs):
                    pieces = [reader.read(r) for r in obj]
                    t = pa.concat_tables(pieces) if len(pieces) > 1 else pieces[0]
                    writer.write_table(t.replace_schema_metadata(schema.metadata), row_group_size=max(1, t.num_rows))
                    offset = 0
                    for r, piece in zip(obj, pieces):
                        wid, split, created = meta[r.key]
                        rounds = r.rounds if r.rounds is not None else value_counts(piece, "round")
                        sources = r.sources if r.sources is not None else value_counts(piece, "source")
                        entries.append((r.object_id, r.key, wid, n_file, g, offset, row + offset, r.rows,
                                        json.dumps(rounds, sort_keys=True), json.dumps(sources, sort_keys=True),
                                        split, created))
                        offset += r.rows
                    row += t.num_rows
                    batch.append(t)
                    batch_rows += t.num_rows
                    if batch_rows >= _STATS_BATCH_ROWS:
                        stats.append(column_stats(pa.concat_tables(batch)))
                        batch, batch_rows = [], 0
            if batch:
                stats.append(column_stats(pa.concat_tables(batch)))
            h = hashlib.sha256()
            with open(tmp, "rb") as fh:
                while chunk := fh.read(8 * 2**20):
                    h.update(chunk)
                size = fh.tell()
                fh.seek(max(0, size - 64 * 2**20))
                footer = _footer_digest(fh.read())
            if self._local:
                with open(tmp, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(tmp, fsio.strip_file_scheme(self.p(rel)))
            else:
                fs, p = fsio.filesystem(self.p(rel))
                fs.put_file(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return SnapshotFile(path=rel, rows=row, bytes=size, sha256=h.hexdigest(), footer_sha256=footer,
                            row_groups=len(objs), stats=merge_stats(stats)), entries

    # --- the summary -------------------------------------------------------------------------------

    def rebuild_info(self) -> DatasetInfo:
        """Compute the summary of the committed dataset and write it to ``meta/info.json``; returns it."""
        state = self._state(strict=False)
        if "meta/snapshot.json" in state.damaged:
            raise ManifestError(f"{state.damaged['meta/snapshot.json']}; meta/info.json was left as it is")
        info = self._summary(state)
        fsio.write_json(self.p(INFO_FILE), info.to_json())
        return info

    def _check_versions(self) -> None:
        """Refuse to write into a dataset whose summary or snapshot has a version this engine does not know."""
        path = self.p(INFO_FILE)
        if fsio.exists(path):
            try:
                raw = fsio.read_json(path)
            except (OSError, ValueError):
                raw = None  # a damaged summary is rebuilt by the next compaction
            if raw is not None:
                DatasetInfo.from_json(raw, where=path)
        spath = self.p(SNAPSHOT_FILE)
        if fsio.exists(spath):
            try:
                raw = fsio.read_json(spath)
            except (OSError, ValueError):
                return
            if isinstance(raw, dict):
                check_version("snapshot version", raw.get("snapshot_version"), (1,), spath)

    def stored_info(self) -> DatasetInfo | None:
        """``meta/info.json`` as stored (None when absent). Unknown versions raise SchemaVersionError."""
        path = self.p(INFO_FILE)
        if not fsio.exists(path):
            return None
        try:
            raw = fsio.read_json(path)
        except (OSError, ValueError) as exc:
            raise ManifestError(
                f"{path} is unreadable ({exc}); rebuild it with `dga-engine shards verify --repair`"
            ) from exc
        return DatasetInfo.from_json(raw, where=path)

    def info(self, strict: bool = True) -> DatasetInfo:
        """The summary of everything committed now: the snapshot plus the shards committed since.

        Counts are exact. Statistics merge those of the snapshot files and the pending parts; rows of keys
        superseded since the last compaction leave the counts at once and the statistics at the next
        compaction. Raises SchemaVersionError, naming the fix, when the dataset has an unknown version.
        """
        self.stored_info()  # refuses a summary of an unknown version
        return self._summary(self._state(strict=strict))

    def _summary(self, state: _State) -> DatasetInfo:
        from dga_engine.conventions import POSE_CONVENTION

        index = state.index
        rows = 0
        rounds: dict[str, int] = {}
        sources: dict[str, int] = {}
        splits: dict[str, dict[str, int]] = {}
        objects: set[str] = set()
        keys = 0
        stats: list[dict[str, dict[str, Any]]] = []
        bytes_ = 0
        n_files = 0
        if index is not None and state.snapshot is not None:
            live = state.live_entries()
            rows += int(index.rows[live].sum()) if len(live) else 0
            r_counts, s_counts = index.counts("rounds"), index.counts("sources")
            split_col = index.column("split")
            seen_keys: dict[str, str | None] = {}
            for i in live.tolist():
                add_counts(rounds, r_counts[i])
                add_counts(sources, s_counts[i])
                k = index.key[i]
                if k not in seen_keys:
                    seen_keys[k] = split_col[i]
                if split_col[i]:
                    s = splits.setdefault(split_col[i], {"keys": 0, "rows": 0})
                    s["rows"] += int(index.rows[i])
            for sp in seen_keys.values():
                if sp:
                    splits[sp]["keys"] += 1
            keys += len(seen_keys)
            objects.update(np.unique(index.object_id[live]).tolist() if len(live) else [])
            files_live = set(index.file[live].tolist())
            for i, f in enumerate(state.snapshot.files):
                if i in files_live:
                    stats.append(f.stats)
                    bytes_ += f.bytes
                    n_files += 1
        for m in state.deltas.values():
            if m.deleted:
                continue
            keys += 1
            rows += m.rows
            bytes_ += m.bytes
            n_files += len(m.parts)
            for p in m.parts:
                add_counts(rounds, p.rounds)
                add_counts(sources, p.sources)
                objects.update(o.object_id for o in p.objects)
                if p.rows:
                    stats.append(p.stats)
            if m.split:
                s = splits.setdefault(m.split, {"keys": 0, "rows": 0})
                s["keys"] += 1
                s["rows"] += m.rows
        return build_info(self.name, rows=rows, objects=len(objects), bytes_=bytes_, rounds=rounds, sources=sources,
                          keys=keys, files=n_files, splits=splits, stats=stats, conventions=POSE_CONVENTION,
                          schema=GRASP_SCHEMA, layout=LAYOUT, updated_at=_now(), engine_version=__version__,
                          snapshot=state.snapshot.id if state.snapshot else None,
                          pending_keys=sum(1 for m in state.deltas.values() if not m.deleted))

    # --- manifests and the snapshot ----------------------------------------------------------------

    def _manifest_listing(self) -> dict[str, Any]:
        """name -> change stamp (None: unknown) of every manifest file."""
        path = self.p(MANIFESTS_DIR)
        if self._local:
            try:
                entries = list(os.scandir(fsio.strip_file_scheme(path)))
            except FileNotFoundError:
                return {}
            out = {}
            for e in entries:
                if e.name.endswith(".json") and not e.name.startswith("."):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    out[e.name] = (st.st_mtime_ns, st.st_size, st.st_ino)
            return out
        fs, p = fsio.filesystem(path)
        try:
            listed = (
                fs.ls(p, detail=True, refresh=True)
                if "refresh" in fs.ls.__code__.co_varnames
                else fs.ls(p, detail=True)
            )
        except FileNotFoundError:
            return {}
        out = {}
        for e in listed:
            name = os.path.basename(str(e["name"]).rstrip("/"))
            if name.endswith(".json") and not name.startswith("."):
                etag = e.get("ETag") or e.get("etag")
                out[name] = (etag, e.get("size")) if etag else None
        return out

    def _stat(self, path: str) -> Any:
        if not self._local:
            return None
        try:
            st = os.stat(fsio.strip_file_scheme(path))
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def load_manifest(self, key: str, stamp: Any = None) -> ShardManifest:
        """Read and check ``manifests/<key>.json`` (cached while the file is unchanged)."""
        path = self.p(MANIFEST_FILE.format(key=key))
        stamp = stamp if stamp is not None else self._stat(path)
        hit = self._manifest_cache.get(key)
        if hit is not None and stamp is not None and hit[0] == stamp:
            return hit[1]
        try:
            raw = json.loads(fsio.read_bytes(path).decode("utf-8"))
            m = ShardManifest.from_json(raw, where=path)
        except SchemaVersionError:
            raise
        except FileNotFoundError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ManifestError(
                f"manifest {path} is unreadable ({type(exc).__name__}: {exc}); "
                "run `dga-engine shards verify`, then `dga-engine shards repair` (or rewrite that shard)"
            ) from exc
        if m.key != key:
            raise ManifestError(f"manifest {path} describes shard {m.key!r}, not {key!r}; rename or remove it")
        if stamp is not None:
            self._manifest_cache[key] = (stamp, m)
        return m

    def _load_snapshot(self) -> Snapshot | None:
        path = self.p(SNAPSHOT_FILE)
        stamp = self._stat(path)
        if self._local and stamp is None:
            return None
        if stamp is not None and self._snapshot_cache is not None and self._snapshot_cache[0] == stamp:
            return self._snapshot_cache[1]
        try:
            raw = json.loads(fsio.read_bytes(path).decode("utf-8"))
        except FileNotFoundError:
            return None
        try:
            snap = Snapshot.from_json(raw, where=path)
        except SchemaVersionError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from exc
        if stamp is not None:
            self._snapshot_cache = (stamp, snap)
        return snap

    def _load_index(self, snap: Snapshot) -> Index:
        if self._index_cache is not None and self._index_cache[0] == snap.id:
            return self._index_cache[1]
        path = self.p(snap.index)
        data = fsio.read_bytes(path)
        if _sha256(data) != snap.index_sha256:
            raise ManifestError(f"{path} does not match the sha256 recorded in {SNAPSHOT_FILE}: the object index is "
                                "damaged; run `dga-engine shards verify`")
        try:
            table = pq.read_table(pa.BufferReader(data), page_checksum_verification=True)
            index = Index(table.replace_schema_metadata(INDEX_SCHEMA.metadata), len(snap.files), path)
        except (OSError, pa.ArrowException, ValueError) as exc:
            raise ManifestError(f"{path} is unreadable ({exc}); run `dga-engine shards verify`") from exc
        if len(index) != snap.index_rows:
            raise ManifestError(f"{path} has {len(index)} entries, {SNAPSHOT_FILE} says {snap.index_rows}")
        self._index_cache = (snap.id, index)
        return index

    def _state(self, strict: bool = True, report_versions: bool = False) -> _State:
        """The committed state. The manifests are listed before the snapshot is read (see the module docstring).

        ``strict`` readers raise ManifestError on a damaged manifest (never a silently incomplete answer);
        writers pass False so one damaged shard does not block the others (verify reports it). Unknown
        versions always raise SchemaVersionError, except for ``verify`` (``report_versions``), which lists them.
        """
        listing = self._manifest_listing()
        live = {n[: -len(".json")] for n in listing}
        for k in list(self._manifest_cache):
            if k not in live:
                del self._manifest_cache[k]
        damaged: dict[str, str] = {}

        def load(name: str) -> ShardManifest | None:
            k = name[: -len(".json")]
            try:
                return self.load_manifest(k, stamp=listing[name])
            except FileNotFoundError:  # deleted between listing and reading
                return None
            except ManifestError as exc:
                damaged[k] = str(exc)
                return None
            except SchemaVersionError as exc:
                if not report_versions:
                    raise
                damaged[k] = str(exc)
                return None

        names = sorted(listing)
        if self._local or len(names) < 8:
            loaded = [load(n) for n in names]
        else:  # object stores: overlap the round trips
            with ThreadPoolExecutor(max_workers=16) as pool:
                loaded = list(pool.map(load, names))
        manifests = {m.key: m for m in loaded if m is not None}
        try:
            snap = self._load_snapshot()
            index = self._load_index(snap) if snap is not None else None
        except (ManifestError, SchemaVersionError) as exc:
            if strict or (isinstance(exc, SchemaVersionError) and not report_versions):
                raise
            damaged["meta/snapshot.json"] = str(exc)
            snap, index = None, None
        if strict and damaged:
            raise ManifestError(next(iter(damaged.values())))
        for k, why in damaged.items():
            log.warning("skipping damaged %s: %s", k, why)
        held = index.write_ids if index is not None else {}
        folded = {k: m for k, m in manifests.items()
                  if held.get(k) == m.write_id or (m.deleted and k not in held)}
        deltas = {k: m for k, m in manifests.items() if k not in folded}
        dead = frozenset(k for k in deltas if k in held)
        footers = {f.path: f.footer_sha256 for f in (snap.files if snap else ())}
        for m in deltas.values():
            for p in m.parts:
                footers[p.path] = p.footer_sha256
        return _State(snapshot=snap, index=index, deltas=dict(sorted(deltas.items())), folded=folded,
                      damaged=damaged, dead=dead, footers=footers)

    def _runs(self, state: _State, object_ids: set[str] | None = None, keys: set[str] | None = None) -> list[_Run]:
        """Every live run of rows (optionally only of some objects or keys): snapshot files first, then pending
        shards."""
        out: list[_Run] = []
        index, snap = state.index, state.snapshot
        if index is not None and snap is not None and len(index):
            if object_ids is not None:
                pos = (
                    np.concatenate([index.entries_of_object(o) for o in object_ids])
                    if object_ids
                    else np.array([], int)
                )
            elif keys is not None:
                pos = (
                    np.concatenate([index.by_key.get(k, np.array([], int)) for k in keys])
                    if keys
                    else np.array([], int)
                )
            else:
                pos = np.arange(len(index))
            pos = np.sort(pos.astype(np.int64))
            if state.dead and len(pos):
                pos = pos[~np.isin(index.key[pos], np.asarray(sorted(state.dead), dtype=object))]
            if keys is not None and object_ids is not None and len(pos):
                pos = pos[np.isin(index.key[pos], np.asarray(sorted(keys), dtype=object))]
            if len(pos):
                order = np.lexsort((index.row_start[pos], index.file[pos]))
                pos = pos[order]
                r_counts, s_counts = index.counts("rounds"), index.counts("sources")
                for i in pos.tolist():
                    path = snap.files[int(index.file[i])].path
                    out.append(_Run(str(index.key[i]), str(index.object_id[i]), path, int(index.row_group[i]),
                                    int(index.row_start[i]), int(index.rows[i]), r_counts[i], s_counts[i], path))
        for m in state.deltas.values():
            if m.deleted or (keys is not None and m.key not in keys):
                continue
            for part in m.parts:
                for o in part.objects:
                    if object_ids is None or o.object_id in object_ids:
                        out.append(_Run(m.key, o.object_id, part.path, o.row_group, o.row_start, o.rows,
                                        part.rounds, part.sources, part.name))
        return out

    def shards(self) -> list[ShardManifest]:
        """The committed shards (write keys), sorted by key: pending manifests, and views of compacted keys
        whose parts name the compacted files that hold their rows (a file nobody names does not exist)."""
        state = self._state()
        out = [m for m in state.deltas.values() if not m.deleted]
        index, snap = state.index, state.snapshot
        if index is not None and snap is not None:
            wid, split_col, created = index.column("write_id"), index.column("split"), index.column("created_at")
            r_counts, s_counts = index.counts("rounds"), index.counts("sources")
            for k, pos in index.by_key.items():
                if k in state.dead:
                    continue
                by_file: dict[int, list[int]] = {}
                for i in sorted(pos.tolist(), key=lambda i: (int(index.file[i]), int(index.row_start[i]))):
                    by_file.setdefault(int(index.file[i]), []).append(i)
                parts = []
                for n, (f, entries) in enumerate(by_file.items()):
                    sf = snap.files[f]
                    rows = int(sum(int(index.rows[i]) for i in entries))
                    rounds: dict[str, int] = {}
                    sources: dict[str, int] = {}
                    for i in entries:
                        add_counts(rounds, r_counts[i])
                        add_counts(sources, s_counts[i])
                    parts.append(ShardPart(
                        name=k if len(by_file) == 1 else f"{k}-{n:03d}", path=sf.path, rows=rows,
                        bytes=int(round(sf.bytes * rows / sf.rows)) if sf.rows else 0, sha256=sf.sha256,
                        row_groups=len(entries),
                        objects=tuple(ObjectSpan(str(index.object_id[i]), int(index.row_group[i]),
                                                 int(index.row_start[i]), int(index.rows[i])) for i in entries),
                        rounds=rounds, sources=sources, stats={}, footer_sha256=sf.footer_sha256))
                i0 = int(pos[0])
                out.append(ShardManifest(key=k, dataset=self.name, write_id=wid[i0], created_at=created[i0],
                                         schema_version=SCHEMA_VERSION, parts=tuple(parts), split=split_col[i0],
                                         engine_version=snap.engine_version, compacted=True))
        return sorted(out, key=lambda m: m.key)

    def shard(self, name: str) -> ShardManifest:
        """The manifest of shard ``name`` (a key, or a part name such as ``key-001``); KeyError when absent."""
        shards = self.shards()
        for m in shards:
            if m.key == name:
                return m
        for m in shards:
            if any(p.name == name for p in m.parts):
                return m
        raise KeyError(f"no shard {name!r} in dataset {self.name!r} (see `dga-engine shards ls`)")

    def files(self) -> list[str]:
        """Full paths of every committed Parquet data file (for DuckDB, HF ``datasets``, data loaders).

        Raises ValueError while a compacted file still holds rows of a shard rewritten since the last
        compaction (handing that file to another reader would show the old rows): ``compact()`` first.
        """
        state = self._state()
        if state.dirty_files():
            raise ValueError(
                f"dataset {self.name}: {len(state.dead)} shard(s) were rewritten since the last compaction "
                "and their old rows are still inside compacted files; run `dga-engine shards compact` "
                "(Dataset.compact()) before reading the files directly, or use read()/query()"
            )
        out = [self.p(f.path) for f in (state.snapshot.files if state.snapshot else ())]
        return out + [self.p(p.path) for m in state.deltas.values() for p in m.parts]

    def object_ids(self) -> list[str]:
        """Distinct object ids over all shards, sorted."""
        return sorted({r.object_id for r in self._runs(self._state())})

    # --- reading -----------------------------------------------------------------------------------

    def _metadata(self, rel: str, expected_footer: str) -> pq.FileMetaData:
        """The footer of data file ``rel``, checked against its recorded sha256 (cached: data files never change)."""
        meta = self._footer_cache.get(rel)
        if meta is not None:
            self._footer_cache.move_to_end(rel)
            return meta
        path = self.p(rel)
        if self._local:
            fh = open(fsio.strip_file_scheme(path), "rb")
        else:
            fs, p = fsio.filesystem(path)
            fh = fs.open(p, "rb")
        with fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 8))
            end = fh.read(8)
            n = int.from_bytes(end[:4], "little") if len(end) == 8 else -1
            if len(end) < 8 or end[4:] != b"PAR1" or n + 8 > size:
                raise OSError(f"{rel} is not a Parquet file (no footer)")
            fh.seek(size - 8 - n)
            tail = fh.read(n + 8)
        if expected_footer and hashlib.sha256(tail).hexdigest() != expected_footer:
            raise OSError(f"the footer of {rel} does not match the sha256 recorded when it was written")
        meta = pq.read_metadata(pa.BufferReader(b"PAR1" + tail))
        self._footer_cache[rel] = meta
        while len(self._footer_cache) > _FOOTER_CACHE:
            self._footer_cache.popitem(last=False)
        return meta

    @contextmanager
    def _parquet(self, rel: str, expected_footer: str = "") -> Iterator[pq.ParquetFile]:
        check_data_path(rel, "a data file")
        meta = self._metadata(rel, expected_footer)
        path = self.p(rel)
        if self._local:
            pf = pq.ParquetFile(fsio.strip_file_scheme(path), metadata=meta, page_checksum_verification=True)
            try:
                yield pf
            finally:
                pf.close()
        else:
            fs, p = fsio.filesystem(path)
            with fs.open(p, "rb") as fh:
                yield pq.ParquetFile(fh, metadata=meta, page_checksum_verification=True)

    def _retrying(self, fn: Callable[[], T]) -> T:
        for attempt in range(_MAX_RETRIES + 1):
            try:
                return fn()
            except FileNotFoundError:
                if attempt == _MAX_RETRIES:
                    raise
                self._manifest_cache.clear()  # a concurrent rewrite or compaction replaced a file: look again
                self._snapshot_cache = None
        raise AssertionError("unreachable")

    def _read_runs(self, runs: list[_Run], columns: list[str], state: _State) -> list[pa.Table]:
        """One table per data file touched, holding exactly the rows of ``runs`` in file order."""
        schema = pa.schema([GRASP_SCHEMA.field(c) for c in columns], metadata=GRASP_SCHEMA.metadata)
        by_file: dict[str, list[_Run]] = {}
        for r in runs:
            by_file.setdefault(r.path, []).append(r)
        out = []
        for rel, file_runs in by_file.items():
            try:
                with self._parquet(rel, state.footers.get(rel, "")) as pf:
                    cols = file_columns(columns, pf.schema_arrow.names)  # a v1 part has no refine columns
                    meta = pf.metadata
                    total = sum(r.rows for r in file_runs)
                    if total == meta.num_rows:
                        t = pf.read(columns=cols)
                        base = 0
                        groups = None
                    else:
                        groups = sorted({r.row_group for r in file_runs})
                        t = pf.read_row_groups(groups, columns=cols)
                    if groups is None:
                        keep = None
                    else:
                        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
                        at = {}  # row group -> its first row inside t
                        base = 0
                        for g in groups:
                            at[g] = base
                            base += meta.row_group(g).num_rows
                        keep = np.zeros(t.num_rows, dtype=bool)
                        for r in file_runs:
                            s = at[r.row_group] + (r.row_start - int(starts[r.row_group]))
                            keep[s:s + r.rows] = True
            except FileNotFoundError:
                raise
            except (OSError, pa.ArrowException, UnsafePathError, IndexError, KeyError) as exc:
                r0 = file_runs[0]
                raise CorruptShardError(
                    f"part {r0.part} of shard {r0.key} ({self.p(rel)}) cannot be read ({exc}); run `dga-engine shards "
                    f"verify`, then `dga-engine shards repair` (reruns the unit that wrote it), rewrite shard {r0.key} "
                    "or restore the file") from exc
            if keep is not None and not keep.all():
                t = t.filter(pa.array(keep))
            out.append(_fill_missing(t.replace_schema_metadata(None), schema))
        return out

    def read(self, object_ids: Iterable[str] | str | None = None, rounds: Iterable[int] | int | None = None,
             sources: Iterable[str] | str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Accepted grasps, optionally only of some objects / rounds / sources, optionally only some columns.

        Object selection reads only the matching row groups (located through the object index and the
        pending manifests); round and source selection skip runs that hold none of them and filter the rest.
        """
        oids = None if object_ids is None else ({object_ids} if isinstance(object_ids, str) else set(object_ids))
        rset = (
            None
            if rounds is None
            else ({int(rounds)} if isinstance(rounds, (int, np.integer)) else {int(r) for r in rounds})
        )
        sset = None if sources is None else ({sources} if isinstance(sources, str) else set(sources))
        out_cols = self._columns(columns)
        need = list(out_cols) + [
            c for c, s in (("round", rset), ("source", sset)) if s is not None and c not in out_cols
        ]
        out_schema = pa.schema([GRASP_SCHEMA.field(c) for c in out_cols], metadata=GRASP_SCHEMA.metadata)

        def run() -> pa.Table:
            state = self._state()
            runs = self._runs(state, object_ids=oids)
            if rset is not None:
                want_r = {str(r) for r in rset}
                runs = [r for r in runs if want_r & set(r.rounds)]
            if sset is not None:
                runs = [r for r in runs if sset & set(r.sources)]
            tables = []
            for t in self._read_runs(runs, need, state):
                if rset is not None:
                    t = t.filter(pc.is_in(t.column("round"), pa.array(sorted(rset), pa.int32())))
                if sset is not None:
                    t = t.filter(pc.is_in(t.column("source"), pa.array(sorted(sset), pa.string())))
                tables.append(t.select(out_cols))
            if not tables:
                return out_schema.empty_table()
            return pa.concat_tables(tables).replace_schema_metadata(GRASP_SCHEMA.metadata)

        return self._retrying(run)

    def _columns(self, columns: Sequence[str] | None) -> list[str]:
        if columns is None:
            return list(GRASP_SCHEMA.names)
        unknown = [c for c in columns if c not in GRASP_SCHEMA.names]
        if unknown:
            raise ValueError(f"unknown columns {unknown}; the grasp schema has {GRASP_SCHEMA.names}")
        return list(columns)

    def read_object(self, object_id: str, columns: Sequence[str] | None = None) -> pa.Table:
        """All accepted grasps of one object, reading only its row groups (found through the object index)."""
        return self.read(object_ids=[object_id], columns=columns)

    def read_shard(self, key: str, columns: Sequence[str] | None = None) -> pa.Table:
        """The rows of one shard (write key), wherever they live (pending parts or compacted files)."""
        cols = self._columns(columns)

        def run() -> pa.Table:
            state = self._state()
            tables = self._read_runs(self._runs(state, keys={key}), cols, state)
            return (
                pa.concat_tables(tables) if tables else pa.schema([GRASP_SCHEMA.field(c) for c in cols]).empty_table()
            )

        return self._retrying(run)

    def iter_batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """One table per committed data file (streams the dataset without holding it in memory)."""
        cols = self._columns(columns)
        state = self._state()
        runs = self._runs(state)
        by_file: dict[str, list[_Run]] = {}
        for r in runs:
            by_file.setdefault(r.path, []).append(r)
        for file_runs in by_file.values():
            yield from self._read_runs(file_runs, cols, state)

    def reject_keys(self) -> list[str]:
        return [n[: -len(".parquet")] for n in fsio.listdir(self.p(REJECTS_DIR))
                if n.endswith(".parquet") and not n.startswith(".")]

    def verdicts(self, rounds: Iterable[int] | None = None, sources: Iterable[str] | None = None) -> Verdicts:
        """Accepted and rejected grasps of some rounds and/or sources (``None``: all), selected alike."""
        accepted = self.read(rounds=rounds, sources=sources)
        rejected = self.rejects()
        for column, values in (("round", rounds), ("source", sources)):
            if values is not None and rejected.num_rows:
                wanted = pa.array(list(values), rejected.schema.field(column).type)
                rejected = rejected.filter(pc.is_in(rejected.column(column), value_set=wanted))
        return Verdicts(accepted, rejected)

    def rejects(self, keys: Iterable[str] | None = None) -> pa.Table:
        """Rejected grasps (REJECT_SCHEMA) of all keys, or of ``keys``.

        An unreadable rejects file is skipped with a warning naming it (``verify`` reports it as an error):
        rejects are a record of what was dropped, and one damaged file must not hide all the others.
        """
        keys = self.reject_keys() if keys is None else [safe_name(k) for k in keys]
        return self._read_plain([self.p(REJECTS_FILE.format(key=k)) for k in keys], REJECT_SCHEMA, skip_damaged=True)

    def candidate_sources(self) -> list[str]:
        return [n for n in fsio.listdir(self.p(CANDIDATES_DIR)) if not n.startswith(".")]

    def candidate_keys(self, source: str) -> list[str]:
        """Keys of the candidate files of ``source``, sorted."""
        return [n[: -len(".parquet")] for n in fsio.listdir(self.p(f"{CANDIDATES_DIR}/{safe_name(source)}"))
                if n.endswith(".parquet") and not n.startswith(".")]

    def candidates(self, source: str, keys: Iterable[str] | None = None) -> pa.Table:
        """Unfiltered grasps (GRASP_SCHEMA) of ``source``: all its keys, or only ``keys``."""
        source = safe_name(source)
        keys = self.candidate_keys(source) if keys is None else [safe_name(k) for k in keys]
        return self._read_plain([self.p(CANDIDATES_FILE.format(source=source, key=k)) for k in keys], GRASP_SCHEMA)

    def _read_plain(self, paths: list[str], schema: pa.Schema, skip_damaged: bool = False) -> pa.Table:
        tables = []
        for path in paths:
            try:
                if self._local:
                    t = pq.read_table(fsio.strip_file_scheme(path), page_checksum_verification=True)
                else:
                    fs, p = fsio.filesystem(path)
                    with fs.open(p, "rb") as fh:
                        t = pq.read_table(fh, page_checksum_verification=True)
            except (OSError, pa.ArrowException) as exc:
                if not skip_damaged or isinstance(exc, FileNotFoundError):
                    raise
                log.warning("skipping unreadable %s (%s); `dga-engine shards verify` reports it, "
                            "`dga-engine shards repair` reruns the unit that wrote it", path, exc)
                continue
            tables.append(conform(t, schema, path))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    # --- verification and queries ------------------------------------------------------------------

    def verify(self, checksums: bool = True) -> VerifyReport:
        """Check every file against its manifest or the snapshot, ids, the index and the summary; see :mod:`.verify`."""
        return verify_dataset(self, checksums=checksums)

    def repair(self, min_age_s: float = 3600.0) -> dict[str, Any]:
        """Rebuild ``meta/info.json`` and delete unreferenced files older than ``min_age_s`` (see :mod:`.verify`)."""
        return repair_dataset(self, min_age_s=min_age_s)

    def query(self, sql: str) -> pa.Table:
        """Run one read-only DuckDB SELECT over views ``grasps``, ``rejects`` and ``shards``; see :mod:`.query`."""
        return self._retrying(lambda: run_query(self, sql))

    # --- helpers -----------------------------------------------------------------------------------

    def _remove_many(self, paths: list[str]) -> None:
        """Remove files (unreferenced ones: order does not matter), overlapping the slow deletes."""
        if len(paths) < 4:
            for path in paths:
                self._remove_quietly(path)
            return
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self._remove_quietly, paths))

    def _remove_quietly(self, path: str) -> None:
        try:
            fsio.remove(path)
        except OSError as exc:  # an unreferenced file: verify reports it, repair removes it later
            log.warning("could not remove %s: %s", path, exc)


class _RunReader:
    """Reads runs for compaction, keeping the last row group of each open file (runs of one object share it)."""

    def __init__(self, ds: Dataset, state: _State) -> None:
        self.ds = ds
        self.state = state
        self._open: OrderedDict[str, tuple[Any, pq.ParquetFile, list[int]]] = OrderedDict()
        self._group: dict[str, tuple[int, pa.Table]] = {}

    def _file(self, rel: str) -> tuple[pq.ParquetFile, list[int]]:
        hit = self._open.get(rel)
        if hit is not None:
            self._open.move_to_end(rel)
            return hit[1], hit[2]
        ctx = self.ds._parquet(rel, self.state.footers.get(rel, ""))
        pf = ctx.__enter__()
        meta = pf.metadata
        starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]).tolist()
        self._open[rel] = (ctx, pf, starts)
        while len(self._open) > 32:
            old, (octx, _, _) = self._open.popitem(last=False)
            self._group.pop(old, None)
            octx.__exit__(None, None, None)
        return pf, starts

    def read(self, r: _Run) -> pa.Table:
        try:
            pf, starts = self._file(r.path)
            hit = self._group.get(r.path)
            if hit is None or hit[0] != r.row_group:
                t = pf.read_row_group(r.row_group, columns=file_columns(GRASP_SCHEMA.names, pf.schema_arrow.names))
                t = _fill_missing(t.replace_schema_metadata(None), GRASP_SCHEMA)
                self._group[r.path] = hit = (r.row_group, t)
            t = hit[1].slice(r.row_start - starts[r.row_group], r.rows)
        except FileNotFoundError:
            raise CorruptShardError(f"{self.ds.p(r.path)} (shard {r.key}) is missing; nothing was compacted: "
                                    "run `dga-engine shards verify`, then `dga-engine shards repair`") from None
        except (OSError, pa.ArrowException, IndexError) as exc:
            raise CorruptShardError(
                f"{self.ds.p(r.path)} (shard {r.key}) cannot be read ({exc}); nothing was compacted: "
                "run `dga-engine shards verify`, then `dga-engine shards repair`"
            ) from exc
        if t.num_rows != r.rows:
            raise CorruptShardError(f"{self.ds.p(r.path)} (shard {r.key}) has fewer rows than recorded; nothing was "
                                    "compacted: run `dga-engine shards verify`")
        return t

    def close(self) -> None:
        for ctx, _, _ in self._open.values():
            ctx.__exit__(None, None, None)
        self._open.clear()
        self._group.clear()


def _first_of_each_id(table: pa.Table, what: str) -> pa.Table:
    """``table`` keeping the first row of each grasp_id (a repeated id is a producer bug: logged, dropped)."""
    n = table.num_rows
    if n < 2:
        return table
    ids = table.column("grasp_id")
    if pc.count_distinct(ids).as_py() == n:
        return table
    idx = pa.table({"i": pa.array(np.arange(n)), "g": ids}).group_by("g", use_threads=False).aggregate([("i", "min")])
    keep = np.zeros(n, dtype=bool)
    keep[idx.column("i_min").to_numpy()] = True
    log.warning("%s: dropped %d row(s) that repeat a grasp_id of the same table (ids are unique in a dataset)",
                what, n - int(keep.sum()))
    return table.filter(pa.array(keep))


def _fill_missing(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order; columns a v1 file lacks (refine fields) as nulls."""
    n = table.num_rows
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema.remove_metadata()).cast(schema)


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")


__all__ = [
    "Dataset", "StoreConfig", "ShardManifest", "ShardPart", "ObjectSpan", "DatasetInfo", "VerifyReport",
    "SchemaVersionError", "ManifestError", "CorruptShardError", "UnsafePathError", "LockHeld", "to_numpy", "to_torch",
    "conform", "check_version", "SUPPORTED_SCHEMA_VERSIONS",
]
