import json

from typer.testing import CliRunner

from dga_engine.cli.main import app


def _run(layout, *args):
    return CliRunner().invoke(app, ["--root", layout.root, "synthesize", *args])


def test_synthesize_json(layout, box_object):
    res = _run(layout, "--objects", box_object.object_id, "--per-object", "3", "--iterations", "8", "--batch-size", "3",
               "--seed", "5", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert {"candidates", "accepted", "acceptance", "grasps_per_second", "seconds", "filter_seconds", "config_hash",
            "seed", "failed", "objects"} <= set(data)
    assert data["candidates"] == 3 and data["seed"] == 5 and data["failed"] == 0
    (obj,) = data["objects"]
    assert {"object_id", "key", "candidates", "accepted", "suc1", "suc6", "pen_mm", "div", "seconds", "reasons",
            "stats", "skipped", "error"} <= set(obj)
    assert obj["object_id"] == box_object.object_id and obj["accepted"] is not None
    assert {"energy", "terms", "accept_rate", "pen_mm"} <= set(obj["stats"])


def test_synthesize_unknown_object_and_empty_store(layout, box_object):
    res = _run(layout, "--objects", "obj-nope", "--no-filter")
    assert res.exit_code == 1 and "obj-nope" in res.output
    res = _run(layout, "--preset", "nope")
    assert res.exit_code == 2 and "'nope' is not one of 'fast', 'default'" in res.output


def test_synthesize_all_on_an_empty_store_says_what_to_do(layout):
    res = _run(layout, "--no-filter")
    assert res.exit_code == 1 and "ingest" in res.output
