"""A tiny factory of grasp tables (built with pose_table, the way producers build them) and a dataset fixture."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dga_engine.dataset.schema import pose_table


def make_grasps(objects, *, source: str = "synthesis", round_: int = 0, seed: int = 0, filtered: bool = True,
                interleave: bool = True) -> pa.Table:
    """Grasps for ``objects`` ({object_id: count} or a list, 4 each), rows interleaved across objects.

    ``filtered`` fills the physics-filter fields (as an accepted grasp has them).
    """
    counts = dict(objects) if isinstance(objects, dict) else {o: 4 for o in objects}
    ids = [o for o, n in counts.items() for _ in range(n)]
    rng = np.random.default_rng(seed)
    if interleave:
        ids = [ids[i] for i in rng.permutation(len(ids))]
    n = len(ids)
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    table = pose_table(ids, rng.normal(scale=0.1, size=(n, 3)), q, rng.uniform(-0.3, 1.2, size=(n, 24)),
                       source=source, source_record_id=[f"{source}:{seed}:{i}" for i in range(n)], round_=round_,
                       generator="test-factory 1", generator_config_hash="abc", object_scale=rng.uniform(0.8, 1.2, n))
    if filtered:
        disp = pa.FixedSizeListArray.from_arrays(pa.array(rng.uniform(0, 0.02, n * 6).astype(np.float32)), 6)
        fill = {
            "displacement": disp,
            "suc1": pa.array(np.ones(n, bool)),
            "suc6": pa.array(rng.uniform(size=n) < 0.7),
            "pen_hand_object_mm": pa.array(rng.uniform(0, 5, n).astype(np.float32)),
            "pen_object_hand_mm": pa.array(rng.uniform(0, 0.5, n).astype(np.float32)),
            "contact_count": pa.array(rng.integers(2, 12, n).astype(np.int32)),
            "sim_backend": pa.array(["mujoco"] * n),
            "protocol_version": pa.array(["dga-1"] * n),
        }
        for name, arr in fill.items():
            table = table.set_column(table.schema.get_field_index(name), table.schema.field(name), arr)
    return table


def make_rejects(table: pa.Table, reason: str = "unstable") -> pa.Table:
    from dga_engine.dataset.schema import REJECT_SCHEMA

    n = table.num_rows
    out = table.append_column("reason", pa.array([reason] * n)).append_column("detail", pa.array(["moved 3 cm"] * n))
    return out.cast(REJECT_SCHEMA)


@pytest.fixture
def grasps():
    return make_grasps


@pytest.fixture
def dataset(layout):
    from dga_engine.dataset.store import Dataset

    return Dataset(layout)


@pytest.fixture
def rejects_of():
    return make_rejects
