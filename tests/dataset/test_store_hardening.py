"""Regressions from the red-team pass (issue 18): D4 repair, D5 unique ids, D15 a bad rejects file, D21 checksums
on read, D22 query during a rewrite."""

from __future__ import annotations

import json
import os
import shutil

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from dga_engine import runs
from dga_engine.cli.main import app
from dga_engine.dataset.store import CorruptShardError, Dataset, StoreConfig


def _ids(table):
    return sorted(table["grasp_id"].to_pylist())


# --- D5: grasp_id is unique in a dataset ----------------------------------------------------------

def test_the_same_rows_written_three_times_are_stored_once(dataset, grasps):
    t = grasps({"a": 4, "b": 2})
    dataset.write_shard(pa.concat_tables([t, t, t]), "k")  # the same row filtered 3 times in one unit
    dataset.write_shard(t, "k2")  # and again under another key (another candidate file)
    dataset.write_shard(t.slice(0, 3), "k3")
    fresh = Dataset(dataset.layout)
    assert _ids(fresh.read()) == _ids(t) and fresh.shard("k2").rows == 0
    assert fresh.verify().ok
    dataset.write_shard(t, "k")  # rewriting the key that holds them is not a duplicate of itself
    assert _ids(Dataset(dataset.layout).read()) == _ids(t)


