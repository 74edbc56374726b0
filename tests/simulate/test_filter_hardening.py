"""One bad grasp or object never ends a filter run; accepted grasps leave in the stored convention."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import trimesh

from dga_engine.dataset.schema import GRASP_SCHEMA, pose_arrays
from dga_engine.simulate import decide
from dga_engine.simulate.engine import filter_table
from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T, grasp_table


def _with(table: pa.Table, scale=None, quat=None) -> pa.Table:
    if scale is not None:
        table = table.set_column(table.schema.get_field_index("object_scale"), GRASP_SCHEMA.field("object_scale"),
                                 pa.array(np.asarray(scale, dtype=np.float32)))
    if quat is not None:
        flat = pa.array(np.asarray(quat, dtype=np.float32).reshape(-1), pa.float32())
        table = table.set_column(table.schema.get_field_index("rotation"), GRASP_SCHEMA.field("rotation"),
                                 pa.FixedSizeListArray.from_arrays(flat, 4))
    return table


def test_absurd_object_scales_are_invalid_poses_not_an_abort(layout, box_object):
    table = _with(grasp_table([(box_object.object_id, CAGE_T, CAGE_QUAT, CAGE_Q)] * 4), scale=[1.0, 1e-30, 1e30, 1e-4])
    out = filter_table(layout, table)
    reasons = out.column("reason").to_pylist()
    assert reasons[0] is None and reasons[1:] == ["invalid_pose"] * 3
    detail = out.column("detail").to_pylist()[1]
    assert "object_scale 1e-30 is outside" in detail and f"{decide.OBJECT_SCALE_RANGE[0]:g}" in detail


def test_an_object_mujoco_refuses_is_a_sim_error_for_its_grasps_only(layout, object_store, box_object):
    from dga_engine.objects.store import write_simple_object

    box = trimesh.creation.box(extents=[0.05, 0.05, 0.10])
    tiny = trimesh.Trimesh(vertices=[[0, 0, 0], [1e-5, 0, 0], [0, 1e-5, 0], [0, 0, 1e-5]],
                           faces=[[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    bad = write_simple_object(
        object_store, box, "box with a speck", parts=[box, tiny], object_id="obj-speck00000000001"
    )
    table = grasp_table([(bad.object_id, CAGE_T, CAGE_QUAT, CAGE_Q), (box_object.object_id, CAGE_T, CAGE_QUAT, CAGE_Q)])
    out = filter_table(layout, table)
    rows = out.select(["object_id", "reason", "detail"]).to_pylist()
    assert rows[0]["reason"] == "sim_error" and "mesh volume is too small" in rows[0]["detail"], rows[0]
    assert "\n" not in rows[0]["detail"] and len(rows[0]["detail"]) <= 300
    assert rows[1]["reason"] is None  # the other object's grasp is filtered as ever


def test_accepted_quaternions_leave_unit_with_w_positive(layout, box_object):
    q = np.array([CAGE_QUAT] * 3, dtype=np.float64)
    q[0] *= 1.005  # within quat_norm_tol: accepted, and stored normalised
    q[1] *= -1.0  # the same rotation with w < 0
    q[2] *= 3.0  # far off: invalid, kept as given so the reject shows what was wrong
    table = _with(grasp_table([(box_object.object_id, CAGE_T, CAGE_QUAT, CAGE_Q)] * 3), quat=q)
    out = filter_table(layout, table)
    assert out.column("reason").to_pylist() == [None, None, "invalid_pose"]
    got = pose_arrays(out)["rotation"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(got[:2], axis=1), 1.0, atol=1e-6)
    assert (got[:2, 0] >= 0).all()
    np.testing.assert_allclose(got[:2], np.array([CAGE_QUAT] * 2) / np.linalg.norm(CAGE_QUAT), atol=1e-6)
    np.testing.assert_allclose(got[2], q[2], rtol=1e-6)
