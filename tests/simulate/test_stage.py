"""The filter stage: units, resume without duplicates, --path input, and the CLI."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dga_engine import runs
from dga_engine.dataset.store import Dataset
from dga_engine.simulate import FilterConfig, run_filter
from dga_engine.simulate.stage import STAGE, unit_key
from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T, FAR_T, IDENTITY, SUNK_T, grasp_table


def _candidates(layout, box_id, capsule_id):
    ds = Dataset(layout, "dga")
    ds.write_candidates(grasp_table([(box_id, CAGE_T, CAGE_QUAT, CAGE_Q), (box_id, FAR_T, IDENTITY, CAGE_Q),
                                     (capsule_id, FAR_T, IDENTITY, CAGE_Q)], source="gen"), "gen", "part-a")
    ds.write_candidates(grasp_table([(box_id, SUNK_T, IDENTITY, CAGE_Q), ("missing-object", CAGE_T, CAGE_QUAT, CAGE_Q)],
                                    source="gen2"), "gen", "part-b")
    return ds


def _ids(table):
    return table.column("grasp_id").to_pylist()


def test_run_filter_writes_shards_and_rejects(layout, box_object, capsule_object):
    ds = _candidates(layout, box_object.object_id, capsule_object.object_id)
    summary = run_filter(layout, source="gen")
    assert (summary.total, summary.accepted, summary.rejected) == (5, 1, 4)
    assert summary.reasons == {"object_missing": 1, "penetration_object_hand": 1, "unstable": 2}
    assert summary.units_done == 4 and summary.units_skipped == 0  # (part-a: box, capsule) (part-b: box, missing)
    assert summary.metrics["suc6"] == pytest.approx(1 / 3)
    accepted = ds.read()
    assert accepted.num_rows == 1 and accepted.column("suc6").to_pylist() == [True]
    rejects = ds.rejects()
    assert sorted(rejects.column("reason").to_pylist()) == [
        "object_missing",
        "penetration_object_hand",
        "unstable",
        "unstable",
    ]
    assert len(runs.done_units(layout, STAGE)) == 4
    # Nothing left to do: a rerun skips every unit and changes nothing.
    again = run_filter(layout, source="gen")
    assert again.units_done == 0 and again.units_skipped == 4 and again.total == 0
    assert sorted(_ids(ds.read()) + _ids(ds.rejects())) == sorted(_ids(accepted) + _ids(rejects))


def test_interrupted_run_resumes_without_duplicates(layout, box_object, capsule_object, monkeypatch):
    ds = _candidates(layout, box_object.object_id, capsule_object.object_id)
    real = Dataset.write_rejects
    calls = {"n": 0}

    def flaky(self, table, key):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk went away")
        return real(self, table, key)

    monkeypatch.setattr(Dataset, "write_rejects", flaky)
    with pytest.raises(OSError):
        run_filter(layout, source="gen")
    assert len(runs.done_units(layout, STAGE)) == 2  # the unit whose rejects failed is not marked done
    monkeypatch.setattr(Dataset, "write_rejects", real)
    resumed = run_filter(layout, source="gen")
    assert resumed.units_skipped == 2 and resumed.units_done == 2
    ids = _ids(ds.read()) + _ids(ds.rejects())
    assert len(ids) == len(set(ids)) == 5
    assert len(runs.done_units(layout, STAGE)) == 4


def test_the_same_candidates_filter_into_a_second_dataset(layout, box_object, capsule_object):
    """One dataset's completion records never mark another dataset's units done."""
    first = _candidates(layout, box_object.object_id, capsule_object.object_id)
    run_filter(layout, source="gen")
    second = Dataset(layout, "second")
    for key in first.candidate_keys("gen"):
        second.write_candidates(first.candidates("gen", keys=[key]), "gen", key)
    summary = run_filter(layout, source="gen", dataset="second")
    assert summary.units_done == 4 and summary.units_skipped == 0
    assert sorted(_ids(second.read())) == sorted(_ids(first.read()))
    assert sorted(_ids(second.rejects())) == sorted(_ids(first.rejects()))
    assert len(runs.done_units(layout, runs.dataset_stage(STAGE, "second"))) == 4
    assert len(runs.done_units(layout, STAGE)) == 4  # the default dataset's records are untouched


def test_changed_protocol_refilters_in_place(layout, box_object, capsule_object):
    ds = _candidates(layout, box_object.object_id, capsule_object.object_id)
    run_filter(layout, source="gen")
    loose = FilterConfig(directions_required=1, max_pen_object_hand_mm=1e3, max_pen_hand_object_mm=1e3)
    summary = run_filter(layout, source="gen", config=loose)
    assert summary.units_done == 4 and summary.units_skipped == 0
    ids = _ids(ds.read()) + _ids(ds.rejects())
    assert len(ids) == len(set(ids)) == 5  # outputs replaced under the same keys
    assert set(ds.read().column("protocol_version").to_pylist()) == {loose.protocol_version}


def test_run_filter_from_a_parquet_folder(layout, box_object, tmp_path):
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    pq.write_table(grasp_table([(box_object.object_id, CAGE_T, CAGE_QUAT, CAGE_Q)], source="ext"), folder / "a.parquet")
    pq.write_table(grasp_table([(box_object.object_id, FAR_T, IDENTITY, CAGE_Q)], source="ext"), folder / "b.parquet")
    summary = run_filter(layout, source="ext", path=str(tmp_path / "in"))
    assert (summary.total, summary.accepted) == (2, 1)
    ds = Dataset(layout, "dga")
    assert [m.key for m in ds.shards()] == [
        unit_key("ext", "nested/a", box_object.object_id),
        unit_key("ext", "nested/b", box_object.object_id),
    ]


def test_missing_input_is_a_clear_error(layout, tmp_path):
    with pytest.raises(FileNotFoundError, match="no candidates"):
        run_filter(layout, source="nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_filter(layout, source="x", path=str(tmp_path / "nope.parquet"))


def test_unit_keys_are_safe_and_distinct():
    from dga_engine.layout import safe_name

    a = unit_key("gen", "dir/file name", "obj-1")
    b = unit_key("gen", "dir_file name", "obj-1")
    assert safe_name(a) == a and safe_name(b) == b and a != b
    long = unit_key("s" * 300, "k" * 300, "o" * 300)
    assert safe_name(long) == long and len(long) <= 200


def test_cli_filter_json(layout, box_object, capsule_object):
    from dga_engine.cli.main import app

    _candidates(layout, box_object.object_id, capsule_object.object_id)
    res = CliRunner().invoke(app, ["--root", layout.root, "filter", "--source", "gen", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"total", "accepted", "rejected", "reasons", "metrics"} <= set(data)
    assert (data["total"], data["accepted"], data["rejected"]) == (5, 1, 4)
    assert set(data["metrics"]) >= {"suc1", "suc6", "pen_mm", "div", "pen_hand_object_mm", "div_ddof1"}
    assert data["metrics"]["pen_mm"] is not None  # the filter's own output carries the reference Pen
    assert data["reasons"]["unstable"] == 2
    human = CliRunner().invoke(app, ["--root", layout.root, "filter", "--source", "gen"])
    assert human.exit_code == 0 and "already done" in human.output
    # another protocol is another set of units: everything is filtered again under it
    ref = CliRunner().invoke(
        app, ["--root", layout.root, "filter", "--source", "gen", "--protocol", "dga-reference", "--json"]
    )
    assert ref.exit_code == 0, ref.output
    data = json.loads(ref.stdout)
    assert data["protocol_version"].startswith("dga-reference/1+") and data["units_skipped"] == 0
    # the evaluator simulates every valid grasp, the sunk one too (the fifth has no object)
    assert data["total"] == 5 and data["metrics"]["n_simulated"] == 4


def test_cli_filter_errors(layout, tmp_path):
    from dga_engine.cli.main import app

    res = CliRunner().invoke(app, ["--root", layout.root, "filter", "--source", "none"])
    assert res.exit_code == 1 and "no candidates" in res.output
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"no_such_field": 1}))
    res = CliRunner().invoke(app, ["--root", layout.root, "filter", "--source", "none", "--config", str(cfg)])
    assert res.exit_code == 1 and "no_such_field" in res.output
    # a value outside a choice: one line naming the valid values, Click's usage-error code 2
    res = CliRunner().invoke(app, ["--root", layout.root, "filter", "--source", "none", "--backend", "bullet"])
    assert res.exit_code == 2 and res.output.strip().count("\n") == 0, res.output
    assert "'--backend': 'bullet' is not one of 'mujoco', 'mujoco-warp', 'isaacgym'" in res.output
    res = CliRunner().invoke(app, ["--root", layout.root, "filter", "--source", "none", "--protocol", "isaac"])
    assert res.exit_code == 2 and "'isaac' is not one of 'dga-engine', 'dga-reference'" in res.output