def test_verify_reports_duplicate_ids_across_shards(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    t = grasps({"a": 4})
    ds.write_shard(t, "k")
    # Smuggle a copy in past the writer, the way a hand-made or foreign shard would arrive.
    other = Dataset(layout, "scratch")
    m = other.write_shard(t, "copy")
    shutil.copy(other.p(m.parts[0].path), ds.p(m.parts[0].path))
    shutil.copy(other.p("manifests/copy.json"), ds.p("manifests/copy.json"))
    report = Dataset(layout).verify()
    assert not report.ok and report.bad_shards() == ["grasp_id"]
    assert "4 grasp id(s) occur more than once" in report.errors[0]["problem"]
    ds.delete_shard("copy")
    ds.compact()
    assert Dataset(layout).verify().ok


# --- D15: one truncated rejects file must not break queries ----------------------------------------

def test_a_truncated_rejects_file_does_not_break_queries_and_is_reported(layout, grasps, rejects_of):
    ds = Dataset(layout)
    ds.write_shard(grasps({"a": 3}), "k")
    ds.write_rejects(rejects_of(grasps({"a": 2}, filtered=False, seed=1)), "k")
    ds.write_rejects(rejects_of(grasps({"b": 2}, filtered=False, seed=2)), "bad")
    path = ds.p("rejects/bad.parquet")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    assert ds.query("SELECT count(*) AS n FROM grasps")["n"].to_pylist() == [3]
    from dga_engine.dataset.query import query_warnings

    out = ds.query("SELECT count(*) AS n FROM rejects")
    assert out["n"].to_pylist() == [2] and "rejects/bad.parquet" in query_warnings(out)[0]
    assert ds.rejects().num_rows == 2  # the readable ones
    res = CliRunner().invoke(app, ["--root", layout.root, "shards", "query", "SELECT count(*) AS n FROM rejects"])
    assert res.exit_code == 0 and "skipped unreadable rejects file" in res.stderr
    assert not ds.verify().ok and ds.verify().bad_shards() == ["rejects/bad"]


# --- D21: readers verify checksums as they read ----------------------------------------------------

def test_flipped_bits_in_a_shard_never_change_what_read_returns(layout, grasps):
    ds = Dataset(layout)
    m = ds.write_shard(grasps({"a": 40, "b": 40}, seed=3), "k")
    path = ds.p(m.parts[0].path)
    original = open(path, "rb").read()
    want = Dataset(layout).read().to_pylist()
    silent, caught = 0, 0
    step = max(1, (len(original) - 8) // 150)
    for pos in range(4, len(original) - 8, step):  # data pages and the footer, about 150 positions
        for bit in (0, 5):
            data = bytearray(original)
            data[pos] ^= 1 << bit
            open(path, "wb").write(bytes(data))
            try:
                got = Dataset(layout).read().to_pylist()
            except CorruptShardError:
                caught += 1
                continue
            silent += got != want
    open(path, "wb").write(original)
    assert silent == 0 and caught > 250


# --- D22: query retries during a concurrent rewrite ------------------------------------------------

def test_query_retries_once_when_a_concurrent_rewrite_removed_its_files(layout, grasps, monkeypatch):
    import dga_engine.dataset.query as q

    ds = Dataset(layout)
    ds.write_shard(grasps({"a": 3}), "k")
    real = q.connect
    calls = []

    def connect_then_rewrite(*args, **kwargs):
        out = real(*args, **kwargs)
        if not calls:  # between building the views and running the SQL, another writer replaces shard k
            Dataset(layout).write_shard(grasps({"a": 5}, seed=9), "k")
        calls.append(1)
        return out

    monkeypatch.setattr(q, "connect", connect_then_rewrite)
    assert ds.query("SELECT count(*) AS n FROM grasps")["n"].to_pylist() == [5] and len(calls) == 2


# --- D4: repair reruns exactly the units that wrote a damaged shard ---------------------------------

def _unit(ds, key, table, source="dexgraspnet"):
    ds.write_shard(table, key)
    ds.write_rejects(pa.Table.from_pylist([], schema=None) if False else _no_rejects(table), key)
    unit = f"{key}.p1a2b3c4"  # the filter's naming may change: repair finds units by their key field
    runs.mark_done(ds.layout, "filter", unit, {"accepted": table.num_rows}, source=source, key=key)
    return unit


def _no_rejects(table):
    from dga_engine.dataset.schema import REJECT_SCHEMA

    return REJECT_SCHEMA.empty_table()


def _flip(path, at=None):
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2 if at is None else at] ^= 0xFF
    open(path, "wb").write(bytes(data))


def test_repair_clears_exactly_the_damaged_units_so_the_next_run_redoes_them(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    bad = _unit(ds, "filter.dexgraspnet.core-mug.obj-a", grasps({"obj-a": 5}))
    good = _unit(ds, "filter.dexgraspnet.core-cup.obj-b", grasps({"obj-b": 4}, seed=1))
    _flip(ds.p(ds.shard("filter.dexgraspnet.core-mug.obj-a").parts[0].path))
    assert not Dataset(layout).verify().ok

    res = CliRunner().invoke(app, ["--root", layout.root, "shards", "repair", "--dry-run", "--json"])
    plan = json.loads(res.stdout)
    assert res.exit_code == 0 and [a["key"] for a in plan["actions"]] == ["filter.dexgraspnet.core-mug.obj-a"]
    assert plan["actions"][0]["units"] == [f"filter/{bad}"] and runs.is_done(layout, "filter", bad)

    res = CliRunner().invoke(app, ["--root", layout.root, "shards", "repair"])
    assert res.exit_code == 0 and "dga-engine filter --source dexgraspnet" in res.stdout
    assert not runs.is_done(layout, "filter", bad) and runs.is_done(layout, "filter", good)
    fresh = Dataset(layout)
    assert fresh.verify().ok and [m.key for m in fresh.shards()] == ["filter.dexgraspnet.core-cup.obj-b"]
    # What the rerun of that unit does: write the shard again under the same key, then its record.
    _unit(fresh, "filter.dexgraspnet.core-mug.obj-a", grasps({"obj-a": 5}))
    assert fresh.verify().ok and fresh.read().num_rows == 9


def test_repair_of_a_damaged_compacted_file_reruns_every_unit_in_it(layout, grasps):
    ds = Dataset(layout, config=StoreConfig(compact_after_keys=0))
    units = [_unit(ds, f"filter.s.c{i}.o{i}", grasps({f"o{i}": 3}, seed=i), source="s") for i in range(3)]
    ds.compact()
    _flip(Dataset(layout).files()[0])
    with pytest.raises(CorruptShardError):
        Dataset(layout).read()
    from dga_engine.dataset.repair import rerun_damaged

    done = rerun_damaged(Dataset(layout))
    assert sorted(a["key"] for a in done["actions"]) == [f"filter.s.c{i}.o{i}" for i in range(3)]
    assert done["sources"] == ["s"] and not any(runs.is_done(layout, "filter", u) for u in units)
    fresh = Dataset(layout)
    assert fresh.verify().ok and fresh.read().num_rows == 0 and os.listdir(fresh.p("data")) == []
