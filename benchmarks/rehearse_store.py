"""At-scale rehearsal of the dataset store (filled in below)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import GRASP_SCHEMA, make_grasp_id, upgrade

_f32 = pa.float32()
_CREATED = np.datetime64("2025-06-01T12:00:00", "us")


def unit_table(unit: int, rows: int, seed: int = 0, source: str = "dexgraspnet", round_: int = 0) -> pa.Table:
    """One filter unit's accepted grasps: ``rows`` grasps of object ``obj-<unit>``, filter fields filled.

    Poses are random (unit quaternions, joints in a range), so they compress worse than real grasps.
    """
    rng = np.random.default_rng([unit, seed])
    oid = f"obj-{unit:05d}"
    rec = [f"{source}/core-{unit:05d}.npy:{i}" for i in range(rows)]
    q = rng.normal(size=(rows, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1

    def fixed(a: np.ndarray, k: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float32).reshape(-1), _f32), k)

    cols = {
        "grasp_id": [make_grasp_id(oid, source, r, round_) for r in rec],
        "object_id": pa.array([oid] * rows, pa.string()),
        "object_scale": pa.array(rng.uniform(0.8, 1.2, rows).astype(np.float32)),
        "translation": fixed(rng.normal(scale=0.1, size=(rows, 3)), 3),
        "rotation": fixed(q, 4),
        "joints": fixed(rng.uniform(-0.3, 1.5, size=(rows, 24)), 24),
        "source": pa.array([source] * rows),
        "source_record_id": rec,
        "round": pa.array(np.full(rows, round_, np.int32)),
        "generator": pa.array(["curate 1"] * rows),
        "generator_config_hash": pa.array(["0123abcd"] * rows),
        "created_at": pa.array(np.full(rows, _CREATED), pa.timestamp("us", tz="UTC")),
        "displacement": fixed(rng.uniform(0, 0.02, size=(rows, 6)), 6),
        "suc1": pa.array(np.ones(rows, bool)),
        "suc6": pa.array(rng.uniform(size=rows) < 0.7),
        "pen_hand_object_mm": pa.array(rng.uniform(0, 8, rows).astype(np.float32)),
        "pen_object_hand_mm": pa.array(rng.uniform(0, 0.8, rows).astype(np.float32)),
        "contact_count": pa.array(rng.integers(2, 15, rows).astype(np.int32)),
        "sim_backend": pa.array(["mujoco"] * rows),
        "protocol_version": pa.array(["dga-1"] * rows),
    }
    v1 = pa.schema([f for f in GRASP_SCHEMA if f.name in cols], metadata=GRASP_SCHEMA.metadata)
    return upgrade(pa.Table.from_pydict(cols, schema=v1)).cast(GRASP_SCHEMA)
