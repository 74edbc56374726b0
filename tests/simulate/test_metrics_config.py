"""Metrics on hand-made tables, and the configuration's contract."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from dga_engine.dataset.schema import GRASP_SCHEMA
from dga_engine.simulate import FilterConfig
from dga_engine.simulate.metrics import diversity, diversity_ddof1, format_table, summarise
from tests.helpers import CAGE_QUAT, CAGE_T, grasp_table


def _filtered(suc1, suc6, pen_ho, pen_oh, objects, joints, pen_dga=None):
    t = grasp_table([(o, CAGE_T, CAGE_QUAT, q) for o, q in zip(objects, joints)])
    for name, values, typ in (
        ("suc1", suc1, pa.bool_()),
        ("suc6", suc6, pa.bool_()),
        ("pen_hand_object_mm", pen_ho, pa.float32()),
        ("pen_object_hand_mm", pen_oh, pa.float32()),
    ):
        t = t.set_column(t.schema.get_field_index(name), GRASP_SCHEMA.field(name), pa.array(values, typ))
    if pen_dga is not None:
        t = t.set_column(
            t.schema.get_field_index("pen_dga_mm"), GRASP_SCHEMA.field("pen_dga_mm"), pa.array(pen_dga, pa.float32())
        )
    return t


def reference_div(qpos_by_object: dict, success_by_object: dict) -> float:
    """DGA's diversity_tester, written out: per object, np.sqrt(var(axis=0)) of its successful grasps'
    joints if it has any; stack, mean over objects (axis 0), then mean over joints."""
    qpos_std = []
    for name in qpos_by_object:
        q = qpos_by_object[name][success_by_object[name], :]
        if q.shape[0]:
            qpos_std.append(np.sqrt(q.var(axis=0)))
    return float(np.stack(qpos_std, axis=0).mean(axis=0).mean())


def test_summarise_known_values():
    q = np.zeros((5, 24))
    q[0, 0], q[1, 0] = 0.1, 0.3  # object a: two successes differing in one joint
    q[2, 5] = 1.0  # object a: a failure (ignored by Div)
    table = _filtered(
        suc1=[True, True, True, False, None],
        suc6=[True, True, False, False, None],  # the last row was not simulated
        pen_ho=[1.0, 2.0, 3.0, 6.0, None],
        pen_oh=[0.1, 0.2, 0.3, 0.4, None],
        objects=["a", "a", "a", "b", "c"],
        joints=q.tolist(),
    )
    m = summarise(table)
    assert m["grasps"] == 5 and m["n_simulated"] == 4
    assert m["suc1"] == pytest.approx(0.75) and m["suc6"] == pytest.approx(0.5)
    assert m["pen_mm"] is None and m["pen_succ_mm"] is None  # no per-grasp reference Pen in the table
    assert m["pen_hand_object_mm"] == pytest.approx(3.0) and m["pen_object_hand_mm"] == pytest.approx(0.25)
    assert m["div"] == pytest.approx(np.std([0.1, 0.3], ddof=0) / 24, rel=1e-5)
    assert m["div_ddof1"] == pytest.approx(np.std([0.1, 0.3], ddof=1) / 24, rel=1e-5)
    assert m["object_success"] == pytest.approx(0.5)  # a succeeded; b simulated and failed; c never simulated
    assert "accepted_rate" not in m
    json.dumps(m)
    text = format_table(m)
    assert "Suc.6" in text and "50.0 %" in text


def test_summarise_empty_and_unsimulated():
    m = summarise(GRASP_SCHEMA.empty_table())
    assert m["grasps"] == 0 and m["suc6"] is None and m["div"] is None and m["object_success"] is None
    assert "-" in format_table(m)


def test_diversity_ddof1_needs_two_successes_per_object():
    q = np.arange(24 * 3, dtype=float).reshape(3, 24)
    ids = np.array(["a", "a", "b"], dtype=object)
    assert diversity_ddof1(q, ids, np.array([True, True, True])) == pytest.approx(np.std([0, 24], ddof=1))
    assert diversity_ddof1(q, ids, np.array([True, False, True])) is None


def test_div_is_the_reference_formula():
    rng = np.random.default_rng(3)
    # Objects with 4, 1 (counts 0) and 0 (left out) successes among their grasps, and a failed outlier.
    qpos = {"a": rng.normal(size=(6, 24)), "b": rng.normal(size=(3, 24)), "c": rng.normal(size=(2, 24))}
    ok = {"a": np.array([1, 1, 0, 1, 1, 0], bool), "b": np.array([0, 1, 0], bool), "c": np.zeros(2, bool)}
    qpos["a"][2] += 100.0  # a failure far away must not count
    joints = np.concatenate([qpos[k] for k in qpos])
    ids = np.concatenate([[k] * len(qpos[k]) for k in qpos]).astype(object)
    success = np.concatenate([ok[k] for k in qpos])
    assert diversity(joints, ids, success) == pytest.approx(reference_div(qpos, ok), rel=1e-12)
    # a single success counts as 0: the mean over two objects halves object a's figure
    only_a = reference_div({"a": qpos["a"]}, {"a": ok["a"]})
    assert diversity(joints, ids, success) == pytest.approx(only_a / 2, rel=1e-12)
    assert diversity(joints, ids, np.zeros(len(ids), bool)) is None


def test_pen_is_the_mean_of_the_per_grasp_reference_values():
    q = np.zeros((4, 24))
    table = _filtered(suc1=[True, True, False, None], suc6=[True, False, False, None], pen_ho=[1.0, 2.0, 3.0, None],
                      pen_oh=[0.0, 0.0, 0.0, None], objects=["a"] * 4, joints=q.tolist(), pen_dga=[4.0, 8.0, 0.0, 6.0])
    m = summarise(table)
    # test.py: "across all grasps" (every grasp has a value) and "across succ grasps" (Suc.6 ones)
    assert m["pen_mm"] == pytest.approx(np.mean([4.0, 8.0, 0.0, 6.0]))
    assert m["pen_succ_mm"] == pytest.approx(4.0)
    assert m["pen_hand_object_mm"] == pytest.approx(2.0)
    assert "Pen (reference)" in format_table(m)


def test_config_defaults_follow_the_paper():
    c = FilterConfig()
    assert (c.max_displacement, c.max_pen_hand_object_mm, c.max_pen_object_hand_mm) == (0.02, 10.0, 1.0)
    assert c.directions_required == 6 and c.push_force_per_volume == 500.0 and c.friction == 2.0 and c.density == 1000.0
    # A free object must cover more than the 2 cm limit within one push.
    accel = c.push_force_per_volume / c.density
    assert 0.5 * accel * c.push_time**2 > 1.5 * c.max_displacement
    assert c.close_steps > 0 and c.push_steps == round(c.push_time / c.timestep)


def test_presets_and_their_versions():
    default = FilterConfig()
    assert FilterConfig.preset("dga-engine") == default
    # The default's version string is the one written into grasps before the presets existed.
    assert default.protocol_version == "dga-push6/1+8f960dc3d2"
    ref = FilterConfig.preset("dga-reference")
    assert ref.protocol_version.startswith("dga-reference/1+")
    assert ref.replace(friction=1.0).protocol_version != ref.protocol_version
    assert default.replace(object_linear_damping=10.0).protocol_version != default.protocol_version
    # DGA's evaluator: grasp_test_force.yaml and grasp_test_force_shadowhand.py
    assert (ref.friction, ref.density, ref.object_linear_damping, ref.object_angular_damping) == (
        2.0,
        1000.0,
        10.0,
        100.0,
    )
    assert ref.push_force_per_volume == 500.0 and ref.push_steps == 50 and ref.timestep == pytest.approx(1 / 60)
    assert ref.sequential and ref.displacement == "end" and not ref.stops_early and ref.max_displacement == 0.02
    assert ref.squeeze == "adam-sign" and ref.squeeze_lr == 0.5 and ref.close_margin == 0.005
    assert ref.close_time == pytest.approx(200 / 60) and ref.simulate_penetrating
    assert FilterConfig.from_dict(ref.to_dict()) == ref
    with pytest.raises(ValueError, match="unknown filter protocol"):
        FilterConfig.preset("isaac")
    with pytest.raises(ValueError, match="displacement"):
        FilterConfig(displacement="mean")


def test_config_round_trip_and_version():
    c = FilterConfig()
    assert FilterConfig.from_dict(c.to_dict()) == c
    assert c.protocol_version == FilterConfig().protocol_version
    assert c.replace(friction=1.0).protocol_version != c.protocol_version
    with pytest.raises(ValueError, match="unknown FilterConfig fields"):
        FilterConfig.from_dict({"frction": 1.0})
    with pytest.raises(ValueError, match="directions_required"):
        FilterConfig(directions_required=7)
    with pytest.raises(ValueError, match="integrator"):
        FilterConfig(integrator="rk5")
