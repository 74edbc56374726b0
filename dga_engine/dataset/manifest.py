"""What the store writes about its data: shard manifests, the dataset summary, and column statistics.

A **manifest** (``manifests/<key>.json``) is the truth about one write key: the Parquet files ("parts")
it consists of, their row counts and sha256, each object's row group and row range, and per-column
statistics. A key whose table exceeded the size bound has several parts named ``<key>-000``,
``<key>-001``, ...; they are committed together because one manifest names them all.

The **dataset info** (``meta/info.json``) is a summary: schema version, pose conventions, totals (rows,
objects, keys, files, rounds, sources, splits) and merged statistics. It no longer lists the shards (the
object index under ``meta/`` does), so it stays a few KiB at any size. It is rewritten by every compaction
and can always be rebuilt; it never decides what exists.

Both documents carry version numbers. Reading one written by a newer engine fails with
:class:`SchemaVersionError`, whose message says what to do.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dga_engine.dataset.schema import SCHEMA_VERSION

MANIFEST_VERSION = 1  # layout of manifests/<key>.json
INFO_VERSION = 2  # layout of meta/info.json (1: listed every shard; 2: totals only, the index is under meta/)
SUPPORTED_INFO_VERSIONS = (1, 2)
SUPPORTED_SCHEMA_VERSIONS = (1, 2)  # grasp-record schema versions this engine reads (it writes the newest)

# Per-field descriptions written into meta/info.json, so the dataset documents itself.
FIELD_DESCRIPTIONS: dict[str, str] = {
    "grasp_id": "deterministic id: sha256(object_id, source, source_record_id, round)[:24]",
    "object_id": "object in the object store (objects/<object_id>/), content-derived",
    "object_scale": "uniform factor applied to the stored object mesh",
    "translation": "metres; forearm root origin in the object frame (x, y, z)",
    "rotation": "unit quaternion wxyz (scalar first) of the forearm root frame in the object frame",
    "joints": "24 joint angles in radians, in conventions.joint_order",
    "source": "what produced the grasp (synthesis, generator, dexgraspnet, ...)",
    "source_record_id": "where in the source (file:index, seed:k)",
    "round": "0 = curated/seed data; k = generation round k",
    "generator": "name and version of the producer",
    "generator_config_hash": "hash of the producer's configuration",
    "created_at": "UTC time the grasp was produced",
    "refined_from": "grasp_id of the candidate this pose was refined from (null: the pose was not moved)",
    "refine_preset": "refine preset and version that processed the grasp (null: never refined)",
    "refine_status": "unchanged | refined | failed (failed: the original pose was kept)",
    "refine_joint_change": "radians; largest change of one joint made by the refine stage",
    "refine_translation_change": "metres the refine stage moved the root",
    "refine_rotation_change": "radians the refine stage turned the root",
    "displacement": "metres; object motion under the push along each of +x,-x,+y,-y,+z,-z",
    "suc1": "at least one push direction passed",
    "suc6": "all six push directions passed",
    "pen_hand_object_mm": "max depth of hand points inside the object (mm)",
    "pen_object_hand_mm": "max depth of object points inside the hand (mm)",
    "pen_dga_mm": "the DGA reference's Pen of the grasp: max depth of hand points (no forearm) by the sign test "
    "against the first 4096 object points (mm)",
    "pen_object_hand_sum_mm": "DexGraspNet-style E_pen: summed depth of the 2048 standard object points inside the "
    "hand (mm)",
    "contact_count": "contacts between hand and object after closing",
    "sim_backend": "simulator that ran the filter",
    "protocol_version": "version of the filter protocol",
    "reason": "why the grasp was rejected (one of schema.REJECT_REASONS)",
    "detail": "free-text detail of the rejection",
}


class SchemaVersionError(RuntimeError):
    """A dataset document was written with a schema or layout version this engine does not know."""


class UnsafePathError(ValueError):
    """A path read from the dataset's own metadata points outside the files it may name."""


class ManifestError(RuntimeError):
    """A manifest (or the snapshot) cannot be read or does not describe its shard."""


class CorruptShardError(RuntimeError):
    """A committed shard file cannot be read (damaged or replaced after it was written)."""


