"""The refine stage with known outcomes: near misses come back accepted within the bounds, far misses do not."""

from __future__ import annotations

import numpy as np
import pytest

from dga_engine.dataset.schema import pose_table
from dga_engine.refine import ObjectRefiner, RefineConfig
from dga_engine.simulate.engine import filter_table
from tests.refine.nearmiss import near_misses

KINDS = ["valid", "palm2", "fingers2", "deep", "limit0.1", "limit0.4"]


def _table(object_id, t, quat, q):
    return pose_table(object_id, t, quat, q, source="test", source_record_id=[str(i) for i in range(len(t))])


def test_known_outcomes(layout, box_asset):
    t, quat, q = near_misses(box_asset, KINDS)
    raw = filter_table(layout, _table(box_asset.object_id, t, quat, q)).column("reason").to_pylist()
    assert raw == [None, "penetration_object_hand", "penetration_object_hand", "penetration_object_hand",
                   "invalid_pose", "invalid_pose"]

    config = RefineConfig.preset("repair")
    out = ObjectRefiner(box_asset, 1.0, config).refine(t, quat, q)
    assert out.status == ["unchanged", "refined", "refined", "failed", "refined", "failed"]
    # untouched and failed grasps are returned exactly as given
    for i in (0, 3, 5):
        np.testing.assert_array_equal(out.translation[i], t[i].astype(np.float32))
        np.testing.assert_array_equal(out.joints[i], q[i].astype(np.float32))
    assert "THJ2" in out.detail[5] and "0.3 rad" in out.detail[5]
    # the repaired poses pass the filter, and moved no more than the preset allows
    after = filter_table(layout, _table(box_asset.object_id, out.translation, out.rotation, out.joints))
    assert after.column("reason").to_pylist() == [None, None, None, "penetration_object_hand", None, "invalid_pose"]
    refined = np.array([s == "refined" for s in out.status])
    assert (out.joint_change[refined] <= config.max_joint_change + 1e-5).all()
    assert (out.translation_change[refined] <= config.max_translation_change + 1e-5).all()
    assert (out.rotation_change[refined] <= config.max_rotation_change + 1e-5).all()
    assert out.joints[4, 21] <= 0.2094 + 1e-6  # THJ2 pulled back inside its limit
    assert (out.pen_object_hand_mm[refined, 1] <= 1.0).all() and (out.pen_hand_object_mm[refined, 1] <= 10.0).all()


def test_bounds_hold_for_every_refined_grasp(box_asset):
    """Random perturbations of all sizes: whatever the refiner returns as refined is within its bounds."""
    rng = np.random.default_rng(0)
    t, quat, q = near_misses(box_asset, ["valid"] * 24)
    t = t + rng.normal(scale=0.004, size=t.shape)
    q = q + rng.normal(scale=0.15, size=q.shape)
    for config in (RefineConfig.preset("repair"), RefineConfig.preset("repair").replace(max_translation_change=0.002,
                                                                                      max_joint_change=0.05)):
        out = ObjectRefiner(box_asset, 1.0, config).refine(t, quat, q)
        refined = np.array([s == "refined" for s in out.status])
        assert refined.any() or config.max_joint_change < 0.1  # the tight bounds may fix none of these
        assert (out.joint_change[refined] <= config.max_joint_change + 1e-5).all()
        assert (out.translation_change[refined] <= config.max_translation_change + 1e-5).all()
        assert (out.rotation_change[refined] <= config.max_rotation_change + 1e-5).all()
        moved = np.abs(out.joints - q.astype(np.float32)).max(axis=1)
        np.testing.assert_allclose(moved[refined], out.joint_change[refined], atol=1e-5)


def test_config_validation_and_tags():
    with pytest.raises(ValueError, match="unknown refine preset"):
        RefineConfig.preset("fix")
    with pytest.raises(ValueError, match="bounds"):
        RefineConfig(max_translation_change=-1)
    with pytest.raises(ValueError, match="unknown RefineConfig fields"):
        RefineConfig.from_dict({"nope": 1})
    repair, polish = RefineConfig.preset("repair"), RefineConfig.preset("polish")
    assert repair.tag.startswith("repair/1+") and polish.tag.startswith("polish/1+") and repair.tag != polish.tag
    assert repair.replace(threads=2).tag == repair.tag  # threads do not change the poses
