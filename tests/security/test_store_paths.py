"""Paths read from a dataset's own metadata never reach outside it, and SQL cannot either (issue 18: D1, D23).

Anyone who can write a shared root (an S3 prefix, an NFS folder) can edit a manifest, the snapshot or the
index; none of that may make a reader open, or a writer delete, a file elsewhere.
"""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dga_engine.dataset.store import Dataset, ManifestError, StoreConfig
from tests.helpers import make_grasps

UNSAFE = ["../../../victim.parquet", "data/../../../../victim.parquet", "/tmp/victim.parquet", "data/sub/x.parquet",
          "data/.hidden.parquet", "manifests/other.json", "data/x.parquet\n"]


@pytest.fixture
def victim(tmp_path):
    """A Parquet file outside the storage root, next to it: <tmp>/victim.parquet."""
    path = tmp_path / "victim.parquet"
    pq.write_table(pa.table({"grasp_id": ["VICTIM"], "object_id": ["victim"]}), path)
    return path


def _aim_manifest_at(ds: Dataset, key: str, rel: str) -> None:
    mpath = ds.p(f"manifests/{key}.json")
    raw = json.loads(open(mpath).read())
    raw["parts"][0]["path"] = rel
    open(mpath, "w").write(json.dumps(raw))


@pytest.mark.parametrize("rel", UNSAFE)
def test_a_manifest_part_path_outside_data_is_never_deleted_or_read(layout, victim, rel):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    ds.write_shard(make_grasps({"a": 3}), "k")
    ds.write_shard(make_grasps({"b": 2}, seed=1), "other")
    if rel.startswith("../"):
        assert os.path.realpath(ds.p(rel)) == str(victim)  # the repro of issue 18 D1 aims exactly here
    _aim_manifest_at(ds, "k", rel)
    fresh = Dataset(layout)
    with pytest.raises(ManifestError, match="not a file directly under data/"):
        fresh.read()
    with pytest.raises(ManifestError):
        fresh.query("select * from grasps")
    report = fresh.verify()
    assert not report.ok and "not a file directly under data/" in {b["shard"]: b["problem"] for b in report.errors}["k"]
    fresh.write_shard(make_grasps({"a": 2}, seed=5), "k")  # a rerun of that unit (filter with another --config)
    assert victim.exists()
    _aim_manifest_at(fresh, "k", rel)
    assert fresh.delete_shard("k")
    assert victim.exists() and pq.read_table(victim)["grasp_id"].to_pylist() == ["VICTIM"]
    fresh.compact()
    fresh.repair(min_age_s=0)
    assert victim.exists() and "VICTIM" not in fresh.read()["grasp_id"].to_pylist()


@pytest.mark.parametrize("rel", UNSAFE[:4])
def test_a_snapshot_or_index_path_outside_data_is_never_deleted_or_read(layout, victim, rel):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    ds.write_shard(make_grasps({"a": 3}), "k")
    ds.compact()
    spath = ds.p("meta/snapshot.json")
    good = open(spath).read()
    for field in ("file", "index"):
        raw = json.loads(good)
        if field == "file":
            raw["files"][0]["path"] = rel
        else:
            raw["index"] = rel.replace(".parquet", "")
        open(spath, "w").write(json.dumps(raw))
        fresh = Dataset(layout)
        with pytest.raises(ManifestError):
            fresh.read()
        with pytest.raises(ManifestError):
            fresh.compact()  # never rewrites (or deletes) what the damaged snapshot names
        with pytest.raises(ManifestError):
            fresh.query("select count(*) from grasps")
        assert not fresh.verify().ok
        fresh.write_shard(make_grasps({"b": 1}), "k2")  # writers go on
        fresh.delete_shard("k2")
        fresh.repair(min_age_s=0)
        assert victim.exists() and pq.read_table(victim)["grasp_id"].to_pylist() == ["VICTIM"]
        open(spath, "w").write(good)
    assert Dataset(layout).read().num_rows == 3


def test_query_cannot_read_or_write_outside_the_dataset(layout, victim, tmp_path):
    from dga_engine.dataset.query import QueryRefused

    ds = Dataset(layout)
    ds.write_shard(make_grasps({"a": 3}), "k")
    secret = tmp_path / "secret.csv"
    secret.write_text("s\n42\n")
    out = tmp_path / "out.csv"
    refused = [
        f"COPY (SELECT * FROM grasps) TO '{out}'",
        f"COPY grasps TO '{ds.p(ds.shard('k').parts[0].path)}' (FORMAT parquet)",  # not even onto its own files
        f"ATTACH '{tmp_path / 'x.duckdb'}'",
        "SET enable_external_access = true",
        "INSTALL httpfs",
        "SELECT 1; SELECT 2",
        "CREATE TABLE t AS SELECT 1",
    ]
    for sql in refused:
        with pytest.raises(QueryRefused):
            ds.query(sql)
    import duckdb

    for sql in (f"SELECT * FROM read_csv('{secret}')", f"SELECT * FROM read_parquet('{victim}')",
                f"SELECT * FROM read_text('{secret}')", "SELECT * FROM read_parquet('/etc/*')",
                f"SELECT * FROM grasps, read_csv_auto('{secret}')"):
        with pytest.raises(duckdb.Error, match="(?i)permission|disabled"):
            ds.query(sql)
    assert not out.exists() and not (tmp_path / "x.duckdb").exists()
    assert ds.query("SELECT count(*) AS n FROM grasps")["n"].to_pylist() == [3]  # ordinary queries still run
    assert ds.query("EXPLAIN SELECT * FROM grasps").num_rows >= 1


def test_shards_query_cli_refuses_copy_with_a_clear_message(layout, tmp_path):
    from typer.testing import CliRunner

    from dga_engine.cli.main import app

    Dataset(layout).write_shard(make_grasps({"a": 3}), "k")
    out = tmp_path / "out.csv"
    res = CliRunner().invoke(app, ["--root", layout.root, "shards", "query", f"COPY (SELECT 1) TO '{out}'"])
    assert res.exit_code == 1 and "read-only SELECT" in res.stderr and not out.exists()
