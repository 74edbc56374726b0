"""Grasps with known outcomes on the shared 5 x 5 x 10 cm ``box_object``."""

from __future__ import annotations

import numpy as np
import pytest

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
    from dga_engine.dataset.schema import pose_table

    ids = [r[0] for r in rows]
    return pose_table(
        ids,
        np.array([r[1] for r in rows], dtype=np.float32),
        np.array([r[2] for r in rows], dtype=np.float32),
        np.array([r[3] for r in rows], dtype=np.float32),
        source=source,
        source_record_id=[f"r{i}" for i in range(len(rows))],
    )


@pytest.fixture
def capsule_object(object_store):
    """A 3 cm radius, 8 cm long capsule (convex) as a second test object."""
    import trimesh

    from dga_engine.objects.store import write_simple_object

    mesh = trimesh.creation.capsule(height=0.08, radius=0.03, count=[16, 16])
    return write_simple_object(object_store, mesh, "capsule r3 h8 cm")
