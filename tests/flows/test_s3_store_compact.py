"""The commit lock, compaction and queries on an S3 root (moto's server on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from dga_engine import fs
from dga_engine.dataset.store import Dataset, StoreConfig
from dga_engine.layout import Layout
from dga_engine.lock import FileLock, LockHeld, LockLost
from tests.helpers import make_grasps


def test_lock_on_s3_excludes_names_its_holder_and_takes_over_an_expired_one(s3_root):
    path = f"{s3_root}/meta/x.lock"
    first = FileLock(path, purpose="compact").acquire(timeout=2)
    with pytest.raises(LockHeld, match=r"\(compact\) since 20"):
        FileLock(path).acquire(timeout=0.3)
    first.check()
    first.release()
    assert not fs.exists(path)
    # A holder on another machine that stopped beating two minutes ago.
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=120)).isoformat()
    fs.write_bytes(path, json.dumps({"host": "node-b", "pid": 4242, "since": old, "heartbeat_at": old, "token": "t0",
                                     "ttl_s": 60}).encode())
    assert FileLock(path).holder()["stale"]
    second = FileLock(path).acquire(timeout=2)
    assert FileLock(path).holder()["token"] == second.token
    fs.write_bytes(path, json.dumps({"host": "node-c", "pid": 1, "since": old, "token": "t1"}).encode())
    with pytest.raises(LockLost):
        second.check()  # taken from under it: it must not commit
    second.release()
    assert fs.exists(path)  # not its lock any more: left alone


@pytest.mark.slow
def test_compaction_rewrites_and_queries_on_s3(s3_root):
    layout = Layout.at(s3_root)
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=5))
    tables = {f"filter.s.c{i}.o{i % 3}": make_grasps({f"o{i % 3}": 3}, seed=i) for i in range(12)}
    for key, t in tables.items():
        ds.write_shard(t, key)
    fresh = Dataset(layout)
    assert fresh.read().num_rows == 36 and len(fs.listdir(fresh.p("manifests"))) == 2  # compacted twice by itself
    fresh.write_shard(make_grasps({"o1": 2}, seed=99), "filter.s.c1.o1")  # rewrite a compacted key
    fresh.delete_shard("filter.s.c2.o2")
    assert fresh.read().num_rows == 32 and fresh.read_object("o1").num_rows == 11
    assert fresh.query("SELECT count(*) AS n, count(DISTINCT grasp_id) AS d FROM grasps").to_pylist() == [
        {"n": 32, "d": 32}
    ]
    assert fresh.compact(force=True)["compacted"]
    again = Dataset(layout)
    report = again.verify()
    assert report.ok and report.bad == [] and report.rows == 32 and report.shards == 11
    assert [n for n in fs.listdir(again.p("data"))] == [again.files()[0].rsplit("/", 1)[1]]
    assert again.info().rows == 32 and again.stored_info().files == 1