def check_data_path(rel: Any, where: str) -> str:
    """``rel`` if it is ``data/<plain name>.parquet``; UnsafePathError otherwise.

    Every file path the store reads from its metadata (manifests, the snapshot) goes through this before it
    is joined to the dataset folder, read or deleted: metadata is untrusted input, and a path such as
    ``../../victim`` in a shared root must never make a reader open, or a writer delete, a file elsewhere.
    """
    from dga_engine.layout import UnsafeNameError, safe_name

    ok = isinstance(rel, str) and rel.startswith("data/") and rel.count("/") == 1 and rel.endswith(".parquet")
    if ok:
        try:
            safe_name(rel[len("data/"):])
        except UnsafeNameError:
            ok = False
    if not ok:
        raise UnsafePathError(f"{where} names {rel!r}, which is not a file directly under data/: the metadata was "
                              "edited or damaged; nothing was read or deleted through it (`dga-engine shards repair`)")
    return rel


def check_version(kind: str, found: Any, supported: Iterable[int], where: str) -> int:
    """Return ``found`` as an int if it is supported; otherwise fail with the fix in the message."""
    supported = tuple(supported)
    try:
        value = int(found)
    except (TypeError, ValueError):
        value = None
    if value not in supported:
        raise SchemaVersionError(
            f"{where}: {kind} {found!r} is not supported by this dga-engine (it reads "
            f"{', '.join(map(str, supported))}). "
            "The dataset was probably written by a newer dga-engine: upgrade it (pip install -U dga-engine), "
            "or point --root/--dataset at a dataset written with a supported version."
        )
    return value


# ---------------------------------------------------------------------------------------------------
# Column statistics
# ---------------------------------------------------------------------------------------------------

def _floats(values: np.ndarray) -> list[float | None]:
    # 9 significant digits: every float32 value round-trips exactly (min/max stay exact), and the
    # numbers are half as long as float64 reprs, which keeps manifests small (listing parses them all).
    return [None if not math.isfinite(v) else float(f"{v:.9g}") for v in values.tolist()]


def column_stats(table: pa.Table) -> dict[str, dict[str, Any]]:
    """Statistics of every numeric, boolean and timestamp column of ``table``.

    Numeric columns give ``count`` (non-null), ``nulls``, ``min``, ``max``, ``mean``, ``std`` (population);
    fixed-size list columns (translation, rotation, joints, displacement) give lists with one value
    per component. Booleans give ``count``, ``nulls``, ``true``, ``mean``. Timestamps give ISO ``min``/``max``.
    Strings are summarised elsewhere (object ids, rounds and sources of a part).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, col in zip(table.column_names, table.columns):
        typ = col.type
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        nulls = arr.null_count
        if pa.types.is_fixed_size_list(typ) and (
            pa.types.is_floating(typ.value_type) or pa.types.is_integer(typ.value_type)
        ):
            k = typ.list_size
            valid = arr.drop_null() if nulls else arr
            vals = valid.flatten().to_numpy(zero_copy_only=False).reshape(-1, k)
            out[name] = _numeric(vals, nulls)
        elif pa.types.is_floating(typ) or pa.types.is_integer(typ):
            vals = arr.drop_null().to_numpy(zero_copy_only=False)
            out[name] = _numeric(vals, nulls, scalar=True)
        elif pa.types.is_boolean(typ):
            valid = len(arr) - nulls
            true = int(pc.sum(arr).as_py() or 0)
            out[name] = {"count": valid, "nulls": nulls, "true": true, "mean": (true / valid) if valid else None}
        elif pa.types.is_timestamp(typ):
            mm = pc.min_max(arr)
            lo, hi = mm["min"].as_py(), mm["max"].as_py()
            out[name] = {
                "count": len(arr) - nulls,
                "nulls": nulls,
                "min": lo.isoformat() if lo is not None else None,
                "max": hi.isoformat() if hi is not None else None,
            }
    return out


def _numeric(vals: np.ndarray, nulls: int, scalar: bool = False) -> dict[str, Any]:
    n = int(vals.shape[0])
    if n == 0:
        return {"count": 0, "nulls": nulls, "min": None, "max": None, "mean": None, "std": None}
    with np.errstate(all="ignore"):  # float64 accumulators over the stored (float32/int) values, no copy
        lo, hi = vals.min(axis=0).astype(np.float64), vals.max(axis=0).astype(np.float64)
        mean = vals.mean(axis=0, dtype=np.float64)
        std = np.sqrt(np.maximum(np.mean(np.square(vals, dtype=np.float64), axis=0) - mean**2, 0.0))
    if scalar:
        lo, hi, mean, std = (np.atleast_1d(x) for x in (lo, hi, mean, std))
        return {
            "count": n,
            "nulls": nulls,
            "min": _floats(lo)[0],
            "max": _floats(hi)[0],
            "mean": _floats(mean)[0],
            "std": _floats(std)[0],
        }
    return {
        "count": n,
        "nulls": nulls,
        "min": _floats(lo),
        "max": _floats(hi),
        "mean": _floats(mean),
        "std": _floats(std),
    }


def merge_stats(parts: Iterable[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Combine per-part statistics into statistics over all their rows (exact mean and std)."""
    acc: dict[str, list[Mapping[str, Any]]] = {}
    for stats in parts:
        for name, s in stats.items():
            acc.setdefault(name, []).append(s)
    return {name: _merge_one(items) for name, items in acc.items()}


