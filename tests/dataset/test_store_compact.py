"""Compaction: small shards become large object-sorted files with an object index; per-key semantics survive."""

from __future__ import annotations

import json
import os
import traceback

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dga_engine.dataset.store import Dataset, StoreConfig

KILLED = 17


def _ids(table):
    return sorted(table["grasp_id"].to_pylist())


def _units(grasps, n, seed=0, per=5, round_=0):
    """``n`` filter-like units: (key, table of one object)."""
    return [(f"filter.s.k{u:03d}.obj{u % 7}", grasps({f"obj{u % 7}": per}, seed=seed * 1000 + u, round_=round_))
            for u in range(n)]


def test_compaction_keeps_every_row_and_builds_large_sorted_files(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    units = _units(grasps, 20)
    for key, t in units:
        ds.write_shard(t, key)
    before = ds.read()
    assert len(os.listdir(ds.p("data"))) == 20 and len(os.listdir(ds.p("manifests"))) == 20
    done = ds.compact()
    assert done["compacted"] and done["keys"] == 20 and done["files_written"] == 1
    assert os.listdir(ds.p("manifests")) == [] and len(os.listdir(ds.p("data"))) == 1
    fresh = Dataset(layout)
    assert _ids(fresh.read()) == _ids(before) and fresh.read().num_rows == 100
    # One row group per object, sorted by object, in the compacted file.
    (path,) = fresh.files()
    meta = pq.read_metadata(path)
    assert meta.num_row_groups == 7
    oids = [meta.row_group(g).column(1).statistics.min for g in range(7)]
    assert oids == sorted(oids) and all(meta.row_group(g).column(1).statistics.max == oids[g] for g in range(7))
    # Every shard is still there, by key, with its rows.
    assert [m.key for m in fresh.shards()] == sorted(k for k, _ in units)
    for key, t in units[:3]:
        assert _ids(fresh.read_shard(key)) == _ids(t)
        assert fresh.shard(key).rows == 5 and fresh.shard(key).compacted
    report = fresh.verify()
    assert report.ok and report.bad == [] and report.rows == 100 and report.shards == 20
    info = json.loads(open(ds.p("meta/info.json")).read())
    assert info["rows"] == 100 and info["keys"] == 20 and info["files"] == 1 and info["objects"] == 7
    assert fresh.query("select count(*) n, count(distinct grasp_id) d from grasps").to_pylist() == [
        {"n": 100, "d": 100}
    ]


def test_object_index_matches_a_full_scan(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0, target_file_rows=40))
    for key, t in _units(grasps, 30, per=4):
        ds.write_shard(t, key)
    ds.compact()
    for key, t in _units(grasps, 6, seed=1, per=3):  # pending shards beside the snapshot
        ds.write_shard(t, key + "b")
    fresh = Dataset(layout)
    assert len([f for f in fresh.files() if "/c-" in f]) >= 3  # the row target splits the files
    everything = fresh.read()
    for oid in sorted(set(everything["object_id"].to_pylist())):
        want = everything.filter(pc.equal(everything["object_id"], oid))
        got = fresh.read_object(oid)
        assert _ids(got) == _ids(want) and got.num_rows == want.num_rows
    # The index names, for each object and key, exactly the rows a scan finds.
    snap = json.loads(open(ds.p("meta/snapshot.json")).read())
    index = pq.read_table(ds.p(snap["index"]))
    for e in index.to_pylist():
        t = pq.read_table(ds.p(snap["files"][e["file"]]["path"])).slice(e["row_start"], e["rows"])
        assert set(t["object_id"].to_pylist()) == {e["object_id"]}
        assert _ids(t) == _ids(
            fresh.read_shard(e["key"]).filter(pc.equal(fresh.read_shard(e["key"])["object_id"], e["object_id"]))
        )


def test_rewriting_and_deleting_a_compacted_key_retire_its_old_rows(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    units = _units(grasps, 10)
    for key, t in units:
        ds.write_shard(t, key)
    ds.compact()
    key, old = units[3]
    new = grasps({"obj3": 2}, seed=999)
    ds.write_shard(new, key)  # a rerun of the unit after compaction
    expect = sorted(set(_ids(ds.read())))
    assert not set(_ids(old)) & set(expect) and set(_ids(new)) <= set(expect) and len(expect) == 47
    fresh = Dataset(layout)
    for reader in (lambda: fresh.read(), lambda: fresh.read_object("obj3").select(["grasp_id"]),
                   lambda: fresh.query("select grasp_id from grasps")):
        got = _ids(reader())
        assert len(got) == len(set(got)) and not set(_ids(old)) & set(got)
    assert _ids(fresh.read_shard(key)) == _ids(new)
    assert fresh.query("select count(*) n from grasps")["n"].to_pylist() == [47]
    assert fresh.info().rows == 47 and fresh.verify().ok
    with pytest.raises(ValueError, match="shards compact"):
        fresh.files()  # the compacted file still holds the old rows: never hand it out
    gone = units[5][0]
    assert fresh.delete_shard(gone) and not fresh.delete_shard(gone)
    assert gone not in [m.key for m in fresh.shards()] and fresh.read().num_rows == 42
    done = fresh.compact()
    assert done["compacted"] and os.listdir(ds.p("manifests")) == []
    after = Dataset(layout)
    assert after.read().num_rows == 42 and _ids(after.read_shard(key)) == _ids(new)
    assert len(after.files()) == 1 and pq.read_metadata(after.files()[0]).num_rows == 42  # purged
    assert after.verify().bad == []


def test_write_shard_compacts_by_itself_after_enough_pending_shards(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=8))
    for key, t in _units(grasps, 20):
        ds.write_shard(t, key)
    assert len(os.listdir(ds.p("manifests"))) == 20 - 16 and ds.read().num_rows == 100
    # Each compaction writes its shards into a new file; small files are merged once there are enough.
    assert len([n for n in os.listdir(ds.p("data")) if n.startswith("c-")]) == 2
    assert Dataset(layout).verify().bad == []
    assert ds.compact(force=True)["files"] == 1 and Dataset(layout).read().num_rows == 100


