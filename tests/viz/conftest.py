"""A small dataset written by the engine's own store: a box with caging grasps, rejects, candidates and a refined
row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T


def _filled(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    n = table.num_rows
    fill = {
        "displacement": pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(0, 0.006, n * 6).astype(np.float32)), 6),
        "suc1": pa.array(np.ones(n, bool)), "suc6": pa.array(np.ones(n, bool)),
        "pen_hand_object_mm": pa.array(rng.uniform(0, 2, n).astype(np.float32)),
        "pen_object_hand_mm": pa.array(rng.uniform(0, 0.5, n).astype(np.float32)),
        "contact_count": pa.array(rng.integers(3, 10, n).astype(np.int32)),
        "sim_backend": pa.array(["mujoco"] * n), "protocol_version": pa.array(["dga-push6/1+test"] * n),
    }
    for name, arr in fill.items():
        table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), arr)
    return table


def cage_poses(n: int, seed: int = 0, wrist: bool = True):
    """``n`` variations of the caging grasp of the 5x5x10 cm box (small joint noise; wrist joints bent when asked)."""
    rng = np.random.default_rng(seed)
    q = np.tile(np.asarray(CAGE_Q, dtype=np.float64), (n, 1)) + rng.normal(scale=0.02, size=(n, 24))
    if wrist:
        q[:, 0] = rng.uniform(-0.3, 0.1, n)  # WRJ1
        q[:, 1] = rng.uniform(-0.4, 0.3, n)  # WRJ0: the DexGraspNet/BODex exports fold these into the root
    t = np.tile(np.asarray(CAGE_T), (n, 1)) + rng.normal(scale=0.001, size=(n, 3))
    return t, np.tile(np.asarray(CAGE_QUAT), (n, 1)), q


@pytest.fixture
def viz_dataset(layout, box_object):
    """Dataset 'dga': 4 accepted grasps (synthesis), 2 rejects (unstable), 2 candidates of 'dexgraspnet'
    (CC BY-NC), and one accepted refined grasp of source 'refine-test' whose refined_from names the first candidate."""
    from dga_engine.dataset.schema import REJECT_SCHEMA, pose_table
    from dga_engine.dataset.store import Dataset

    rng = np.random.default_rng(0)
    oid = box_object.object_id
    ds = Dataset(layout)
    t, r, q = cage_poses(4, seed=1)
    acc = _filled(pose_table(oid, t, r, q, source="synthesis", source_record_id=[f"s:{i}" for i in range(4)]), rng)
    t, r, q = cage_poses(2, seed=2)
    rej = _filled(pose_table(oid, t, r, q, source="synthesis", source_record_id=[f"x:{i}" for i in range(2)]), rng)
    rej = rej.append_column("reason", pa.array(["unstable"] * 2)).append_column("detail", pa.array(["moved 3 cm"] * 2))
    ds.write_rejects(rej.cast(REJECT_SCHEMA), "r0")
    t, r, q = cage_poses(2, seed=3)
    cand = pose_table(oid, t, r, q, source="dexgraspnet", source_record_id=[f"dataset/x.npy:{i}" for i in range(2)])
    ds.write_candidates(cand, "dexgraspnet", "k0")
    refined = _filled(pose_table(oid, t[:1] + [0.0, 0.0, 0.004], r[:1], q[:1], source="refine-test",
                                 source_record_id=["refined:0"]), rng)
    for name, value in {"refined_from": cand.column("grasp_id")[0].as_py(), "refine_preset": "repair/1+test",
                        "refine_status": "refined"}.items():
        refined = refined.set_column(
            refined.schema.get_field_index(name), refined.schema.field(name), pa.array([value])
        )
    for name, value in {
        "refine_joint_change": 0.0,
        "refine_translation_change": 0.004,
        "refine_rotation_change": 0.0,
    }.items():
        refined = refined.set_column(refined.schema.get_field_index(name), refined.schema.field(name),
                                     pa.array([value], pa.float32()))
    ds.write_shard(acc, "s0")
    ds.write_shard(refined, "s1")
    return ds