def _merge_one(items: list[Mapping[str, Any]]) -> dict[str, Any]:
    first = items[0]
    nulls = sum(int(s.get("nulls", 0)) for s in items)
    count = sum(int(s.get("count", 0)) for s in items)
    if "true" in first:
        true = sum(int(s.get("true", 0)) for s in items)
        return {"count": count, "nulls": nulls, "true": true, "mean": (true / count) if count else None}
    live = [s for s in items if s.get("count") and s.get("min") is not None]
    if isinstance(first.get("min"), str) or ("std" not in first and "min" in first):  # timestamps (ISO strings)
        los = [s["min"] for s in live]
        his = [s["max"] for s in live]
        return {"count": count, "nulls": nulls, "min": min(los) if los else None, "max": max(his) if his else None}
    if not live:
        return {"count": count, "nulls": nulls, "min": None, "max": None, "mean": None, "std": None}
    scalar = not isinstance(live[0]["min"], list)
    w = np.asarray([s["count"] for s in live], dtype=np.float64)[:, None]

    def stack(key: str) -> np.ndarray:  # (parts, components); None (a non-finite value) becomes NaN
        return np.array([s[key] for s in live], dtype=np.float64).reshape(len(live), -1)

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN components stay NaN (written as null)
        lo, hi = np.nanmin(stack("min"), axis=0), np.nanmax(stack("max"), axis=0)
    means, stds = stack("mean"), stack("std")
    mean = (w * means).sum(axis=0) / w.sum()
    var = (w * (stds**2 + means**2)).sum(axis=0) / w.sum() - mean**2
    std = np.sqrt(np.maximum(var, 0.0))
    if scalar:
        return {"count": count, "nulls": nulls, "min": _floats(lo)[0], "max": _floats(hi)[0],
                "mean": _floats(mean)[0], "std": _floats(std)[0]}
    return {
        "count": count,
        "nulls": nulls,
        "min": _floats(lo),
        "max": _floats(hi),
        "mean": _floats(mean),
        "std": _floats(std),
    }


def value_counts(table: pa.Table, column: str) -> dict[str, int]:
    """Rows per distinct value of ``column`` (keys as strings, for JSON)."""
    if table.num_rows == 0:
        return {}
    vc = pc.value_counts(table.column(column).combine_chunks())
    return {str(v): int(c) for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist())}


def _add_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    for k, v in more.items():
        into[k] = into.get(k, 0) + int(v)


def _sorted_counts(counts: Mapping[str, int], numeric: bool = False) -> dict[str, int]:
    keys = sorted(counts, key=(lambda k: (int(k) if k.lstrip("-").isdigit() else math.inf, k)) if numeric else None)
    return {k: counts[k] for k in keys}


# ---------------------------------------------------------------------------------------------------
# Manifests
# ---------------------------------------------------------------------------------------------------

class ObjectSpan(NamedTuple):  # a tuple: manifests hold thousands, and they are parsed on every listing
    """Where one object's grasps sit in one Parquet part: its row group, first row and row count."""

    object_id: str
    row_group: int  # index of the object's row group in the part file
    row_start: int  # first row of the object in the part file (0-based)
    rows: int  # number of rows (= rows of that row group)