def test_small_files_are_merged_once_there_are_compact_fanin_of_them(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=2, compact_fanin=3))
    for key, t in _units(grasps, 12):
        ds.write_shard(t, key)
    files = [n for n in os.listdir(ds.p("data")) if n.startswith("c-")]
    assert len(files) < 3 and ds.read().num_rows == 60 and Dataset(layout).verify().bad == []


def _old_layout_dataset(layout, grasps):
    """A dataset as the engine wrote it before compaction existed: one file per shard, info.json v1."""
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0, max_rows_per_shard=6))
    ds.write_shard(grasps({"a": 6, "b": 6}, seed=1), "seed-0")
    ds.write_shard(grasps({"c": 5}, seed=2, round_=1), "round1-0")
    shards = []
    for name in sorted(os.listdir(ds.p("manifests"))):
        mpath = ds.p(f"manifests/{name}")
        raw = json.loads(open(mpath).read())
        for part in raw["parts"]:
            del part["footer_sha256"]
        open(mpath, "w").write(json.dumps(raw))
        shards.append({"key": raw["key"], "write_id": raw["write_id"], "rows": raw["rows"], "bytes": raw["bytes"],
                       "split": None, "parts": [{k: p[k] for k in ("name", "path", "rows", "bytes", "sha256")}
                                                 for p in raw["parts"]]})
    info = Dataset(layout).info().to_json()
    for k in ("keys", "files", "snapshot", "pending_keys"):
        info.pop(k)
    info.update(info_version=1, shards=shards)
    open(ds.p("meta/info.json"), "w").write(json.dumps(info))
    return ds


def test_old_datasets_open_and_compact_in_place(layout, grasps):
    ds = _old_layout_dataset(layout, grasps)
    fresh = Dataset(layout)
    before = fresh.read()
    assert before.num_rows == 17 and fresh.stored_info().keys == 2 and fresh.stored_info().files == 3
    report = fresh.verify()
    assert report.ok and [b["shard"] for b in report.bad] == ["meta/info.json"]  # old summary: a warning
    assert fresh.compact()["keys"] == 2
    after = Dataset(layout)
    assert after.read().to_pylist() != [] and _ids(after.read()) == _ids(before)
    assert after.verify().bad == [] and after.stored_info().info_version == 2
    assert _ids(after.read_shard("seed-0")) == _ids(before.filter(pc.is_in(before["object_id"], pa.array(["a", "b"]))))
    del ds


# --- a compaction killed at every step -------------------------------------------------------------

STEPS = ["temp_file", "after_file", "before_index", "before_snapshot", "before_manifest_cleanup",
         "before_file_cleanup", "before_info"]


def _compact_killed(layout, step: str) -> int:
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:
        real_replace, real_remove = os.replace, os.remove
        from dga_engine import fs as fsio

        real_write = fsio.write_bytes

        def replace(src, dst):
            dst = str(dst)
            if step == "temp_file" and "/data/c-" in dst:
                os._exit(KILLED)
            real_replace(src, dst)
            if step == "after_file" and "/data/c-" in dst:
                os._exit(KILLED)

        def write_bytes(path, data):
            if step == "before_index" and "/meta/index." in path:
                os._exit(KILLED)
            if step == "before_snapshot" and path.endswith("/meta/snapshot.json"):
                os._exit(KILLED)
            if step == "before_info" and path.endswith("/meta/info.json"):
                os._exit(KILLED)
            real_write(path, data)

        def remove(path):
            path = str(path)
            if step == "before_manifest_cleanup" and "/manifests/" in path:
                os._exit(KILLED)
            if step == "before_file_cleanup" and "/data/" in path and not os.path.basename(path).startswith("."):
                os._exit(KILLED)
            real_remove(path)

        os.replace, os.remove, fsio.write_bytes = replace, remove, write_bytes
        Dataset(layout).compact()
        os._exit(0)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(18)


@pytest.mark.parametrize("step", STEPS)
def test_compaction_killed_at_each_step_leaves_the_old_or_the_new_layout(layout, grasps, step):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    for key, t in _units(grasps, 6):
        ds.write_shard(t, key)
    ds.compact()
    rewritten, new = _units(grasps, 3, seed=5)[1][0], grasps({"obj1": 3}, seed=77)
    for key, t in _units(grasps, 4, seed=2):
        ds.write_shard(t, key + "x")
    ds.write_shard(new, rewritten)  # supersedes a compacted key
    ds.delete_shard(_units(grasps, 6)[4][0])  # a tombstone
    expect = _ids(Dataset(layout).read())
    shards = [m.key for m in Dataset(layout).shards()]
    assert _compact_killed(layout, step) == KILLED

    fresh = Dataset(layout)
    report = fresh.verify()
    assert report.ok, report.bad
    assert _ids(fresh.read()) == expect  # nothing lost, nothing doubled, old rows never back
    assert _ids(fresh.query("select grasp_id from grasps")) == expect
    assert [m.key for m in fresh.shards()] == shards and _ids(fresh.read_shard(rewritten)) == _ids(new)
    assert fresh.info().rows == len(expect)
    assert all(b["level"] == "warning" for b in report.bad)
    fresh.repair(min_age_s=0)
    assert Dataset(layout).verify().bad == []
    Dataset(layout).compact()
    again = Dataset(layout)
    assert again.verify().bad == [] and _ids(again.read()) == expect and os.listdir(ds.p("manifests")) == []
