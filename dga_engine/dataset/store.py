"""The sharded grasp dataset: bounded Parquet shards, one manifest per shard, a derived summary.

Layout of ``<root>/datasets/<name>/`` (constants below)::

    meta/info.json                      summary rebuilt from the manifests after every commit
    manifests/<key>.json                the truth: one per shard (write key), naming its Parquet parts
    data/<part>.<write_id>.parquet      accepted grasps; <part> is <key>, or <key>-000, <key>-001, ...
    rejects/<key>.parquet               rejected grasps with their reason (REJECT_SCHEMA)
    candidates/<source>/<key>.parquet   unfiltered grasps waiting for the physics filter

Commit protocol of :meth:`Dataset.write_shard` (each file write goes to a hidden temporary name and is
renamed into place, see :func:`dga_engine.fs.atomic_open`):

1. every part is written under a name carrying a fresh ``write_id`` (never the name of a live file);
2. the manifest is written: this single rename is the commit; before it, readers see the previous
   manifest and its files, after it the new ones;
3. ``meta/info.json`` is rebuilt from the manifests;
4. the files of the replaced manifest are deleted.

A crash before 2 leaves unreferenced files (``verify`` warns, ``repair`` removes them); a crash
between 2 and 3 leaves a stale summary (``verify`` warns; :meth:`Dataset.info` and the next write
rebuild it). A file that no manifest names does not exist for any reader.

Inside a part, rows are sorted by ``object_id`` (stable) and each object is one row group, so
:meth:`Dataset.read_object` reads only that object's row groups, located through the manifests.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import hashlib
import json
import logging
import os
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dga_engine import __version__
from dga_engine import fs as fsio
from dga_engine.dataset.manifest import (
    DatasetInfo,
    ObjectSpan,
    SchemaVersionError,
    ShardManifest,
    ShardPart,
    build_info,
    check_version,
    column_stats,
    value_counts,
    SUPPORTED_SCHEMA_VERSIONS,
)
from dga_engine.dataset.verify import VerifyReport
from dga_engine.dataset.schema import (
    GRASP_SCHEMA,
    REJECT_REASONS,
    REJECT_SCHEMA,
    SCHEMA_VERSION,
    file_columns,
    pose_arrays,
    upgrade,
)
from dga_engine.layout import DEFAULT_DATASET, Layout, safe_name

log = logging.getLogger(__name__)
T = TypeVar("T")

# Paths inside a dataset folder.
INFO_FILE = "meta/info.json"
META_DIR = "meta"
DATA_DIR = "data"
MANIFESTS_DIR = "manifests"
REJECTS_DIR = "rejects"
CANDIDATES_DIR = "candidates"
PART_FILE = DATA_DIR + "/{part}.{write_id}.parquet"
MANIFEST_FILE = MANIFESTS_DIR + "/{key}.json"
REJECTS_FILE = REJECTS_DIR + "/{key}.parquet"
CANDIDATES_FILE = CANDIDATES_DIR + "/{source}/{key}.parquet"
LAYOUT = {"info": INFO_FILE, "manifest": MANIFEST_FILE, "data": PART_FILE, "rejects": REJECTS_FILE,
          "candidates": CANDIDATES_FILE}

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


@dataclass(frozen=True)
class StoreConfig:
    """How shards are written."""

    max_rows_per_shard: int = 500_000  # a larger table is split into parts <key>-000, <key>-001, ...
    max_bytes_per_shard: int = 256 * 2**20  # bound on a part's rows in memory (Arrow bytes, before compression)
    compression: str = "zstd"  # Parquet codec for every column
    compression_level: int = 3  # zstd level (3 = zstd's default: fast, good ratio)
    byte_stream_split: bool = True  # BYTE_STREAM_SPLIT for float columns (smaller files; all readers support it)


class ManifestError(RuntimeError):
    """A manifest cannot be read or does not describe its shard."""


class CorruptShardError(RuntimeError):
    """A committed shard file cannot be read (damaged or replaced after it was written)."""


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
            f"unexpected columns {extra}. Build tables with dga_engine.dataset.schema.pose_table (or select/cast to the schema)."
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
    """Pose arrays of a grasp table: translation (N,3), rotation (N,4) wxyz, joints (N,24), object_scale (N,); float32."""
    return pose_arrays(table)


def to_torch(table: pa.Table, device: Any = None) -> dict[str, Any]:
    """Like :func:`to_numpy` but torch float32 tensors (on ``device`` if given)."""
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) if device is not None else torch.from_numpy(np.ascontiguousarray(v))
            for k, v in to_numpy(table).items()}


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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


# ---------------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------------

class Dataset:
    """One dataset under ``<root>/datasets/<name>/``: write shards, rejects and candidates; read; verify."""

    def __init__(self, layout: Layout, name: str = DEFAULT_DATASET, config: StoreConfig | None = None) -> None:
        self.layout = layout
        self.name = safe_name(name)
        self.config = config or StoreConfig()
        self.path = layout.dataset(self.name)
        self._local = layout.is_local
        self._manifest_cache: dict[str, tuple[Any, ShardManifest]] = {}
        self._footer_cache: OrderedDict[str, pq.FileMetaData] = OrderedDict()  # part files never change

    def __repr__(self) -> str:
        return f"Dataset({self.path!r})"

    def p(self, rel: str) -> str:
        """Full path (or URL) of ``rel`` inside the dataset folder."""
        return f"{self.path}/{rel}"

    def exists(self) -> bool:
        return fsio.exists(self.p(MANIFESTS_DIR)) or fsio.exists(self.p(INFO_FILE))

    # --- writing -----------------------------------------------------------------------------------

    def write_shard(self, table: pa.Table, key: str, *, split: str | None = None) -> ShardManifest:
        """Write accepted grasps (GRASP_SCHEMA) as shard ``key``, replacing any shard of that key atomically.

        Rows are sorted by object_id (stable) and written one row group per object. A table larger
        than ``config.max_rows_per_shard`` / ``max_bytes_per_shard`` becomes parts ``key-000``, ``key-001``, ...,
        all recorded in the returned manifest. An empty table commits an empty shard (so a rerun that
        accepts nothing replaces what the key held before).
        """
        key = safe_name(key)
        if split is not None:
            split = safe_name(split)
        table = conform(table, GRASP_SCHEMA, f"write_shard({key!r})")
        manifests = self._manifests(strict=False)  # fails loudly on unknown versions before anything is written
        self._check_info_version()
        old = next((m for m in manifests if m.key == key), None)

        if table.num_rows:
            order = pc.sort_indices(table, sort_keys=[("object_id", "ascending")])  # stable: keeps input order per object
            table = table.take(order)
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

        manifest = ShardManifest(key=key, dataset=self.name, write_id=write_id, created_at=_now(),
                                 schema_version=SCHEMA_VERSION, parts=tuple(parts), split=split,
                                 engine_version=__version__)
        mpath = self.p(MANIFEST_FILE.format(key=key))
        fsio.write_bytes(mpath, _dumps(manifest.to_json()))  # the commit
        self._manifest_cache.pop(key, None)
        self.rebuild_info()
        if old is not None:
            live = {p.path for p in manifest.parts}
            for p in old.parts:
                if p.path not in live:
                    self._remove_quietly(self.p(p.path))
        log.info("committed shard %s: %d rows in %d part(s)", key, manifest.rows, len(parts))
        return manifest

    def _write_part(self, sub: pa.Table, spans: list[tuple[int, int]], name: str, rel: str, key: str,
                    write_id: str) -> ShardPart:
        schema = GRASP_SCHEMA.with_metadata({**GRASP_SCHEMA.metadata, b"dga_dataset": self.name.encode(),
                                            b"dga_shard": key.encode(), b"dga_part": name.encode(),
                                            b"dga_write_id": write_id.encode()})
        sink = pa.BufferOutputStream()
        kwargs = self._parquet_options(GRASP_SCHEMA)
        kwargs["sorting_columns"] = [pq.SortingColumn(GRASP_SCHEMA.get_field_index("object_id"))]
        with pq.ParquetWriter(sink, schema, **kwargs) as writer:
            for s, e in spans:  # one row group per object
                writer.write_table(sub.slice(s, e - s).replace_schema_metadata(schema.metadata), row_group_size=e - s)
        payload = sink.getvalue()
        fsio.write_bytes(self.p(rel), memoryview(payload))
        oids = sub.column("object_id")
        objects = tuple(ObjectSpan(str(oids[s].as_py()), g, s, e - s) for g, (s, e) in enumerate(spans))
        return ShardPart(name=name, path=rel, rows=sub.num_rows, bytes=payload.size, sha256=_sha256(memoryview(payload)),
                         row_groups=len(spans), objects=objects, rounds=value_counts(sub, "round"),
                         sources=value_counts(sub, "source"), stats=column_stats(sub))

    def delete_shard(self, key: str) -> bool:
        """Remove shard ``key`` (manifest first, then its files). Returns whether it existed."""
        key = safe_name(key)
        old = next((m for m in self._manifests(strict=False) if m.key == key), None)
        if old is None:
            return False
        fsio.remove(self.p(MANIFEST_FILE.format(key=key)))
        self._manifest_cache.pop(key, None)
        self.rebuild_info()
        for p in old.parts:
            self._remove_quietly(self.p(p.path))
        return True

    def write_rejects(self, table: pa.Table, key: str) -> str:
        """Write rejected grasps (REJECT_SCHEMA, a non-null ``reason`` from REJECT_REASONS) as ``rejects/<key>.parquet``.

        Atomic and idempotent per key: a rewrite replaces the file. Returns the file's path.
        """
        key = safe_name(key)
        table = conform(table, REJECT_SCHEMA, f"write_rejects({key!r})")
        unknown = sorted(set(table.column("reason").unique().to_pylist()) - set(REJECT_REASONS))
        if unknown:
            raise ValueError(f"write_rejects({key!r}): unknown reject reasons {unknown}; use one of {list(REJECT_REASONS)} "
                             "(add new reasons to dga_engine.dataset.schema.REJECT_REASONS)")
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
                                    write_statistics=[n for n in _STATS_COLUMNS if n in schema.names])
        opts["use_dictionary"] = False
        if cfg.byte_stream_split:
            opts["use_byte_stream_split"] = _FLOAT_COLUMNS
        return opts

    def _encode_plain(self, table: pa.Table) -> memoryview:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, row_group_size=65536, **self._parquet_options(table.schema))
        return memoryview(sink.getvalue())

    # --- the summary -------------------------------------------------------------------------------

    def rebuild_info(self) -> DatasetInfo:
        """Rebuild ``meta/info.json`` from the manifests and write it; returns it.

        A concurrent writer may overwrite it with an older view; each writer re-checks the manifest
        listing after writing and rebuilds again if it changed, so the last one to finish wins with a
        complete view. Whatever happens, the manifests stay the truth and ``verify`` flags a stale file.
        """
        info = None
        for _ in range(3):
            before = self._listing_stamp()
            info = self._build_info(self._manifests(strict=False))
            fsio.write_json(self.p(INFO_FILE), info.to_json())
            if before is None or self._listing_stamp() == before:
                break
        assert info is not None
        return info

    def _build_info(self, manifests: list[ShardManifest]) -> DatasetInfo:
        from dga_engine.conventions import POSE_CONVENTION

        return build_info(self.name, manifests, conventions=POSE_CONVENTION, schema=GRASP_SCHEMA, layout=LAYOUT,
                          updated_at=_now(), engine_version=__version__)

    def stored_info(self) -> DatasetInfo | None:
        """``meta/info.json`` as stored (None when absent). Unknown versions raise SchemaVersionError."""
        path = self.p(INFO_FILE)
        if not fsio.exists(path):
            return None
        try:
            raw = fsio.read_json(path)
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path} is unreadable ({exc}); rebuild it with `dga-engine shards verify --repair`") from exc
        return DatasetInfo.from_json(raw, where=path)

    def info(self) -> DatasetInfo:
        """The dataset summary: ``meta/info.json`` if it matches the manifests, else rebuilt from them (not written).

        Raises SchemaVersionError, naming the fix, when the dataset was written with an unknown version.
        """
        stored = self.stored_info()
        manifests = self._manifests()
        if stored is not None and info_matches(stored, manifests):
            return stored
        return self._build_info(manifests)

    def _check_info_version(self) -> None:
        path = self.p(INFO_FILE)
        if fsio.exists(path):
            try:
                raw = fsio.read_json(path)
            except (OSError, ValueError):
                return  # a damaged summary is rebuilt by this write
            DatasetInfo.from_json(raw, where=path)

    # --- manifests ---------------------------------------------------------------------------------

    def _manifest_names(self) -> list[str]:
        return [n for n in fsio.listdir(self.p(MANIFESTS_DIR)) if n.endswith(".json") and not n.startswith(".")]

    def _stat(self, path: str) -> Any:
        if not self._local:
            return None
        try:
            st = os.stat(path[len("file://"):] if path.startswith("file://") else path)
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _listing_stamp(self) -> Any:
        if not self._local:
            return None
        return tuple((n, self._stat(self.p(f"{MANIFESTS_DIR}/{n}"))) for n in self._manifest_names())

    def load_manifest(self, key: str) -> ShardManifest:
        """Read and check ``manifests/<key>.json`` (cached while the file is unchanged)."""
        path = self.p(MANIFEST_FILE.format(key=key))
        stamp = self._stat(path)
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
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise ManifestError(f"manifest {path} is unreadable ({type(exc).__name__}: {exc}); "
                                "run `dga-engine shards verify`, then rewrite that shard or remove the manifest") from exc
        if m.key != key:
            raise ManifestError(f"manifest {path} describes shard {m.key!r}, not {key!r}; rename or remove it")
        if stamp is not None:
            self._manifest_cache[key] = (stamp, m)
        return m

    def _manifests(self, strict: bool = True) -> list[ShardManifest]:
        """Every committed manifest, by key. A damaged manifest raises ManifestError when ``strict`` (readers:
        never return a silently incomplete dataset); writers pass ``strict=False`` so one damaged shard does
        not block the others (it is logged, and reported by ``verify``). Unknown versions always raise."""
        keys = [n[: -len(".json")] for n in self._manifest_names()]
        live = set(keys)
        for k in list(self._manifest_cache):
            if k not in live:
                del self._manifest_cache[k]

        def load(k: str) -> ShardManifest | None:
            try:
                return self.load_manifest(k)
            except FileNotFoundError:  # deleted between listing and reading
                return None
            except ManifestError as exc:
                if strict:
                    raise
                log.warning("skipping damaged shard %s: %s", k, exc)
                return None

        if self._local or len(keys) < 8:
            loaded = [load(k) for k in keys]
        else:  # object stores: overlap the round trips
            with ThreadPoolExecutor(max_workers=16) as pool:
                loaded = list(pool.map(load, keys))
        return [m for m in loaded if m is not None]

    def shards(self) -> list[ShardManifest]:
        """The committed shards, sorted by key (a Parquet file no manifest names does not exist)."""
        return self._manifests()

    def shard(self, name: str) -> ShardManifest:
        """The manifest of shard ``name`` (a key, or a part name such as ``key-001``); KeyError when absent."""
        for m in self._manifests():
            if m.key == name:
                return m
        for m in self._manifests():
            if any(p.name == name for p in m.parts):
                return m
        raise KeyError(f"no shard {name!r} in dataset {self.name!r} (see `dga-engine shards ls`)")

    def files(self) -> list[str]:
        """Full paths of every committed Parquet part (for DuckDB, HF ``datasets``, data loaders)."""
        return [self.p(p.path) for m in self._manifests() for p in m.parts]

    def object_ids(self) -> list[str]:
        """Distinct object ids over all shards, sorted."""
        return sorted({o.object_id for m in self._manifests() for p in m.parts for o in p.objects})

    # --- reading -----------------------------------------------------------------------------------

    @contextmanager
    def _parquet(self, rel: str) -> Iterator[pq.ParquetFile]:
        path = self.p(rel)
        meta = self._footer_cache.get(rel)
        if self._local:
            pf = pq.ParquetFile(path[len("file://"):] if path.startswith("file://") else path, metadata=meta)
            try:
                yield pf
            finally:
                pf.close()
        else:
            fs, p = fsio.filesystem(path)
            with fs.open(p, "rb") as fh:
                pf = pq.ParquetFile(fh, metadata=meta)
                yield pf
        if meta is None:
            self._footer_cache[rel] = pf.metadata
            while len(self._footer_cache) > 256:
                self._footer_cache.popitem(last=False)
        else:
            self._footer_cache.move_to_end(rel)

    def _retrying(self, fn: Callable[[], T]) -> T:
        for attempt in range(_MAX_RETRIES + 1):
            try:
                return fn()
            except FileNotFoundError:
                if attempt == _MAX_RETRIES:
                    raise
                self._manifest_cache.clear()  # a concurrent rewrite replaced a shard: re-read the manifests
        raise AssertionError("unreachable")

    def read(self, object_ids: Iterable[str] | str | None = None, rounds: Iterable[int] | int | None = None,
             sources: Iterable[str] | str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Accepted grasps, optionally only of some objects / rounds / sources, optionally only some columns.

        Object selection reads only the matching row groups; round and source selection skip parts
        that hold none of them (from the manifests) and filter the rest.
        """
        oids = None if object_ids is None else ({object_ids} if isinstance(object_ids, str) else set(object_ids))
        rset = None if rounds is None else ({int(rounds)} if isinstance(rounds, (int, np.integer)) else {int(r) for r in rounds})
        sset = None if sources is None else ({sources} if isinstance(sources, str) else set(sources))
        if columns is not None:
            unknown = [c for c in columns if c not in GRASP_SCHEMA.names]
            if unknown:
                raise ValueError(f"unknown columns {unknown}; the grasp schema has {GRASP_SCHEMA.names}")
            out_cols = list(columns)
        else:
            out_cols = list(GRASP_SCHEMA.names)
        need = list(out_cols) + [c for c, s in (("round", rset), ("source", sset)) if s is not None and c not in out_cols]
        out_schema = pa.schema([GRASP_SCHEMA.field(c) for c in out_cols], metadata=GRASP_SCHEMA.metadata)
        read_schema = pa.schema([GRASP_SCHEMA.field(c) for c in need], metadata=GRASP_SCHEMA.metadata)

        def run() -> pa.Table:
            tables = []
            for m in self._manifests():
                for part in m.parts:
                    if rset is not None and not rset & {int(r) for r in part.rounds}:
                        continue
                    if sset is not None and not sset & set(part.sources):
                        continue
                    if oids is not None:
                        groups = [o.row_group for o in part.objects if o.object_id in oids]
                        if not groups:
                            continue
                    else:
                        groups = None
                    try:
                        with self._parquet(part.path) as pf:
                            cols = file_columns(need, pf.schema_arrow.names)  # a v1 part has no refine columns
                            t = pf.read(columns=cols) if groups is None else pf.read_row_groups(groups, columns=cols)
                    except FileNotFoundError:
                        raise
                    except (OSError, pa.ArrowException) as exc:
                        raise CorruptShardError(
                            f"part {part.name} of shard {m.key} ({self.p(part.path)}) cannot be read ({exc}); "
                            f"run `dga-engine shards verify`, then rewrite shard {m.key} or restore the file") from exc
                    t = _fill_missing(t.replace_schema_metadata(None), read_schema)
                    if rset is not None:
                        t = t.filter(pc.is_in(t.column("round"), pa.array(sorted(rset), pa.int32())))
                    if sset is not None:
                        t = t.filter(pc.is_in(t.column("source"), pa.array(sorted(sset), pa.string())))
                    tables.append(t.select(out_cols))
            if not tables:
                return out_schema.empty_table()
            return pa.concat_tables(tables).replace_schema_metadata(GRASP_SCHEMA.metadata)

        return self._retrying(run)

    def read_object(self, object_id: str, columns: Sequence[str] | None = None) -> pa.Table:
        """All accepted grasps of one object, reading only its row groups (found through the manifests)."""
        return self.read(object_ids=[object_id], columns=columns)

    def iter_batches(self, columns: Sequence[str] | None = None) -> Iterator[pa.Table]:
        """One table per committed part, in key order (streams the dataset without holding it in memory)."""
        cols = list(columns) if columns is not None else None
        for m in self._manifests():
            for part in m.parts:
                with self._parquet(part.path) as pf:
                    t = upgrade(pf.read(columns=None if cols is None else file_columns(cols, pf.schema_arrow.names)))
                yield t if cols is None else _fill_missing(t, pa.schema([GRASP_SCHEMA.field(c) for c in cols]))

    def reject_keys(self) -> list[str]:
        return [n[: -len(".parquet")] for n in fsio.listdir(self.p(REJECTS_DIR))
                if n.endswith(".parquet") and not n.startswith(".")]

    def rejects(self, keys: Iterable[str] | None = None) -> pa.Table:
        """Rejected grasps (REJECT_SCHEMA) of all keys, or of ``keys``."""
        keys = self.reject_keys() if keys is None else [safe_name(k) for k in keys]
        return self._read_plain([self.p(REJECTS_FILE.format(key=k)) for k in keys], REJECT_SCHEMA)

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

    def _read_plain(self, paths: list[str], schema: pa.Schema) -> pa.Table:
        tables = []
        for path in paths:
            if self._local:
                t = pq.read_table(path[len("file://"):] if path.startswith("file://") else path)
            else:
                fs, p = fsio.filesystem(path)
                with fs.open(p, "rb") as fh:
                    t = pq.read_table(fh)
            tables.append(conform(t, schema, path))
        return pa.concat_tables(tables) if tables else schema.empty_table()

    # --- verification and queries ------------------------------------------------------------------

    def verify(self, checksums: bool = True) -> VerifyReport:
        """Check every shard against its manifest, the summary against the manifests; see :mod:`.verify`."""
        from dga_engine.dataset.verify import verify_dataset

        return verify_dataset(self, checksums=checksums)

    def repair(self, min_age_s: float = 3600.0) -> dict[str, Any]:
        """Rebuild ``meta/info.json`` and delete unreferenced files older than ``min_age_s`` (see :mod:`.verify`)."""
        from dga_engine.dataset.verify import repair_dataset

        return repair_dataset(self, min_age_s=min_age_s)

    def query(self, sql: str) -> pa.Table:
        """Run DuckDB SQL with views ``grasps`` (committed shards), ``rejects`` and ``shards`` (one row per part)."""
        from dga_engine.dataset.query import run_query

        return run_query(self, sql)

    # --- helpers -----------------------------------------------------------------------------------

    def _remove_quietly(self, path: str) -> None:
        try:
            fsio.remove(path)
        except OSError as exc:  # an unreferenced file: verify reports it, repair removes it later
            log.warning("could not remove %s: %s", path, exc)


def info_matches(info: DatasetInfo, manifests: list[ShardManifest]) -> bool:
    """Whether a stored summary lists exactly these shards (key, write id, rows)."""
    have = {(s["key"], s["write_id"], int(s["rows"])) for s in info.shards}
    want = {(m.key, m.write_id, m.rows) for m in manifests}
    return have == want


def _fill_missing(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns in its order; columns a v1 file lacks (refine fields) as nulls."""
    n = table.num_rows
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type) for f in schema]
    return pa.Table.from_arrays(cols, schema=schema.remove_metadata()).cast(schema)


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")

__all__ = [
    "Dataset", "StoreConfig", "ShardManifest", "ShardPart", "ObjectSpan", "DatasetInfo", "VerifyReport",
    "SchemaVersionError", "ManifestError", "CorruptShardError", "to_numpy", "to_torch", "conform", "info_matches",
    "INFO_FILE", "DATA_DIR", "MANIFESTS_DIR", "REJECTS_DIR", "CANDIDATES_DIR", "PART_FILE", "MANIFEST_FILE",
    "REJECTS_FILE", "CANDIDATES_FILE", "LAYOUT", "check_version", "SUPPORTED_SCHEMA_VERSIONS",
]