@dataclass(frozen=True)
class ShardPart:
    """One Parquet file of a shard (bounded in rows and bytes)."""

    name: str  # "<key>" when the shard has one part, else "<key>-000", "<key>-001", ...
    path: str  # file path relative to the dataset folder, e.g. "data/<name>.<write_id>.parquet"
    rows: int
    bytes: int  # file size
    sha256: str  # of the whole file
    row_groups: int  # = number of object spans (one row group per object)
    objects: tuple[ObjectSpan, ...]  # in file order (sorted by object_id)
    rounds: dict[str, int]  # rows per round present in this part
    sources: dict[str, int]  # rows per source present in this part
    stats: dict[str, dict[str, Any]]  # column_stats() of this part
    footer_sha256: str = ""  # of the Parquet footer (readers check it when they open the file; "" = not recorded)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        # Compact object index: [object_id, row_group, row_start, rows] per object.
        d["objects"] = [list(o) for o in self.objects]
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "manifest") -> ShardPart:
        objects = tuple(map(ObjectSpan._make, d["objects"]))
        if objects and not (isinstance(objects[0].object_id, str) and isinstance(objects[-1].rows, int)):
            raise ValueError("objects must be [object_id, row_group, row_start, rows] entries")
        return cls(name=str(d["name"]), path=check_data_path(d["path"], where), rows=int(d["rows"]),
                   bytes=int(d["bytes"]), sha256=str(d["sha256"]), row_groups=int(d["row_groups"]), objects=objects,
                   rounds=dict(d.get("rounds", {})), sources=dict(d.get("sources", {})), stats=dict(d.get("stats", {})),
                   footer_sha256=str(d.get("footer_sha256", "")))


