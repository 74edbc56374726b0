"""verify: checksums, sizes, schema, row counts, manifests, orphans, the summary; unknown versions fail loudly."""

from __future__ import annotations

import json
import os

import pytest

from dga_engine.dataset.manifest import SchemaVersionError
from dga_engine.dataset.store import CorruptShardError, Dataset, ManifestError, StoreConfig


@pytest.fixture
def two_shards(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(max_rows_per_shard=10))
    ds.write_shard(grasps({"a": 6, "b": 6}, seed=1), "k")  # parts k-000, k-001
    ds.write_shard(grasps({"c": 5}, seed=2), "other")
    return Dataset(layout)


def _errors(report):
    return {(b["shard"], b["level"]) for b in report.bad}


def test_clean_dataset_verifies(two_shards):
    report = two_shards.verify()
    assert report.to_dict() == {"ok": True, "shards": 2, "rows": 17, "bad": []}


def test_flipped_byte_is_caught_and_named(two_shards):
    part = two_shards.shard("k").parts[1]
    path = two_shards.p(part.path)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    report = two_shards.verify()
    assert not report.ok and report.bad_shards() == ["k-001"]
    assert "sha256" in report.errors[0]["problem"] and "rewrite shard k" in report.errors[0]["problem"]
    assert report.rows == 11  # the corrupt part (6 rows) is not counted


def test_truncated_missing_and_damaged_files(two_shards, grasps):
    k0 = two_shards.shard("k").parts[0]
    with open(two_shards.p(k0.path), "r+b") as fh:
        fh.truncate(k0.bytes - 10)
    os.remove(two_shards.p(two_shards.shard("other").parts[0].path))
    report = two_shards.verify()
    problems = {b["shard"]: b["problem"] for b in report.errors}
    assert "truncated" in problems["k-000"] and "missing" in problems["other"]
    with pytest.raises(CorruptShardError, match="part k-000 of shard k"):
        two_shards.read()
    with pytest.raises(FileNotFoundError):
        two_shards.read(object_ids=["c"])


def test_manifest_problems(two_shards, grasps):
    mpath = two_shards.p("manifests/other.json")
    raw = json.loads(open(mpath).read())
    raw["parts"][0]["objects"][0][0] = "not-c"  # the index lies about which object the row group holds
    open(mpath, "w").write(json.dumps(raw))
    report = two_shards.verify()
    assert not report.ok and "not-c" in {b["shard"]: b["problem"] for b in report.errors}["other"]

    raw["parts"][0]["path"] = "../../../escape.parquet"
    open(mpath, "w").write(json.dumps(raw))
    assert "not a file directly under data/" in Dataset(two_shards.layout).verify().errors[0]["problem"]

    open(mpath, "w").write("{ not json")
    fresh = Dataset(two_shards.layout)
    report = fresh.verify()
    assert ("other", "error") in _errors(report) and "unreadable" in report.errors[0]["problem"]
    with pytest.raises(ManifestError, match="shards verify"):
        fresh.read()  # never a silently incomplete answer
    # Writers are not blocked by another shard's damaged manifest; rewriting the damaged key repairs it.
    fresh.write_shard(grasps(["n"]), "new")
    fresh.write_shard(grasps(["c"]), "other")
    assert fresh.verify().ok and sorted(set(fresh.read()["object_id"].to_pylist())) == ["a", "b", "c", "n"]


def test_orphans_and_temp_files_are_warnings_and_invisible(two_shards, grasps):
    # A complete Parquet file that no manifest names, e.g. from a crashed write.
    stray = Dataset(two_shards.layout, "scratch")
    stray_part = stray.write_shard(grasps({"ghost": 4}), "k").parts[0]
    os.replace(stray.p(stray_part.path), two_shards.p("data/k-999.deadbeef0000.parquet"))
    open(two_shards.p("data/.k.parquet.123.tmp"), "wb").write(b"half a shard")
    report = two_shards.verify()
    assert report.ok and {b["level"] for b in report.bad} == {"warning"}
    assert {b["shard"] for b in report.bad} == {"data/k-999.deadbeef0000.parquet", "data/.k.parquet.123.tmp"}
    assert "ghost" not in two_shards.read()["object_id"].to_pylist()
    assert two_shards.read_object("ghost").num_rows == 0
    assert two_shards.query("select count(*) n from grasps")["n"].to_pylist() == [17]


def test_stale_summary_is_a_warning_and_info_uses_the_manifests(two_shards):
    two_shards.rebuild_info()
    ipath = two_shards.p("meta/info.json")
    raw = json.loads(open(ipath).read())
    raw["snapshot"] = "20260101T000000-deadbeef"  # as if an interrupted compaction left the previous summary
    raw["rows"] = 12
    open(ipath, "w").write(json.dumps(raw))
    report = two_shards.verify()
    assert report.ok and [b["shard"] for b in report.bad] == ["meta/info.json"] and "stale" in report.bad[0]["problem"]
    assert two_shards.info().rows == 17  # rebuilt in memory from the manifests
    two_shards.repair()
    assert two_shards.verify().bad == [] and two_shards.stored_info().rows == 17


def test_bad_rejects_file_is_an_error(two_shards, grasps, rejects_of):
    two_shards.write_rejects(rejects_of(grasps(["a"], filtered=False)), "r1")
    open(two_shards.p("rejects/r1.parquet"), "wb").write(b"garbage")
    report = two_shards.verify()
    assert not report.ok and report.bad_shards() == ["rejects/r1"]


def test_unknown_schema_version_fails_loudly_with_the_fix(two_shards, grasps):
    two_shards.rebuild_info()
    ipath = two_shards.p("meta/info.json")
    raw = json.loads(open(ipath).read())
    raw["schema_version"] = 99
    open(ipath, "w").write(json.dumps(raw))
    with pytest.raises(SchemaVersionError, match=r"schema version 99 .*upgrade it \(pip install -U dga-engine\)"):
        two_shards.info()
    with pytest.raises(SchemaVersionError):
        two_shards.write_shard(grasps(["x"]), "new")  # never write into a dataset of an unknown version
    assert not two_shards.verify().ok

    two_shards.rebuild_info()
    mpath = two_shards.p("manifests/other.json")
    raw = json.loads(open(mpath).read())
    raw["schema_version"] = 99
    open(mpath, "w").write(json.dumps(raw))
    fresh = Dataset(two_shards.layout)
    with pytest.raises(SchemaVersionError, match="manifests/other.json"):
        fresh.read()
    assert "schema version 99" in {b["shard"]: b["problem"] for b in fresh.verify().errors}["other"]
