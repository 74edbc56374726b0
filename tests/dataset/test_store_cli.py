"""``dga-engine shards``: ls, show, verify and query, for people and (--json) for scripts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from dga_engine.cli.main import app
from dga_engine.dataset.store import Dataset, StoreConfig


@pytest.fixture
def root(layout, grasps, rejects_of):
    ds = Dataset(layout, config=StoreConfig(max_rows_per_shard=10))
    ds.write_shard(grasps({"a": 6, "b": 6}, seed=1), "seed-0")
    ds.write_shard(grasps({"c": 5}, seed=2, round_=1, source="generator"), "round1-0")
    ds.write_rejects(rejects_of(grasps({"a": 2}, filtered=False, seed=3), "unstable"), "seed-0")
    return layout.root


def _run(root, *args):
    return CliRunner().invoke(app, ["--root", root, "shards", *args])


def test_ls(root):
    res = _run(root, "ls", "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"] == 17 and [s["shard"] for s in out["shards"]] == ["round1-0", "seed-0"]
    seed = out["shards"][1]
    assert seed["rows"] == 12 and seed["objects"] == 2 and seed["rounds"] == {"0": 12}
    assert seed["sources"] == {"synthesis": 12} and seed["parts"] == ["seed-0-000", "seed-0-001"] and seed["bytes"] > 0
    text = _run(root, "ls")
    assert text.exit_code == 0 and "seed-0" in text.stdout and "generator (5)" in text.stdout
    assert json.loads(_run(root, "ls", "--dataset", "other", "--json").stdout)["shards"] == []


def test_show(root, layout):
    res = _run(root, "show", "seed-0", "--json")
    assert res.exit_code == 0
    on_disk = json.loads(open(Dataset(layout).p("manifests/seed-0.json")).read())
    assert json.loads(res.stdout) == on_disk
    assert _run(root, "show", "seed-0-001").exit_code == 0  # a part name finds its shard
    text = _run(root, "show", "round1-0")
    assert "joints[24]" in text.stdout and "round1-0" in text.stdout
    missing = _run(root, "show", "nope")
    assert missing.exit_code == 1 and "no shard 'nope'" in missing.stderr


def test_verify_ok_then_a_flipped_byte_fails_naming_the_shard(root, layout):
    res = _run(root, "verify", "--json")
    assert res.exit_code == 0
    assert json.loads(res.stdout) == {"ok": True, "shards": 2, "rows": 17, "bad": []}
    assert "ok: 2 shards, 17 rows" in _run(root, "verify").stdout

    ds = Dataset(layout)
    path = ds.p(ds.shard("round1-0").parts[0].path)
    data = bytearray(open(path, "rb").read())
    data[100] ^= 0xFF
    open(path, "wb").write(bytes(data))
    res = _run(root, "verify", "--json")
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert set(out) == {"ok", "shards", "rows", "bad"} and out["ok"] is False and out["rows"] == 12
    assert [b["shard"] for b in out["bad"]] == ["round1-0"] and out["bad"][0]["level"] == "error"
    text = _run(root, "verify")
    assert text.exit_code == 1 and "bad shards: round1-0" in text.stderr and "FAILED" in text.stdout


def test_verify_repair_clears_warnings(root, layout):
    ds = Dataset(layout)
    open(ds.p("data/.x.parquet.1.tmp"), "wb").write(b"partial")
    res = _run(root, "verify", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["bad"][0]["level"] == "warning"
    res = _run(root, "verify", "--repair", "--min-age", "0", "--json")
    assert res.exit_code == 0 and json.loads(res.stdout)["bad"] == []


def test_query(root):
    res = _run(root, "query", "select object_id, count(*) as n from grasps group by 1 order by 1", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout) == {
        "columns": ["object_id", "n"],
        "rows": [{"object_id": "a", "n": 6}, {"object_id": "b", "n": 6}, {"object_id": "c", "n": 5}],
    }
    rej = json.loads(_run(root, "query", "select reason, count(*) as n from rejects group by 1", "--json").stdout)
    assert rej["rows"] == [{"reason": "unstable", "n": 2}]
    text = _run(root, "query", "select source, count(*) as n from grasps group by 1 order by 1")
    assert text.exit_code == 0 and "generator" in text.stdout and "2 rows" in text.stdout
    bad = _run(root, "query", "select nope from grasps")
    assert bad.exit_code == 1 and "query failed" in bad.stderr


def test_unknown_schema_version_is_a_clean_cli_error(root, layout):
    ds = Dataset(layout)
    raw = json.loads(open(ds.p("manifests/seed-0.json")).read())
    raw["schema_version"] = 7
    open(ds.p("manifests/seed-0.json"), "w").write(json.dumps(raw))
    res = _run(root, "ls")
    assert res.exit_code == 1 and "schema version 7" in res.stderr and "upgrade" in res.stderr
    assert _run(root, "verify").exit_code == 1