@dataclass(frozen=True)
class ShardManifest:
    """The manifest of one shard (one write key): its parts and everything a reader needs to find rows.

    ``parts`` is usually a single file; a table larger than the store's bound becomes several parts,
    all committed at once by this one manifest.
    """

    key: str  # the write key; also the shard's name
    dataset: str
    write_id: str  # unique per write; part file names carry it, so a rewrite never overwrites a live file
    created_at: str  # ISO UTC time of the commit
    schema_version: int
    parts: tuple[ShardPart, ...]
    split: str | None = None  # optional split this shard belongs to (e.g. "train", "test")
    engine_version: str = ""
    manifest_version: int = MANIFEST_VERSION
    deleted: bool = False  # a tombstone: the key was deleted after it had been compacted (no parts)
    compacted: bool = False  # a view of a key whose rows live in compacted files (from the object index)

    @property
    def shard(self) -> str:
        return self.key

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.parts)

    @property
    def object_ids(self) -> list[str]:
        return sorted({o.object_id for p in self.parts for o in p.objects})

    @property
    def rounds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parts:
            _add_counts(out, p.rounds)
        return _sorted_counts(out, numeric=True)

    @property
    def sources(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.parts:
            _add_counts(out, p.sources)
        return _sorted_counts(out)

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        return merge_stats(p.stats for p in self.parts if p.rows)

    def summary(self) -> dict[str, Any]:
        """One line of ``shards ls``."""
        return {"shard": self.key, "rows": self.rows, "objects": len(self.object_ids), "rounds": self.rounds,
                "sources": self.sources, "bytes": self.bytes, "parts": [p.name for p in self.parts],
                "split": self.split, "created_at": self.created_at}

    def to_json(self) -> dict[str, Any]:
        return {
            "manifest_version": self.manifest_version,
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "key": self.key,
            "write_id": self.write_id,
            "created_at": self.created_at,
            "engine_version": self.engine_version,
            "split": self.split,
            "rows": self.rows,
            "bytes": self.bytes,
            "parts": [p.to_json() for p in self.parts],
            **({"deleted": True} if self.deleted else {}),
            **({"compacted": True} if self.compacted else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "manifest") -> ShardManifest:
        check_version("manifest version", d.get("manifest_version"), (MANIFEST_VERSION,), where)
        schema_version = check_version(
            "grasp schema version", d.get("schema_version"), SUPPORTED_SCHEMA_VERSIONS, where
        )
        return cls(key=str(d["key"]), dataset=str(d.get("dataset", "")), write_id=str(d["write_id"]),
                   created_at=str(d.get("created_at", "")), schema_version=schema_version,
                   parts=tuple(ShardPart.from_json(p, where) for p in d["parts"]), split=d.get("split"),
                   engine_version=str(d.get("engine_version", "")), manifest_version=int(d["manifest_version"]),
                   deleted=bool(d.get("deleted", False)))


# ---------------------------------------------------------------------------------------------------
# Dataset info
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DatasetInfo:
    """The dataset's self-description (``meta/info.json``), derived from the manifests."""

    name: str
    schema_version: int  # grasp-record schema (dga_engine.dataset.schema.SCHEMA_VERSION)
    conventions: dict[str, Any]  # dga_engine.hand.POSE_CONVENTION: root frame, rotation encoding, units, joint order
    features: list[dict[str, Any]]  # one per column: name, type, nullable, description
    rows: int  # accepted grasps over all shards
    objects: int  # distinct object ids over all shards
    bytes: int  # Parquet bytes over all shards
    rounds: dict[str, int]  # rows per round
    sources: dict[str, int]  # rows per source
    keys: int  # committed shards (write keys)
    files: int  # Parquet data files holding them
    splits: dict[str, dict[str, Any]]  # split name -> {"keys": n, "rows": n}; empty when no shard names a split
    stats: dict[str, dict[str, Any]]  # merged column statistics (see manifest.column_stats)
    layout: dict[str, str]  # where things live inside the dataset folder (path templates)
    updated_at: str  # ISO UTC time this summary was built
    snapshot: str | None = None  # id of the compacted snapshot this summary includes (meta/snapshot.json)
    pending_keys: int = 0  # shards committed after that snapshot (in manifests/), included in the totals
    engine_version: str = ""
    info_version: int = INFO_VERSION
    codebase: str = "dga-engine"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping[str, Any], where: str = "meta/info.json") -> DatasetInfo:
        version = check_version("info version", d.get("info_version"), SUPPORTED_INFO_VERSIONS, where)
        check_version("grasp schema version", d.get("schema_version"), SUPPORTED_SCHEMA_VERSIONS, where)
        d = dict(d)
        if version == 1:  # the older summary listed every shard: keep its totals
            shards = d.pop("shards", []) or []
            d.setdefault("keys", len(shards))
            d.setdefault("files", sum(len(s.get("parts", [])) for s in shards if isinstance(s, dict)))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


def features_of(schema: pa.Schema) -> list[dict[str, Any]]:
    return [
        {"name": f.name, "type": str(f.type), "nullable": f.nullable, "description": FIELD_DESCRIPTIONS.get(f.name, "")}
        for f in schema
    ]


def build_info(name: str, *, rows: int, objects: int, bytes_: int, rounds: Mapping[str, int],
               sources: Mapping[str, int], keys: int, files: int, splits: Mapping[str, Mapping[str, int]],
               stats: Iterable[Mapping[str, Mapping[str, Any]]], conventions: Mapping[str, Any], schema: pa.Schema,
               layout: Mapping[str, str], updated_at: str, engine_version: str, snapshot: str | None,
               pending_keys: int) -> DatasetInfo:
    """A :class:`DatasetInfo` from totals (the store computes them from the snapshot and the pending manifests)."""
    return DatasetInfo(
        name=name, schema_version=SCHEMA_VERSION, conventions=dict(conventions), features=features_of(schema),
        rows=int(rows), objects=int(objects), bytes=int(bytes_), rounds=_sorted_counts(dict(rounds), numeric=True),
        sources=_sorted_counts(dict(sources)), keys=int(keys), files=int(files),
        splits={k: dict(v) for k, v in sorted(splits.items())}, stats=merge_stats(stats), layout=dict(layout),
        updated_at=updated_at, snapshot=snapshot, pending_keys=int(pending_keys), engine_version=engine_version,
    )


def add_counts(into: dict[str, int], more: Mapping[str, int]) -> None:
    """``into[k] += more[k]`` for every k (counts kept as JSON-friendly string keys)."""
    _add_counts(into, more)


__all__ = [
    "MANIFEST_VERSION",
    "INFO_VERSION",
    "SUPPORTED_INFO_VERSIONS",
    "SUPPORTED_SCHEMA_VERSIONS",
    "FIELD_DESCRIPTIONS",
    "SchemaVersionError",
    "UnsafePathError",
    "check_data_path",
    "add_counts",
    "check_version",
    "column_stats",
    "merge_stats",
    "value_counts",
    "ObjectSpan",
    "ShardPart",
    "ShardManifest",
    "DatasetInfo",
    "features_of",
    "build_info",
]
