"""Metrics on hand-made tables, and the configuration's contract."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from dga_engine.dataset.schema import GRASP_SCHEMA
from dga_engine.simulate import FilterConfig
from dga_engine.simulate.metrics import diversity, format_table, summarise

from .conftest import CAGE_QUAT, CAGE_T, grasp_table


def _filtered(suc1, suc6, pen_ho, pen_oh, objects, joints):
    t = grasp_table([(o, CAGE_T, CAGE_QUAT, q) for o, q in zip(objects, joints)])
    for name, values, typ in (("suc1", suc1, pa.bool_()), ("suc6", suc6, pa.bool_()),
                              ("pen_hand_object_mm", pen_ho, pa.float32()), ("pen_object_hand_mm", pen_oh, pa.float32())):
        t = t.set_column(t.schema.get_field_index(name), GRASP_SCHEMA.field(name), pa.array(values, typ))
    return t


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
    assert m["pen_mm"] == pytest.approx(3.0) and m["pen_object_hand_mm"] == pytest.approx(0.25)
    assert m["div"] == pytest.approx(np.std([0.1, 0.3], ddof=1) / 24, rel=1e-5)
    assert m["object_success"] == pytest.approx(0.5)  # a succeeded; b simulated and failed; c never simulated
    assert "accepted_rate" not in m
    json.dumps(m)
    text = format_table(m)
    assert "Suc.6" in text and "50.0 %" in text


def test_summarise_empty_and_unsimulated():
    m = summarise(GRASP_SCHEMA.empty_table())
    assert m["grasps"] == 0 and m["suc6"] is None and m["div"] is None and m["object_success"] is None
    assert "-" in format_table(m)


def test_diversity_needs_two_successes_per_object():
    q = np.arange(24 * 3, dtype=float).reshape(3, 24)
    ids = np.array(["a", "a", "b"], dtype=object)
    assert diversity(q, ids, np.array([True, True, True])) == pytest.approx(np.std([0, 24], ddof=1))
    assert diversity(q, ids, np.array([True, False, True])) is None


def test_config_defaults_follow_the_paper():
    c = FilterConfig()
    assert (c.max_displacement, c.max_pen_hand_object_mm, c.max_pen_object_hand_mm) == (0.02, 10.0, 1.0)
    assert c.directions_required == 6 and c.push_force_per_volume == 500.0 and c.friction == 2.0 and c.density == 1000.0
    # A free object must cover more than the 2 cm limit within one push.
    accel = c.push_force_per_volume / c.density
    assert 0.5 * accel * c.push_time**2 > 1.5 * c.max_displacement
    assert c.close_steps > 0 and c.push_steps == round(c.push_time / c.timestep)


def test_config_round_trip_and_version():
    c = FilterConfig()
    assert FilterConfig.from_dict(c.to_dict()) == c
    assert c.protocol_version == FilterConfig().protocol_version
    assert c.with_(friction=1.0).protocol_version != c.protocol_version
    with pytest.raises(ValueError, match="unknown FilterConfig fields"):
        FilterConfig.from_dict({"frction": 1.0})
    with pytest.raises(ValueError, match="directions_required"):
        FilterConfig(directions_required=7)
    with pytest.raises(ValueError, match="integrator"):
        FilterConfig(integrator="rk5")
