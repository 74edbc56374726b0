"""The shards are plain Parquet: HuggingFace ``datasets`` and DuckDB read them."""

from __future__ import annotations

import numpy as np
import pytest

from dga_engine.dataset.store import Dataset, StoreConfig, to_numpy


def test_huggingface_datasets_loads_the_shards(layout, grasps, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    ds = Dataset(layout, config=StoreConfig(max_rows_per_shard=8))
    ds.write_shard(grasps({"a": 5, "b": 6}, seed=1), "r0")
    ds.write_shard(grasps({"c": 4}, seed=2, round_=1), "r1")
    hf = datasets.load_dataset("parquet", data_files=ds.files(), split="train", cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == 15 and set(hf.column_names) == set(ds.read().column_names)
    assert hf.features["joints"].length == 24 and hf.features["rotation"].length == 4
    ours = ds.read()
    assert hf["grasp_id"] == ours["grasp_id"].to_pylist()  # same files, same order
    np.testing.assert_array_equal(np.asarray(hf["joints"], dtype=np.float32), to_numpy(ours)["joints"])


def test_duckdb_query_over_grasps_rejects_and_shards(dataset, grasps, rejects_of):
    empty = dataset.query("select count(*) as n from grasps")
    assert empty["n"].to_pylist() == [0]  # views exist (with their columns) before anything is written
    assert dataset.query("select count(*) as n from rejects where reason = 'unstable'")["n"].to_pylist() == [0]
    t = grasps({"a": 5, "b": 3}, seed=1)
    dataset.write_shard(t, "r0")
    dataset.write_shard(grasps({"a": 2}, seed=2, round_=1, source="generator"), "r1")
    dataset.write_rejects(rejects_of(grasps({"b": 4}, filtered=False, seed=3), "penetration_hand_object"), "r0")
    out = dataset.query(
        "select object_id, count(*) as n, max(round) as last_round, avg(joints[1]) as j0 from grasps group by 1 order "
        "by 1"
    )
    assert out.to_pylist()[1] == {"object_id": "b", "n": 3, "last_round": 0, "j0": pytest.approx(
        float(to_numpy(t.filter(np.asarray(t["object_id"].to_pylist()) == "b"))["joints"][:, 0].mean()), rel=1e-6)}
    assert out["n"].to_pylist() == [7, 3]
    assert dataset.query("select reason, count(*) as n from rejects group by 1")["n"].to_pylist() == [4]
    assert dataset.query("select shard, sum(rows) as rows from shards group by 1 order by 1").to_pylist() == [
        {"shard": "r0", "rows": 8}, {"shard": "r1", "rows": 2}]
