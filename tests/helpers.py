"""Test data shared across areas: grasps with known outcomes on the ``box_object`` fixture, the one
random grasp-table factory, and the one micro generator config. Imported by tests (conftest modules hold
only fixtures)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import pose_table

# A grasp that cages the box. How it was found (a one-off search script, not part of the suite): the
# box held fixed (build_scene(..., fixed_object=True)) against the palm, its long axis pointing out of
# the palm (hand -y), centred 1.5 cm toward the little finger at z = 0.37 m; the fingers closed from
# an open hand with the thumb opposed (THJ4 = 1) by position servos limited to 0.2 N m with a 0.5 mm
# contact margin until they stopped on the box; joints rounded to 1 mrad. Under the default protocol
# and five variants (timestep 0.005, no noslip, timestep 0.002 with stiffer contacts, sequential
# pushes, reference push duration) it holds in all six directions, moving at most ~6 mm; its
# penetration is ~0.4 mm (hand into object) and ~0.2 mm (object into hand).
CAGE_T = [-0.015, 0.37, 0.0616]
CAGE_QUAT = [0.707107, 0.707107, 0.0, 0.0]  # wxyz: 90 degrees about x
CAGE_Q = [0.064, -0.066, 0.0, 0.54, 1.065, 1.147, -0.002, 0.691, 0.957, 1.148, -0.009, 0.608, 1.031, 1.147,
          0.0, 0.0, 1.4, 1.4, 1.2, 0.956, 0.328, 0.2, 0.5, -0.3]

# The same hand 80 cm away from the object: nothing touches it, every push moves it freely.
FAR_T = [0.0, 0.0, 0.8]
IDENTITY = [1.0, 0.0, 0.0, 0.0]

# The object's centre inside the palm (palm box centre in the forearm frame: (0.011, 0, 0.328)).
SUNK_T = [-0.011, 0.0, -0.33]


def grasp_table(rows, source="test"):
    """A GRASP_SCHEMA table from (object_id, t, quat, q) tuples; record ids are their positions."""
    ids = [r[0] for r in rows]
    return pose_table(
        ids,
        np.array([r[1] for r in rows], dtype=np.float32),
        np.array([r[2] for r in rows], dtype=np.float32),
        np.array([r[3] for r in rows], dtype=np.float32),
        source=source,
        source_record_id=[f"r{i}" for i in range(len(rows))],
    )


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


def micro_config():
    """Smaller than the tiny preset: seconds per epoch on one core, still the full architecture."""
    from dga_engine.generate.config import DiffusionConfig, ModelConfig, tiny_config

    cfg = tiny_config()
    cfg.model = ModelConfig(n_points=256, n_groups=8, group_size=16, point_mlp=(16, 32), encoder_layers=1,
                            width=32, heads=2, blocks=2, pose_tokens=2, mlp_ratio=2)
    cfg.diffusion = DiffusionConfig(steps=20)
    cfg.train.batch_size = 32
    cfg.train.lr = 2e-3
    cfg.train.sdf_resolution = 32
    cfg.train.checkpoint_every = 1
    cfg.sample.sdf_resolution = 32
    cfg.sample.batch_size = 32
    cfg.preset = "micro"
    return cfg
