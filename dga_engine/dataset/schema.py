"""The grasp record: a versioned Arrow schema, and helpers to build tables in it.

One row is one grasp of one object. Pose fields follow :data:`dga_engine.conventions.POSE_CONVENTION`
(forearm root frame in the object frame, metres, quaternion wxyz, 24 joints in radians). Refine fields
are null until a grasp has been through the refine stage, filter fields until the physics filter.

Versions: v1 had no refine fields and neither ``pen_dga_mm`` nor ``pen_object_hand_sum_mm``; v2 added
them (:data:`ADDED_IN_V2`). Files written as v1 are read as v2 with those columns null (:func:`upgrade`),
so older datasets stay readable and can be rewritten in place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

SCHEMA_VERSION = 2
N_JOINTS = 24
DIRECTIONS = ("+x", "-x", "+y", "-y", "+z", "-z")

_f32 = pa.float32()

# Fields a grasp has before filtering (what a source loader, the synthesiser or the generator emits).
POSE_FIELDS = [
    pa.field("grasp_id", pa.string(), nullable=False),  # deterministic: see make_grasp_id
    pa.field("object_id", pa.string(), nullable=False),
    pa.field("object_scale", _f32, nullable=False),  # uniform factor on the stored object mesh
    pa.field("translation", pa.list_(_f32, 3), nullable=False),  # metres, forearm origin in object frame
    pa.field("rotation", pa.list_(_f32, 4), nullable=False),  # quaternion wxyz of the forearm frame
    pa.field("joints", pa.list_(_f32, N_JOINTS), nullable=False),  # radians, JOINT_NAMES order
    pa.field("source", pa.string(), nullable=False),  # synthesis | generator | dexgraspnet | ...
    pa.field("source_record_id", pa.string(), nullable=False),  # where in the source (file:index, seed:k)
    pa.field("round", pa.int32(), nullable=False),  # 0 = curated/seed data; k = generation round k
    pa.field("generator", pa.string(), nullable=False),  # name+version of what produced it
    pa.field("generator_config_hash", pa.string(), nullable=False),
    pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
]

# Fields the refine stage fills in (dga_engine.refine): what it did to the pose, so nothing is hidden.
REFINE_FIELDS = [
    pa.field("refined_from", pa.string()),  # grasp_id of the candidate this pose was refined from (null: not moved)
    pa.field("refine_preset", pa.string()),  # preset and version, e.g. "repair/1+<config hash>" (null: never refined)
    pa.field("refine_status", pa.string()),  # unchanged | refined | failed (failed: the original pose is kept)
    pa.field("refine_joint_change", _f32),  # radians, the largest |change| of one joint
    pa.field("refine_translation_change", _f32),  # metres the root moved
    pa.field("refine_rotation_change", _f32),  # radians the root turned (angle of R_new R_old^T)
]
REFINE_STATUSES = ("unchanged", "refined", "failed")

# Fields the physics filter fills in.
FILTER_FIELDS = [
    pa.field("displacement", pa.list_(_f32, 6)),  # metres, object motion per push direction (DIRECTIONS order)
    pa.field("suc1", pa.bool_()),
    pa.field("suc6", pa.bool_()),
    pa.field("pen_hand_object_mm", _f32),  # max depth of hand points inside the object
    pa.field("pen_object_hand_mm", _f32),  # max depth of object points inside the hand
    pa.field("pen_dga_mm", _f32),  # the reference's Pen of this grasp (sign test, first 4096 points, no forearm), mm
    # DexGraspNet-style summed depth of the 2048 object points in the hand, mm
    pa.field("pen_object_hand_sum_mm", _f32),
    pa.field("contact_count", pa.int32()),
    pa.field("sim_backend", pa.string()),
    pa.field("protocol_version", pa.string()),
]

REJECT_FIELDS = [pa.field("reason", pa.string(), nullable=False), pa.field("detail", pa.string())]

_META = {b"dga_schema_version": str(SCHEMA_VERSION).encode()}
GRASP_SCHEMA = pa.schema(POSE_FIELDS + REFINE_FIELDS + FILTER_FIELDS, metadata=_META)
REJECT_SCHEMA = pa.schema(POSE_FIELDS + REFINE_FIELDS + FILTER_FIELDS + REJECT_FIELDS, metadata=_META)
ADDED_IN_V2 = tuple(f.name for f in REFINE_FIELDS) + ("pen_dga_mm", "pen_object_hand_sum_mm")

# Reasons a grasp is rejected, in the order the filter checks them.
REJECT_REASONS = (
    "invalid_pose",  # non-finite values, joints outside limits beyond tolerance, bad quaternion
    "object_missing",  # object id not in the object store
    "penetration_object_hand",  # object points deeper than the limit inside the hand
    "penetration_hand_object",  # hand points deeper than the limit inside the object
    "unstable",  # fewer passing push directions than required
    "sim_error",  # the simulator diverged or raised
)


def make_grasp_id(object_id: str, source: str, source_record_id: str, round_: int) -> str:
    """Deterministic id: re-running a stage on the same input produces the same ids (no duplicates)."""
    key = f"{object_id}\x1f{source}\x1f{source_record_id}\x1f{round_}".encode()
    return hashlib.sha256(key).hexdigest()[:24]


def pose_table(
    object_id: Sequence[str] | str,
    translation: np.ndarray,
    rotation_wxyz: np.ndarray,
    joints: np.ndarray,
    *,
    source: str,
    source_record_id: Sequence[str],
    round_: int = 0,
    generator: str = "",
    generator_config_hash: str = "",
    object_scale: np.ndarray | float = 1.0,
    created_at: _dt.datetime | None = None,
) -> pa.Table:
    """Build an unfiltered grasp table (GRASP_SCHEMA, filter fields null) from arrays of N grasps."""
    translation = np.asarray(translation, dtype=np.float32).reshape(-1, 3)
    n = translation.shape[0]
    rotation_wxyz = np.asarray(rotation_wxyz, dtype=np.float32).reshape(n, 4)
    joints = np.asarray(joints, dtype=np.float32).reshape(n, N_JOINTS)
    ids = [object_id] * n if isinstance(object_id, str) else list(object_id)
    rec = list(source_record_id)
    if len(ids) != n or len(rec) != n:
        raise ValueError(f"object_id and source_record_id need {n} entries, got {len(ids)} and {len(rec)}")
    scale = np.broadcast_to(np.asarray(object_scale, dtype=np.float32), (n,))
    now = created_at or _dt.datetime.now(_dt.UTC)
    cols: dict[str, Any] = {
        "grasp_id": [make_grasp_id(o, source, r, round_) for o, r in zip(ids, rec)],
        "object_id": ids,
        "object_scale": pa.array(scale, _f32),
        "translation": pa.FixedSizeListArray.from_arrays(pa.array(translation.reshape(-1), _f32), 3),
        "rotation": pa.FixedSizeListArray.from_arrays(pa.array(rotation_wxyz.reshape(-1), _f32), 4),
        "joints": pa.FixedSizeListArray.from_arrays(pa.array(joints.reshape(-1), _f32), N_JOINTS),
        "source": [source] * n,
        "source_record_id": rec,
        "round": pa.array(np.full(n, round_, dtype=np.int32)),
        "generator": [generator] * n,
        "generator_config_hash": [generator_config_hash] * n,
        "created_at": pa.array([now] * n, pa.timestamp("us", tz="UTC")),
    }
    for f in REFINE_FIELDS + FILTER_FIELDS:
        cols[f.name] = pa.nulls(n, f.type)
    return pa.Table.from_pydict(cols, schema=GRASP_SCHEMA)


def upgrade(table: pa.Table) -> pa.Table:
    """A v1 table (none of :data:`ADDED_IN_V2`) as v2: those columns inserted as nulls where v2 has them.

    Tables that already have them, or that lack other columns too, are returned as they are (the
    caller's schema check then names what is wrong).
    """
    missing = [n for n in ADDED_IN_V2 if n not in table.column_names]
    if len(missing) != len(ADDED_IN_V2):
        return table
    fields, cols = [], []
    for f in REJECT_SCHEMA:  # the superset: grasp fields in order, then reason/detail
        if f.name in table.column_names:
            fields.append(table.schema.field(f.name))
            cols.append(table.column(f.name))
        elif f.name in ADDED_IN_V2:
            fields.append(f)
            cols.append(pa.nulls(table.num_rows, f.type))
    names = {f.name for f in fields}
    for f in table.schema:
        if f.name not in names:
            fields.append(f)
            cols.append(table.column(f.name))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=table.schema.metadata))


def file_columns(wanted: Sequence[str], available: Sequence[str]) -> list[str]:
    """The columns to read from a file: ``wanted`` minus the v2 columns an older (v1) file lacks."""
    have = set(available)
    return [c for c in wanted if c in have or c not in ADDED_IN_V2]


def pose_arrays(table: pa.Table) -> dict[str, np.ndarray]:
    """translation (N,3), rotation (N,4) wxyz, joints (N,24), object_scale (N,) as float32 numpy."""

    def fixed(name: str, k: int) -> np.ndarray:
        col = table.column(name).combine_chunks()
        return col.values.to_numpy(zero_copy_only=False).reshape(-1, k).astype(np.float32)

    return {
        "translation": fixed("translation", 3),
        "rotation": fixed("rotation", 4),
        "joints": fixed("joints", N_JOINTS),
        "object_scale": table.column("object_scale").to_numpy().astype(np.float32),
    }
