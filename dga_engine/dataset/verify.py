"""Verification and repair of a dataset folder.

``verify`` checks, without changing anything:

* every manifest and ``meta/snapshot.json`` read, have known versions, and name only files directly
  under ``data/`` (errors otherwise);
* every file they name exists, has the recorded size, sha256 and footer sha256, a readable footer, the
  grasp schema, the recorded row count and one row group per object (errors otherwise);
* each pending part's object spans, and the object index of the snapshot, match the row groups: the
  right object in each, and every row of a compacted file accounted for exactly once (errors otherwise);
* grasp_id is unique over the live rows (an error names the repeated ids);
* ``meta/info.json`` has a known version (error) and summarises the current snapshot (stale, missing or
  old-format summaries are warnings: it is derived and rewritten by compaction or ``repair``);
* files in ``data/`` and indexes in ``meta/`` that nothing names, manifests already folded into the
  snapshot, and temporary files are warnings: readers never see them;
* rejects and candidate files have readable footers and their schema (errors otherwise).

Each error that a rerun can fix lists the shard ``keys`` it affects; ``dga-engine shards repair``
(:func:`dga_engine.dataset.repair.rerun_damaged`) uses them. ``repair`` here only tidies: it rewrites the
summary and deletes unreferenced files older than a grace age (younger ones may belong to a write in progress).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dga_engine import fs as fsio
from dga_engine.dataset.manifest import ManifestError, SchemaVersionError
from dga_engine.dataset.paths import (
    CANDIDATES_DIR,
    DATA_DIR,
    INFO_FILE,
    LOCK_FILE,
    MANIFESTS_DIR,
    REJECTS_DIR,
    SNAPSHOT_FILE,
)
from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA, upgrade

if TYPE_CHECKING:
    from dga_engine.dataset.store import Dataset

_CHUNK = 8 * 2**20


@dataclass
class VerifyReport:
    """The outcome of :meth:`Dataset.verify`.

    ``bad`` holds one entry per problem: ``{"shard": name, "problem": text, "level": "error" | "warning"}``,
    where name is a shard key, a part name (``key-001``), ``meta/info.json``, a ``data/...`` file,
    ``rejects/<key>`` or ``candidates/<source>/<key>``. ``ok`` is true when there is no error.
    """

    ok: bool  # no errors (warnings allowed)
    shards: int  # shards (manifests) checked
    rows: int  # rows counted in the shard files that could be read
    bad: list[dict[str, str]] = field(default_factory=list)

    @property
    def errors(self) -> list[dict[str, str]]:
        return [b for b in self.bad if b["level"] == "error"]

    @property
    def warnings(self) -> list[dict[str, str]]:
        return [b for b in self.bad if b["level"] == "warning"]

    def bad_shards(self) -> list[str]:
        """Names with at least one error, in order of first appearance."""
        return list(dict.fromkeys(b["shard"] for b in self.errors))

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "shards": self.shards, "rows": self.rows, "bad": list(self.bad)}


def _size(path: str) -> int:
    local = fsio.local_path(path)
    if local is not None:
        return os.path.getsize(local)
    fs, p = fsio.filesystem(path)
    return int(fs.size(p))


def _open(path: str):
    """A binary file object for a local path or any fsspec URL."""
    local = fsio.local_path(path)
    if local is not None:
        return open(local, "rb")
    fs, p = fsio.filesystem(path)
    return fs.open(p, "rb")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with _open(path) as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _footer(path: str) -> pq.ParquetFile:
    local = fsio.local_path(path)
    if local is not None:
        return pq.ParquetFile(local)
    fs, p = fsio.filesystem(path)
    with fs.open(p, "rb") as fh:
        return pq.ParquetFile(pa.BufferReader(fh.read()))


def _tail(path: str, meta: pq.FileMetaData) -> bytes:
    """The footer bytes (metadata, length, magic) of a Parquet file."""
    with _open(path) as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(size - 8)
        n = int.from_bytes(fh.read(4), "little")
        fh.seek(size - 8 - n)
        return fh.read(n + 8)


def _schema_problem(found: pa.Schema, want: pa.Schema) -> str | None:
    found = upgrade(found.empty_table()).schema  # a v1 file (no refine fields) is fine
    if found.equals(want, check_metadata=False):
        return None
    diffs = []
    for f in want:
        if f.name not in found.names:
            diffs.append(f"missing {f.name}")
        elif found.field(f.name).type != f.type or found.field(f.name).nullable != f.nullable:
            g = found.field(f.name)
            diffs.append(
                f"{f.name}: {g.type}{'' if g.nullable else ' not null'} (want "
                f"{f.type}{'' if f.nullable else ' not null'})"
            )
    diffs += [f"unexpected {n}" for n in found.names if n not in want.names]
    if not diffs:
        diffs.append("column order differs")
    return "schema differs from the grasp schema: " + "; ".join(diffs)


def _check_file(ds: Dataset, rel: str, *, name: str, owner: str, rows: int, row_groups: int,
                sha256: str, size: int, footer_sha256: str, checksums: bool,
                err: Callable[[str, str, list[str]], None], keys: list[str]) -> pq.FileMetaData | None:
    """Size, checksum, footer and schema of one data file; its footer metadata, or None after an error."""
    path = ds.p(rel)
    fix = (f"rewrite shard {keys[0]} or restore the file" if len(keys) == 1 else "restore the file") + \
        "; `dga-engine shards repair` reruns the units that wrote it"
    try:
        found = _size(path)
    except FileNotFoundError:
        err(name, f"{rel} is missing (named by {owner}); {fix}", keys)
        return None
    if found != size:
        err(name, f"{rel} has {found} bytes, {owner} says {size}: the file was truncated or replaced; {fix}", keys)
        return None
    if checksums:
        digest = _sha256_file(path)
        if digest != sha256:
            err(
                name,
                f"{rel} sha256 {digest[:12]}... does not match {owner} ({sha256[:12]}...): the file is corrupt; {fix}",
                keys,
            )
            return None
    try:
        pf = _footer(path)
        meta = pf.metadata
        schema = pf.schema_arrow
    except (OSError, pa.ArrowException) as exc:
        err(name, f"{rel} is not a readable Parquet file ({exc}); {fix}", keys)
        return None
    if footer_sha256:
        try:
            tail = _tail(path, meta)
        except OSError as exc:
            tail = None
            err(name, f"{rel}: cannot read its footer ({exc})", keys)
        if tail is not None and hashlib.sha256(tail).hexdigest() != footer_sha256:
            err(name, f"{rel}: its footer does not match the sha256 recorded in {owner}", keys)
            return None
    problem = _schema_problem(schema, GRASP_SCHEMA)
    if problem:
        err(name, f"{rel}: {problem}", keys)
    if meta.num_rows != rows:
        err(name, f"{rel} has {meta.num_rows} rows, {owner} says {rows}", keys)
    if meta.num_row_groups != row_groups:
        err(name, f"{rel} has {meta.num_row_groups} row groups, {owner} says {row_groups} (want one per object)", keys)
        return None
    return meta


def _group_object(meta: pq.FileMetaData, g: int) -> tuple[Any, Any] | None:
    st = meta.row_group(g).column(GRASP_SCHEMA.get_field_index("object_id")).statistics
    return (st.min, st.max) if st is not None and st.has_min_max else None


def verify_dataset(ds: Dataset, checksums: bool = True) -> VerifyReport:
    found = _Findings()
    state = ds._state(strict=False, report_versions=True)
    for key, why in state.damaged.items():
        if key == "meta/snapshot.json":
            found.err(SNAPSHOT_FILE, why + "; `dga-engine shards repair` drops the snapshot's shards and reruns them")
        else:
            found.err(key, why, [key])
    rows = _check_pending(ds, state, checksums, found)
    rows += _check_snapshot(ds, state, checksums, found)
    if not found.has_errors():  # grasp_id is unique within the dataset
        _check_unique_ids(ds, state, found)
    _check_unseen_files(ds, found)
    _check_summary(ds, state.snapshot, found)
    _check_side_tables(ds, found)

    n_keys = sum(1 for m in state.deltas.values() if not m.deleted) + len(state.damaged)
    if state.index is not None:
        n_keys += len(set(state.index.key.tolist()) - set(state.dead))
    shards = n_keys - (1 if "meta/snapshot.json" in state.damaged else 0)
    return VerifyReport(ok=not found.has_errors(), shards=shards, rows=rows, bad=found.bad)


@dataclass
class _Findings:
    """The problems found so far, and the files something names (the rest of data/ is unreferenced)."""

    bad: list[dict[str, Any]] = field(default_factory=list)
    referenced: set[str] = field(default_factory=set)

    def err(self, shard: str, problem: str, keys: list[str] | None = None) -> None:
        self.bad.append({"shard": shard, "problem": problem, "level": "error",
                         **({"keys": list(keys)} if keys else {})})

    def warn(self, shard: str, problem: str) -> None:
        self.bad.append({"shard": shard, "problem": problem, "level": "warning"})

    def has_errors(self) -> bool:
        return any(b["level"] == "error" for b in self.bad)


def _check_pending(ds: Dataset, state: Any, checksums: bool, found: _Findings) -> int:
    """Pending shards: each part against its manifest (and folded manifests left behind); rows read."""
    err, warn, referenced = found.err, found.warn, found.referenced
    rows = 0
    for m in state.deltas.values():
        for part in m.parts:
            name = part.name
            if part.path in referenced:
                err(name, f"{part.path} is named by more than one manifest part", [m.key])
            referenced.add(part.path)
            meta = _check_file(ds, part.path, name=name, owner=f"manifest {m.key}", rows=part.rows,
                               row_groups=part.row_groups, sha256=part.sha256, size=part.bytes,
                               footer_sha256=part.footer_sha256, checksums=checksums, err=err, keys=[m.key])
            if meta is None:
                continue
            rows += meta.num_rows
            if part.row_groups != len(part.objects):
                err(
                    name,
                    f"{part.path}: manifest names {len(part.objects)} objects for {part.row_groups} row groups",
                    [m.key],
                )
                continue
            start = 0
            for span in part.objects:
                rg = meta.row_group(span.row_group)
                if rg.num_rows != span.rows or span.row_start != start:
                    err(
                        name,
                        f"{part.path}: row group {span.row_group} has {rg.num_rows} rows from row {start}, manifest "
                        f"says {span.rows} from row {span.row_start} for object {span.object_id}",
                        [m.key],
                    )
                    break
                mm = _group_object(meta, span.row_group)
                if mm is not None and not (mm[0] == mm[1] == span.object_id):
                    err(name, f"{part.path}: row group {span.row_group} holds object ids {mm[0]!r}..{mm[1]!r}, "
                              f"manifest says {span.object_id!r}", [m.key])
                    break
                start += rg.num_rows
    for k in state.folded:
        warn(
            f"{MANIFESTS_DIR}/{k}.json",
            "already folded into the snapshot by a compaction that was interrupted; "
            "invisible to readers (the next compaction or `shards verify --repair` removes it)",
        )

    return rows


def _check_snapshot(ds: Dataset, state: Any, checksums: bool, found: _Findings) -> int:
    """The snapshot: each compacted file against snapshot.json, and the object index against the files; live
    rows counted."""
    err, referenced = found.err, found.referenced
    rows = 0
    snap, index = state.snapshot, state.index
    if snap is not None and index is not None:
        referenced.add(snap.index)
        keys_of_file: dict[int, list[str]] = {}
        for i in range(len(index)):
            keys_of_file.setdefault(int(index.file[i]), []).append(str(index.key[i]))
        for f_i, f in enumerate(snap.files):
            referenced.add(f.path)
            file_keys = sorted(set(keys_of_file.get(f_i, [])))
            meta = _check_file(ds, f.path, name=f.path, owner=SNAPSHOT_FILE, rows=f.rows, row_groups=f.row_groups,
                               sha256=f.sha256, size=f.bytes, footer_sha256=f.footer_sha256, checksums=checksums,
                               err=err, keys=file_keys)
            if meta is None:
                continue
            pos = np.flatnonzero(index.file == f_i)
            covered = np.zeros(meta.num_row_groups, dtype=np.int64)
            problem = None
            for i in pos.tolist():
                g = int(index.row_group[i])
                if g >= meta.num_row_groups:
                    problem = f"the object index points at row group {g}, the file has {meta.num_row_groups}"
                    break
                rg_rows = meta.row_group(g).num_rows
                if int(index.group_offset[i]) + int(index.rows[i]) > rg_rows:
                    problem = (f"the object index puts {int(index.rows[i])} rows of {index.key[i]} past the end of "
                               f"row group {g}")
                    break
                mm = _group_object(meta, g)
                if mm is not None and not (mm[0] == mm[1] == index.object_id[i]):
                    problem = (f"row group {g} holds object ids {mm[0]!r}..{mm[1]!r}, the object index says "
                               f"{index.object_id[i]!r}")
                    break
                covered[g] += int(index.rows[i])
            if problem is None:
                want = np.array([meta.row_group(g).num_rows for g in range(meta.num_row_groups)], dtype=np.int64)
                if not np.array_equal(covered, want):
                    problem = "the object index does not account for every row of the file exactly once"
            if problem:
                err(f.path, f"{f.path}: {problem}; `dga-engine shards repair`", file_keys)
            else:
                rows += int(index.rows[pos[np.isin(pos, state.live_entries())]].sum()) if len(pos) else 0

    return rows


def _check_unique_ids(ds: Dataset, state: Any, found: _Findings) -> None:
    dups = _duplicate_ids(ds, state)
    if dups:
        sample = ", ".join(dups[:5])
        found.err(
            "grasp_id",
            f"{len(dups)} grasp id(s) occur more than once ({sample}{', ...' if len(dups) > 5 else ''}); "
            "ids must be unique in a dataset: delete or rewrite one of the shards holding them",
        )


def _check_unseen_files(ds: Dataset, found: _Findings) -> None:
    """Files readers never see: unreferenced data files and indexes, temporary files."""
    warn, referenced = found.warn, found.referenced
    for n in fsio.listdir(ds.p(DATA_DIR)):
        rel = f"{DATA_DIR}/{n}"
        if n.startswith(".") and n.endswith(".tmp"):
            warn(
                rel,
                "temporary file left by an interrupted write; invisible to readers (`shards verify --repair` removes "
                "it)",
            )
        elif rel not in referenced:
            warn(rel, "not named by any manifest or the snapshot (left by an interrupted or superseded write or "
                      "compaction); invisible to readers (`shards verify --repair` removes it)")
    for n in fsio.listdir(ds.p("meta")):
        rel = f"meta/{n}"
        if n.startswith("index.") and n.endswith(".parquet") and rel not in referenced:
            warn(
                rel,
                "an object index the snapshot does not name (left by an interrupted compaction); `shards verify "
                "--repair` removes it",
            )
    for d in (MANIFESTS_DIR, "meta", REJECTS_DIR):
        for n in fsio.listdir(ds.p(d)):
            if n.startswith(".") and n.endswith(".tmp"):
                warn(f"{d}/{n}", "temporary file left by an interrupted write; invisible to readers")



def _check_summary(ds: Dataset, snap: Any, found: _Findings) -> None:
    """The summary: derived; current when it names the current snapshot."""
    err, warn = found.err, found.warn
    try:
        stored = ds.stored_info()
    except SchemaVersionError as exc:
        err(INFO_FILE, str(exc))
        stored = None
    except ManifestError as exc:
        warn(INFO_FILE, str(exc))
        stored = None
    else:
        if stored is None:
            if snap is not None:
                warn(INFO_FILE, "missing; the next compaction or `shards verify --repair` writes it")
        elif stored.info_version < 2:
            warn(INFO_FILE, "written by an older dga-engine (it lists every shard); `dga-engine shards compact` "
                            "or `shards verify --repair` rewrites it")
        elif stored.snapshot != (snap.id if snap else None):
            warn(INFO_FILE, "stale: it summarises another snapshot than meta/snapshot.json (an interrupted "
                            "compaction); readers use the snapshot; `shards verify --repair` rewrites it")



def _check_side_tables(ds: Dataset, found: _Findings) -> None:
    """Rejects and candidates: footers and schemas."""
    err = found.err

    def check_table(rel: str, schema: pa.Schema, name: str, what: str, keys: list[str] | None) -> None:
        try:
            problem = _schema_problem(_footer(ds.p(rel)).schema_arrow, schema)
        except (OSError, pa.ArrowException) as exc:
            problem = f"not a readable Parquet file ({exc})"
        if problem:
            err(name, f"{rel}: {problem}; rewrite these {what}" + (" (`dga-engine shards repair` reruns the unit)"
                                                                  if keys else ""), keys)

    for key in ds.reject_keys():
        check_table(f"{REJECTS_DIR}/{key}.parquet", REJECT_SCHEMA, f"{REJECTS_DIR}/{key}", "rejects", [key])
    for source in ds.candidate_sources():
        for key in ds.candidate_keys(source):
            check_table(f"{CANDIDATES_DIR}/{source}/{key}.parquet", GRASP_SCHEMA,
                        f"{CANDIDATES_DIR}/{source}/{key}", "candidates", None)


def _duplicate_ids(ds: Dataset, state: Any) -> list[str]:
    """grasp ids that occur more than once among the live rows (streams the id column, one file at a time).

    Each id is reduced to a 64-bit hash (blake2b) and only the hashes are kept: 27 MB for 3.4M rows. Equal
    hashes are then compared exactly.
    """
    runs = ds._runs(state)
    by_file: dict[str, list[Any]] = {}
    for r in runs:
        by_file.setdefault(r.path, []).append(r)
    hashes = []
    for file_runs in by_file.values():
        for t in ds._read_runs(file_runs, ["grasp_id"], state):
            hashes.append(_hash64(t.column("grasp_id")))
    if not hashes:
        return []
    h = np.concatenate(hashes)
    s = np.sort(h)
    suspects = set(s[1:][s[1:] == s[:-1]].tolist())
    if not suspects:
        return []
    seen: dict[str, int] = {}
    for file_runs in by_file.values():
        for t in ds._read_runs(file_runs, ["grasp_id"], state):
            col = t.column("grasp_id")
            mask = np.isin(_hash64(col), np.fromiter(suspects, dtype=np.uint64))
            for g in col.filter(pa.array(mask)).to_pylist():
                seen[g] = seen.get(g, 0) + 1
    return sorted(g for g, n in seen.items() if n > 1)


def _hash64(col: Any) -> np.ndarray:
    arr = col.combine_chunks() if hasattr(col, "combine_chunks") else col
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False)
    if len(arr) and arr.null_count == 0 and lengths.min() == lengths.max() and lengths[0] % 8 == 0 and arr.offset == 0:
        width = int(lengths[0])
        offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1)
        data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[0] + width * len(arr)]
        words = data.view("<u8").reshape(len(arr), width // 8)
        h = np.full(len(arr), 1469598103934665603, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(words.shape[1]):  # FNV-style mix of 8-byte words: fast and well spread for hex ids
                h = (h ^ words[:, j]) * np.uint64(1099511628211)
                h ^= h >> np.uint64(29)
        return h
    return np.fromiter((int.from_bytes(hashlib.blake2b(str(g).encode(), digest_size=8).digest(), "little")
                        for g in arr.to_pylist()), dtype=np.uint64, count=len(arr))


def _age_s(path: str) -> float | None:
    local = fsio.local_path(path)
    try:
        if local is not None:
            return time.time() - os.path.getmtime(local)
        fs, p = fsio.filesystem(path)
        return time.time() - fs.modified(p).timestamp()
    except (OSError, NotImplementedError, AttributeError, ValueError):
        return None


def repair_dataset(ds: Dataset, min_age_s: float = 3600.0) -> dict[str, Any]:
    """Rewrite ``meta/info.json``; delete unreferenced/temporary files and folded manifests at least ``min_age_s``
    old."""
    with ds._commit_lock("repair"):
        state = ds._state(strict=False)
        if state.damaged:  # files a damaged manifest or snapshot names look unreferenced: delete nothing
            return {"info_rebuilt": False, "removed": [], "kept_young": [],
                    "refused": f"{', '.join(sorted(state.damaged))} cannot be read; nothing was removed "
                               "(`dga-engine shards repair` rebuilds damaged shards)"}
        ds.rebuild_info()
        referenced = {p.path for m in state.deltas.values() for p in m.parts}
        if state.snapshot is not None:
            referenced |= {f.path for f in state.snapshot.files} | {state.snapshot.index}
        candidates = [f"{DATA_DIR}/{n}" for n in fsio.listdir(ds.p(DATA_DIR)) if f"{DATA_DIR}/{n}" not in referenced]
        candidates += [f"meta/{n}" for n in fsio.listdir(ds.p("meta"))
                       if n.startswith("index.") and n.endswith(".parquet") and f"meta/{n}" not in referenced]
        candidates += [f"{MANIFESTS_DIR}/{k}.json" for k in state.folded]
        for d in (MANIFESTS_DIR, "meta", REJECTS_DIR):
            candidates += [f"{d}/{n}" for n in fsio.listdir(ds.p(d)) if n.startswith(".") and n.endswith(".tmp")]
        removed, kept = [], []
        for rel in candidates:
            if rel == LOCK_FILE:
                continue
            age = _age_s(ds.p(rel))
            if (age is not None and age >= min_age_s) or min_age_s <= 0:
                fsio.remove(ds.p(rel))
                removed.append(rel)
            else:
                kept.append(rel)
    return {"info_rebuilt": True, "removed": removed, "kept_young": kept}
