"""Verification and repair of a dataset folder.

``verify`` checks, without changing anything:

* every manifest reads and has a known version (errors otherwise);
* every part it names exists inside ``data/``, has the recorded size and sha256, a readable footer,
  exactly the grasp schema, the recorded row count, one row group per object span with the recorded
  rows, and row-group statistics that name the recorded object (errors otherwise);
* ``meta/info.json`` has a known version (error) and lists exactly the committed shards (a stale or
  missing summary is a warning: it is derived and rebuilt by the next write or by ``repair``);
* files in ``data/`` that no manifest names, and temporary files left by interrupted writes, are
  warnings: readers never see them;
* rejects and candidate files have readable footers and their schema (errors otherwise).

``repair`` rebuilds the summary and deletes unreferenced and temporary files older than a grace age
(younger ones may belong to a write in progress).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dga_engine import fs as fsio
from dga_engine.dataset.manifest import SchemaVersionError
from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA, upgrade
from dga_engine.layout import UnsafeNameError, safe_name

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


def _local_path(path: str) -> str | None:
    if path.startswith("file://"):
        return path[len("file://"):]
    return None if "://" in path else path


def _size(path: str) -> int:
    local = _local_path(path)
    if local is not None:
        return os.path.getsize(local)
    fs, p = fsio.filesystem(path)
    return int(fs.size(p))


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    local = _local_path(path)
    if local is not None:
        fh = open(local, "rb")
    else:
        fs, p = fsio.filesystem(path)
        fh = fs.open(p, "rb")
    with fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _footer(path: str) -> pq.ParquetFile:
    local = _local_path(path)
    if local is not None:
        return pq.ParquetFile(local)
    fs, p = fsio.filesystem(path)
    with fs.open(p, "rb") as fh:
        return pq.ParquetFile(pa.BufferReader(fh.read()))


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
            diffs.append(f"{f.name}: {g.type}{'' if g.nullable else ' not null'} (want {f.type}{'' if f.nullable else ' not null'})")
    diffs += [f"unexpected {n}" for n in found.names if n not in want.names]
    if not diffs:
        diffs.append("column order differs")
    return "schema differs from the grasp schema: " + "; ".join(diffs)


def verify_dataset(ds: "Dataset", checksums: bool = True) -> VerifyReport:
    from dga_engine.dataset.store import (CANDIDATES_DIR, DATA_DIR, INFO_FILE, MANIFESTS_DIR, REJECTS_DIR,
                                          ManifestError, info_matches)

    bad: list[dict[str, str]] = []

    def err(shard: str, problem: str) -> None:
        bad.append({"shard": shard, "problem": problem, "level": "error"})

    def warn(shard: str, problem: str) -> None:
        bad.append({"shard": shard, "problem": problem, "level": "warning"})

    manifests = []
    keys = [n[: -len(".json")] for n in fsio.listdir(ds.p(MANIFESTS_DIR)) if n.endswith(".json") and not n.startswith(".")]
    for key in keys:
        try:
            manifests.append(ds.load_manifest(key))
        except FileNotFoundError:
            continue
        except (SchemaVersionError, ManifestError) as exc:
            err(key, str(exc))

    rows = 0
    referenced: set[str] = set()
    for m in manifests:
        for part in m.parts:
            name = part.name
            rel = part.path
            try:
                if not rel.startswith(DATA_DIR + "/") or rel.count("/") != 1:
                    raise UnsafeNameError(rel)
                safe_name(rel.split("/", 1)[1])
            except UnsafeNameError:
                err(name, f"manifest {m.key} names {rel!r}, which is not a file directly under {DATA_DIR}/; "
                          "the manifest was edited or damaged: rewrite the shard")
                continue
            if rel in referenced:
                err(name, f"{rel} is named by more than one manifest part")
            referenced.add(rel)
            path = ds.p(rel)
            try:
                size = _size(path)
            except FileNotFoundError:
                err(name, f"{rel} is missing (named by manifest {m.key}); rewrite shard {m.key} or restore the file")
                continue
            if size != part.bytes:
                err(name, f"{rel} has {size} bytes, manifest says {part.bytes}: the file was truncated or replaced; "
                          f"rewrite shard {m.key}")
                continue
            if checksums:
                digest = _sha256_file(path)
                if digest != part.sha256:
                    err(name, f"{rel} sha256 {digest[:12]}... does not match the manifest ({part.sha256[:12]}...): "
                              f"the file is corrupt; rewrite shard {m.key} or restore the file")
                    continue
            try:
                pf = _footer(path)
                meta = pf.metadata
                schema = pf.schema_arrow
            except (OSError, pa.ArrowException) as exc:
                err(name, f"{rel} is not a readable Parquet file ({exc}); rewrite shard {m.key}")
                continue
            problem = _schema_problem(schema, GRASP_SCHEMA)
            if problem:
                err(name, f"{rel}: {problem}")
            if meta.num_rows != part.rows:
                err(name, f"{rel} has {meta.num_rows} rows, manifest says {part.rows}")
            rows += meta.num_rows
            if meta.num_row_groups != part.row_groups or part.row_groups != len(part.objects):
                err(name, f"{rel} has {meta.num_row_groups} row groups, manifest says {part.row_groups} "
                          f"for {len(part.objects)} objects (want one row group per object)")
                continue
            oid_col = GRASP_SCHEMA.get_field_index("object_id")
            start = 0
            for span in part.objects:
                rg = meta.row_group(span.row_group)
                if rg.num_rows != span.rows or span.row_start != start:
                    err(name, f"{rel}: row group {span.row_group} has {rg.num_rows} rows from row {start}, manifest says "
                              f"{span.rows} from row {span.row_start} for object {span.object_id}")
                    break
                st = rg.column(oid_col).statistics
                if st is not None and st.has_min_max and not (st.min == st.max == span.object_id):
                    err(name, f"{rel}: row group {span.row_group} holds object ids {st.min!r}..{st.max!r}, "
                              f"manifest says {span.object_id!r}")
                    break
                start += rg.num_rows

    # Files readers never see.
    for n in fsio.listdir(ds.p(DATA_DIR)):
        rel = f"{DATA_DIR}/{n}"
        if n.startswith(".") and n.endswith(".tmp"):
            warn(rel, "temporary file left by an interrupted write; invisible to readers (`shards verify --repair` removes it)")
        elif rel not in referenced:
            warn(rel, "not named by any manifest (left by an interrupted or superseded write); invisible to readers "
                      "(`shards verify --repair` removes it)")
    for d in (MANIFESTS_DIR, "meta", REJECTS_DIR):
        for n in fsio.listdir(ds.p(d)):
            if n.startswith(".") and n.endswith(".tmp"):
                warn(f"{d}/{n}", "temporary file left by an interrupted write; invisible to readers")

    # The summary.
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
            if manifests:
                warn(INFO_FILE, "missing; it is rebuilt from the manifests by the next write or `shards verify --repair`")
        elif not info_matches(stored, manifests):
            warn(INFO_FILE, "stale: it does not list exactly the committed shards (an interrupted write or a lost race "
                            "between writers); readers use the manifests; the next write or `shards verify --repair` rebuilds it")

    # Rejects and candidates: footers and schemas.
    def check_table(rel: str, schema: pa.Schema, name: str, what: str) -> None:
        try:
            problem = _schema_problem(_footer(ds.p(rel)).schema_arrow, schema)
        except (OSError, pa.ArrowException) as exc:
            problem = f"not a readable Parquet file ({exc})"
        if problem:
            err(name, f"{rel}: {problem}; rewrite these {what}")

    for key in ds.reject_keys():
        check_table(f"{REJECTS_DIR}/{key}.parquet", REJECT_SCHEMA, f"{REJECTS_DIR}/{key}", "rejects")
    for source in ds.candidate_sources():
        for key in ds.candidate_keys(source):
            check_table(f"{CANDIDATES_DIR}/{source}/{key}.parquet", GRASP_SCHEMA,
                        f"{CANDIDATES_DIR}/{source}/{key}", "candidates")

    ok = not any(b["level"] == "error" for b in bad)
    return VerifyReport(ok=ok, shards=len(keys), rows=rows, bad=bad)


def _age_s(path: str) -> float | None:
    local = _local_path(path)
    try:
        if local is not None:
            return time.time() - os.path.getmtime(local)
        fs, p = fsio.filesystem(path)
        return time.time() - fs.modified(p).timestamp()
    except (OSError, NotImplementedError, AttributeError, ValueError):
        return None


def repair_dataset(ds: "Dataset", min_age_s: float = 3600.0) -> dict[str, Any]:
    """Rebuild ``meta/info.json``; delete unreferenced/temporary files at least ``min_age_s`` old."""
    from dga_engine.dataset.store import DATA_DIR, MANIFESTS_DIR, REJECTS_DIR

    ds.rebuild_info()
    referenced = {p.path for m in ds.shards() for p in m.parts}
    candidates = [f"{DATA_DIR}/{n}" for n in fsio.listdir(ds.p(DATA_DIR)) if f"{DATA_DIR}/{n}" not in referenced]
    for d in (MANIFESTS_DIR, "meta", REJECTS_DIR):
        candidates += [f"{d}/{n}" for n in fsio.listdir(ds.p(d)) if n.startswith(".") and n.endswith(".tmp")]
    removed, kept = [], []
    for rel in candidates:
        age = _age_s(ds.p(rel))
        if (age is not None and age >= min_age_s) or min_age_s <= 0:
            fsio.remove(ds.p(rel))
            removed.append(rel)
        else:
            kept.append(rel)
    return {"info_rebuilt": True, "removed": removed, "kept_young": kept}
