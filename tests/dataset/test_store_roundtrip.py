"""Writing and reading shards: round trip, row groups per object, rewrites, splits, filters, rejects, candidates."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dga_engine.dataset.schema import GRASP_SCHEMA, REJECT_SCHEMA, SCHEMA_VERSION
from dga_engine.dataset.store import CorruptShardError, Dataset, StoreConfig, to_numpy, to_torch


def _by_object(table: pa.Table) -> pa.Table:
    """The order the store keeps: grouped by object_id, input order within an object (Python's sort is stable)."""
    ids = table["object_id"].to_pylist()
    return table.take(pa.array(sorted(range(len(ids)), key=ids.__getitem__), pa.int64()))


def test_round_trip_keeps_every_value_and_writes_manifest_and_info(dataset, grasps):
    table = grasps({"mug": 5, "bunny": 7, "apple": 3})
    m = dataset.write_shard(table, "seed-0000")

    back = dataset.read()
    assert back.schema.equals(GRASP_SCHEMA, check_metadata=False)
    assert back.to_pylist() == _by_object(table).to_pylist()  # same rows, grouped by object, input order kept within
    assert m.rows == 15 and m.object_ids == ["apple", "bunny", "mug"]
    assert m.rounds == {"0": 15} and m.sources == {"synthesis": 15}
    part = m.parts[0]
    assert part.name == "seed-0000" and part.path.startswith("data/seed-0000.") and part.path.endswith(".parquet")
    assert [(o.object_id, o.row_start, o.rows) for o in part.objects] == [
        ("apple", 0, 3),
        ("bunny", 3, 7),
        ("mug", 10, 5),
    ]

    joints = to_numpy(table)["joints"].astype(np.float64)
    st = m.stats["joints"]
    assert st["count"] == 15 and len(st["mean"]) == 24
    np.testing.assert_allclose(st["mean"], joints.mean(0), rtol=1e-6)
    np.testing.assert_allclose(st["min"], joints.min(0))
    np.testing.assert_allclose(st["std"], joints.std(0), rtol=1e-5)
    assert m.stats["suc1"]["true"] == 15

    # The manifest on disk is the same document; the summary (written by compaction) counts it and carries
    # the conventions, but does not list shards (it stays small at any size).
    raw = json.loads(open(dataset.p("manifests/seed-0000.json")).read())
    assert raw["parts"][0]["sha256"] == part.sha256 and raw["schema_version"] == SCHEMA_VERSION
    assert dataset.info().rows == 15 and dataset.info().pending_keys == 1
    dataset.compact()
    info = json.loads(open(dataset.p("meta/info.json")).read())
    from dga_engine.hand import POSE_CONVENTION
    from dga_engine.hand.mjcf import JOINT_NAMES

    assert info["conventions"] == json.loads(json.dumps(POSE_CONVENTION))
    assert info["conventions"]["joint_order"] == list(JOINT_NAMES)
    assert "wxyz" in info["conventions"]["rotation_encoding"]
    assert info["rows"] == 15 and info["objects"] == 3 and info["schema_version"] == SCHEMA_VERSION
    assert info["keys"] == 1 and info["files"] == 1 and "shards" not in info and info["pending_keys"] == 0
    assert {f["name"] for f in info["features"]} == set(GRASP_SCHEMA.names)
    ds_info = dataset.info()
    assert ds_info.rows == 15 and ds_info.snapshot == info["snapshot"] and ds_info.info_version == 2
    assert [m.key for m in dataset.shards()] == ["seed-0000"] and dataset.read().to_pylist() == back.to_pylist()


def test_one_row_group_per_object_and_read_object_reads_only_its_row_group(dataset, grasps, monkeypatch):
    table = grasps({"a": 6, "b": 9, "c": 4, "d": 2})
    m = dataset.write_shard(table, "k")
    path = dataset.p(m.parts[0].path)
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 4
    oid = GRASP_SCHEMA.get_field_index("object_id")
    assert [(meta.row_group(i).column(oid).statistics.min, meta.row_group(i).num_rows) for i in range(4)] == [
        ("a", 6), ("b", 9), ("c", 4), ("d", 2)]

    calls = []
    real = pq.ParquetFile.read_row_groups

    def spy(self, row_groups, *a, **k):
        calls.append(list(row_groups))
        return real(self, row_groups, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("read_object must not scan the file"))
    got = Dataset(dataset.layout).read_object("c")
    assert calls == [[2]]
    assert got.to_pylist() == _by_object(table).filter(pc.equal(_by_object(table)["object_id"], "c")).to_pylist()
    assert Dataset(dataset.layout).read_object("nope").num_rows == 0


def test_read_object_never_touches_other_objects_bytes(dataset, grasps):
    """Zero the column chunks of every other object: a full read fails, the one-object read still works."""
    table = grasps({"a": 50, "b": 50, "c": 50}, seed=3)
    m = dataset.write_shard(table, "k")
    path = dataset.p(m.parts[0].path)
    meta = pq.ParquetFile(path).metadata
    data = bytearray(open(path, "rb").read())
    for g in (0, 2):  # objects a and c
        rg = meta.row_group(g)
        for j in range(rg.num_columns):
            col = rg.column(j)
            start = col.dictionary_page_offset if col.has_dictionary_page else col.data_page_offset
            data[start:start + col.total_compressed_size] = bytes(col.total_compressed_size)
    open(path, "wb").write(bytes(data))

    fresh = Dataset(dataset.layout)
    got = fresh.read_object("b")
    assert got.num_rows == 50 and set(got["object_id"].to_pylist()) == {"b"}
    with pytest.raises(CorruptShardError, match="part k of shard k"):
        fresh.read()
    assert not fresh.verify().ok


def test_rewriting_a_key_replaces_it_atomically_and_cleans_up(dataset, grasps):
    first = grasps({"a": 5, "b": 5}, seed=1)
    second = grasps({"c": 3}, seed=2, round_=1)
    m1 = dataset.write_shard(first, "k")
    dataset.write_shard(grasps({"z": 2}, seed=9), "other")
    m2 = dataset.write_shard(second, "k")
    assert m2.write_id != m1.write_id
    assert sorted(m.key for m in dataset.shards()) == ["k", "other"]
    assert sorted(dataset.read()["object_id"].to_pylist()) == ["c"] * 3 + ["z"] * 2
    assert not os.path.exists(dataset.p(m1.parts[0].path))  # the replaced file is gone
    report = dataset.verify()
    assert report.ok and report.bad == [] and report.rows == 5
    # Same content again: still one shard, same rows.
    dataset.write_shard(second, "k")
    assert dataset.read(object_ids=["c"]).to_pylist() == _by_object(second).to_pylist()
    assert len(os.listdir(dataset.p("data"))) == 2


def test_big_tables_are_split_into_bounded_parts(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(max_rows_per_shard=100))
    table = grasps({"big": 250, "o1": 40, "o2": 40, "o3": 30, "o4": 5}, seed=4)
    m = ds.write_shard(table, "k")
    assert [p.name for p in m.parts] == [f"k-{i:03d}" for i in range(len(m.parts))]
    assert all(0 < p.rows <= 100 for p in m.parts) and m.rows == 365
    # Whole objects stay in one part unless they alone exceed the bound.
    homes = {}
    for p in m.parts:
        for o in p.objects:
            homes.setdefault(o.object_id, []).append(p.name)
    assert len(homes["big"]) == 3 and all(len(homes[o]) == 1 for o in ("o1", "o2", "o3", "o4"))
    assert ds.read().to_pylist() == _by_object(table).to_pylist()
    assert (
        ds.read_object("big").to_pylist()
        == _by_object(table).filter(pc.equal(_by_object(table)["object_id"], "big")).to_pylist()
    )
    assert ds.verify().ok and ds.shard("k").parts[2].name == "k-002"
    # Statistics merged over the parts equal statistics over the whole table.
    joints = to_numpy(table)["joints"].astype(np.float64)
    for stats in (m.stats["joints"], ds.info().stats["joints"]):
        np.testing.assert_allclose(stats["mean"], joints.mean(0), rtol=1e-6)
        np.testing.assert_allclose(stats["std"], joints.std(0), rtol=1e-5)
        np.testing.assert_array_equal(np.float32(stats["max"]), to_numpy(table)["joints"].max(0))  # exact in float32
    pen = table["pen_hand_object_mm"].to_numpy().astype(np.float64)
    assert m.stats["pen_hand_object_mm"]["mean"] == pytest.approx(pen.mean(), rel=1e-6)
    assert m.stats["suc6"]["true"] == sum(table["suc6"].to_pylist())
    # Rewriting with a small table: one part named after the key, the old parts are gone.
    m2 = ds.write_shard(grasps({"x": 3}), "k")
    assert [p.name for p in m2.parts] == ["k"] and sorted(os.listdir(ds.p("data"))) == [m2.parts[0].path[5:]]
    # The byte bound splits too.
    by_bytes = Dataset(layout, "bytes", config=StoreConfig(max_bytes_per_shard=table.nbytes // 3))
    assert len(by_bytes.write_shard(table, "k").parts) >= 3


def test_filters_by_object_round_source_and_columns(dataset, grasps):
    dataset.write_shard(grasps({"a": 4, "b": 4}, source="synthesis", round_=0), "r0")
    dataset.write_shard(grasps({"a": 3, "c": 2}, source="generator", round_=1, seed=1), "r1")
    assert dataset.read(rounds=1).num_rows == 5
    assert dataset.read(rounds=[0, 1]).num_rows == 13
    assert dataset.read(sources="generator", rounds=0).num_rows == 0
    a = dataset.read_object("a")
    assert a.num_rows == 7 and set(a["round"].to_pylist()) == {0, 1}
    t = dataset.read(object_ids=["a", "c"], sources=["generator"], columns=["grasp_id", "joints"])
    assert t.column_names == ["grasp_id", "joints"] and t.num_rows == 5
    with pytest.raises(ValueError, match="unknown columns"):
        dataset.read(columns=["nope"])
    assert dataset.object_ids() == ["a", "b", "c"]
    batches = list(dataset.iter_batches(columns=["object_id", "joints"]))
    assert [b.num_rows for b in batches] == [8, 5] and batches[0].column_names == ["object_id", "joints"]
    assert dataset.info().rounds == {"0": 8, "1": 5} and dataset.info().sources == {"generator": 5, "synthesis": 8}


def test_bad_input_is_refused_and_nothing_is_written(dataset, grasps):
    good = grasps(["a"])
    with pytest.raises(ValueError, match="missing columns"):
        dataset.write_shard(good.drop_columns(["joints"]), "k")
    with pytest.raises(ValueError, match="unsafe name"):
        dataset.write_shard(good, "../escape")
    with pytest.raises(TypeError):
        dataset.write_shard(good.to_pandas(), "k")
    assert dataset.shards() == [] and not os.path.exists(dataset.p("data"))


def test_empty_write_commits_an_empty_shard_and_delete(dataset, grasps):
    dataset.write_shard(grasps(["a"]), "k")
    m = dataset.write_shard(GRASP_SCHEMA.empty_table(), "k")
    assert m.rows == 0 and m.parts == ()
    assert dataset.read().num_rows == 0 and dataset.read().schema.equals(GRASP_SCHEMA, check_metadata=False)
    assert dataset.delete_shard("k") and dataset.shards() == [] and not dataset.delete_shard("k")
    assert dataset.verify().bad == []


def test_rejects_and_candidates(dataset, grasps, rejects_of):
    rej = rejects_of(grasps({"a": 2, "b": 3}, filtered=False), "penetration_hand_object")
    dataset.write_rejects(rej, "batch-1")
    dataset.write_rejects(rejects_of(grasps(["c"], seed=5, filtered=False), "unstable"), "batch-2")
    out = dataset.rejects()
    assert out.schema.equals(REJECT_SCHEMA, check_metadata=False) and out.num_rows == 9
    assert dict(zip(*np.unique(out["reason"].to_numpy(zero_copy_only=False), return_counts=True))) == {
        "penetration_hand_object": 5, "unstable": 4}
    dataset.write_rejects(rejects_of(grasps(["c"], seed=5, filtered=False), "sim_error"), "batch-2")  # idempotent
    assert dataset.rejects(["batch-2"])["reason"].to_pylist() == ["sim_error"] * 4
    with pytest.raises(ValueError, match="unknown reject reasons"):
        dataset.write_rejects(rejects_of(grasps(["c"], filtered=False), "because"), "batch-3")
    assert dataset.reject_keys() == ["batch-1", "batch-2"]

    cand = grasps({"a": 3, "b": 1}, filtered=False)
    dataset.write_candidates(cand, "synthesis", "obj-a")
    dataset.write_candidates(grasps(["z"], filtered=False, seed=7), "synthesis", "obj-z")
    assert dataset.candidate_keys("synthesis") == ["obj-a", "obj-z"] and dataset.candidate_keys("nothing") == []
    assert dataset.candidates("synthesis", keys=["obj-a"]).to_pylist() == cand.to_pylist()  # order kept
    assert dataset.candidates("synthesis").num_rows == 8
    assert dataset.shards() == []  # neither rejects nor candidates are shards
    assert dataset.verify().ok


def test_verdicts_select_accepted_and_rejected_alike(dataset, grasps, rejects_of):
    dataset.write_shard(grasps({"a": 3}, source="synthesis", round_=0), "s0")
    dataset.write_shard(grasps({"b": 2}, source="generator", round_=1, seed=1), "g1")
    dataset.write_rejects(rejects_of(grasps({"a": 4}, source="synthesis", seed=2, filtered=False)), "rs0")
    dataset.write_rejects(rejects_of(grasps({"b": 5}, source="generator", round_=1, seed=3, filtered=False)), "rg1")

    everything = dataset.verdicts()
    assert (everything.accepted.num_rows, everything.rejected.num_rows, everything.judged.num_rows) == (5, 9, 14)
    one = dataset.verdicts(rounds=[1])
    assert (one.accepted.num_rows, one.rejected.num_rows) == (2, 5)
    assert set(one.judged.column("source").to_pylist()) == {"generator"}
    synth = dataset.verdicts(sources=["synthesis"])
    assert (synth.accepted.num_rows, synth.rejected.num_rows) == (3, 4)
    assert synth.judged.column_names == synth.accepted.column_names  # no reason column: the accepted's columns
    assert dataset.verdicts(rounds=[0], sources=["generator"]).judged.num_rows == 0


def test_numpy_and_torch_views(dataset, grasps):
    dataset.write_shard(grasps({"a": 3, "b": 2}), "k")
    t = dataset.read()
    arrays = to_numpy(t)
    assert (
        arrays["translation"].shape == (5, 3)
        and arrays["rotation"].shape == (5, 4)
        and arrays["joints"].shape == (5, 24)
    )
    assert all(a.dtype == np.float32 for a in arrays.values())
    np.testing.assert_allclose(np.linalg.norm(arrays["rotation"], axis=1), 1.0, rtol=1e-6)
    tensors = to_torch(t)
    import torch

    assert tensors["joints"].dtype == torch.float32 and tuple(tensors["joints"].shape) == (5, 24)
    assert torch.equal(tensors["translation"], torch.from_numpy(arrays["translation"]))


def test_concurrent_writers_never_corrupt(layout, grasps):
    errors = []

    def writer(w):
        try:
            ds = Dataset(layout)  # each writer its own instance, like separate processes
            for i in range(5):
                ds.write_shard(grasps({f"o{w}{i}": 3}, seed=10 * w + i), f"w{w}-{i}")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ds = Dataset(layout)
    assert len(ds.shards()) == 15 and ds.read().num_rows == 45
    report = ds.verify()
    assert report.ok and report.rows == 45
    assert report.bad == []
    assert ds.info().rows == 45 and ds.compact()["keys"] == 15 and ds.stored_info().rows == 45


def test_fsspec_root_round_trip(grasps):
    from dga_engine.layout import Layout

    layout = Layout.at("memory://dga-store-test")
    ds = Dataset(layout)
    table = grasps({"a": 3, "b": 4})
    ds.write_shard(table, "k")
    ds.write_rejects(grasps(["r"], filtered=False).append_column("reason", pa.array(["unstable"] * 4))
                     .append_column("detail", pa.nulls(4, pa.string())), "k")
    fresh = Dataset(layout)
    assert fresh.read().to_pylist() == _by_object(table).to_pylist()
    assert fresh.read_object("b").num_rows == 4 and fresh.rejects().num_rows == 4
    assert fresh.verify().to_dict() == {"ok": True, "shards": 1, "rows": 7, "bad": []}
    assert fresh.query("select count(*) as n from grasps where object_id = 'a'")["n"].to_pylist() == [3]
    import fsspec

    fsspec.filesystem("memory").rm("/dga-store-test", recursive=True)


def test_a_schema_v1_dataset_reads_verifies_and_queries_as_v2(layout, grasps):
    """Shards written before schema v2 (no refine fields, no pen_dga_mm) stay readable: those columns read as null."""
    import hashlib

    import pyarrow.parquet as pq

    from dga_engine.dataset.schema import ADDED_IN_V2

    ds = Dataset(layout)
    table = grasps({"apple": 3, "mug": 2})
    m = ds.write_shard(table, "old")
    ds.write_candidates(table.drop_columns(list(ADDED_IN_V2)), "synthesis", "old")
    part = m.parts[0]
    path = ds.p(part.path)
    v1 = pq.read_table(path).drop_columns(list(ADDED_IN_V2))
    with pq.ParquetWriter(path, v1.schema) as w:  # the v1 layout: one row group per object
        for o in part.objects:
            w.write_table(v1.slice(o.row_start, o.rows), row_group_size=o.rows)
    raw = json.loads(open(ds.p("manifests/old.json")).read())
    data = open(path, "rb").read()
    raw["schema_version"] = 1
    raw["parts"][0].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    del raw["parts"][0]["footer_sha256"]  # manifests of that time did not record it
    open(ds.p("manifests/old.json"), "w").write(json.dumps(raw))
    ds.rebuild_info()

    fresh = Dataset(layout)
    back = fresh.read()
    assert back.schema.equals(GRASP_SCHEMA, check_metadata=False) and back.num_rows == 5
    assert back.column("refine_status").null_count == 5
    assert fresh.read(columns=["grasp_id", "refined_from"]).column("refined_from").null_count == 5
    assert fresh.candidates("synthesis").schema.equals(GRASP_SCHEMA, check_metadata=False)
    assert fresh.verify().ok, fresh.verify().errors
    assert fresh.query("SELECT count(*) AS n, count(refined_from) AS r FROM grasps").to_pylist() == [{"n": 5, "r": 0}]
