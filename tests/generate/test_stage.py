"""The train and generate stages end to end: dataset shards in, candidates with provenance out; Ray path; CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.compute as pc
import pytest

from dga_engine import runs
from dga_engine.dataset.schema import make_grasp_id
from dga_engine.dataset.store import Dataset
from dga_engine.generate import checkpoint as ckpt
from dga_engine.generate.stage import STAGE, generate
from dga_engine.generate.train import train

from .helpers import palm_grasp_table


@pytest.fixture
def trained(layout, cube, cylinder, cfg):
    """Round 0 shards for two objects and a round-1 generator trained on them (1 epoch)."""
    ds = Dataset(layout)
    ds.write_shard(palm_grasp_table(cube.object_id, 48, seed=1), "seed-cube")
    ds.write_shard(palm_grasp_table(cylinder.object_id, 48, seed=2), "seed-cylinder")
    cfg.train.epochs = 1
    cfg.diffusion.steps = 8
    result = train(layout, 1, cfg, device="cpu")
    return result


def test_train_reads_shards_of_earlier_rounds(layout, trained):
    assert trained.n_grasps == 96 and trained.n_objects == 2
    meta = ckpt.read_meta(layout, 1)
    assert sorted(s["key"] for s in meta["shards"]) == ["seed-cube", "seed-cylinder"]
    with pytest.raises(ValueError, match="--round 1"):
        train(layout, 0)


def test_generate_writes_candidates_with_provenance_and_resumes(layout, trained, cube, cylinder):
    report = generate(layout, 1, per_object=6, object_ids=[cube.object_id, cylinder.object_id, "obj-missing0000000"],
                      objects_per_batch=2, device="cpu")
    assert report.batches == 2 and report.batches_run == 2 and report.grasps_written == 12
    assert [e["object_id"] for e in report.errors] == ["obj-missing0000000"]
    ds = Dataset(layout)
    table = ds.candidates("generator")
    assert table.num_rows == 12
    assert set(table.column("source").to_pylist()) == {"generator"}
    assert set(table.column("round").to_pylist()) == {1}
    assert set(table.column("generator").to_pylist()) == {ckpt.read_meta(layout, 1)["generator"]}
    assert set(table.column("generator_config_hash").to_pylist()) == {report.config_hash}
    assert sorted(set(table.column("object_id").to_pylist())) == sorted([cube.object_id, cylinder.object_id])
    ids = table.column("grasp_id").to_pylist()
    assert len(set(ids)) == 12
    row = table.slice(0, 1).to_pylist()[0]
    assert row["grasp_id"] == make_grasp_id(row["object_id"], "generator", row["source_record_id"], 1)
    assert all(v is None for v in table.column("suc6").to_pylist())  # unfiltered
    # the batch holding the missing object stays open (no record) so a rerun retries it
    assert [runs.is_done(layout, STAGE, k) for k in report.keys] == [True, False]
    assert len(ds.candidate_keys("generator")) == 1
    assert all(np.isfinite(np.asarray(table.column("joints").to_pylist())).ravel())

    again = generate(layout, 1, per_object=6, object_ids=[cube.object_id, cylinder.object_id, "obj-missing0000000"],
                     objects_per_batch=2, device="cpu")
    assert again.batches_skipped == 1 and again.batches_run == 1 and again.keys == report.keys

    # an interrupted batch (no completion record) is redone with the same key, ids and grasps
    runs.clear(layout, STAGE, report.keys[0])
    before = ds.candidates("generator", [report.keys[0]])
    redo = generate(layout, 1, per_object=6, object_ids=[cube.object_id, cylinder.object_id, "obj-missing0000000"],
                    objects_per_batch=2, device="cpu")
    assert redo.batches_run == 2
    after = ds.candidates("generator", [report.keys[0]])
    assert after.column("grasp_id").to_pylist() == before.column("grasp_id").to_pylist()
    np.testing.assert_allclose(
        np.asarray(after.column("joints").to_pylist()), np.asarray(before.column("joints").to_pylist()), atol=1e-6
    )


def test_generate_without_checkpoint_says_what_to_do(layout, cube):
    with pytest.raises(ckpt.CheckpointNotFound, match="dga-engine train --round 3"):
        generate(layout, 3, per_object=2, object_ids=[cube.object_id])


def test_ray_actor_path_matches_in_process(layout, trained, cube, cylinder, monkeypatch):
    ray = pytest.importorskip("ray")
    # A local Ray is started by the stage itself, even with RAY_ADDRESS pointing at some other cluster.
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    try:
        report = generate(layout, 1, per_object=4, object_ids=[cube.object_id, cylinder.object_id],
                          objects_per_batch=1, use_ray=True, workers=1, guidance=False)
    finally:
        ray.shutdown()
    assert report.backend == "ray" and report.batches_run == 2 and report.grasps_written == 8
    ray_table = Dataset(layout).candidates("generator")
    # the same request in-process (after forgetting the records) gives the same grasps
    for k in report.keys:
        runs.clear(layout, STAGE, k)
    local = generate(layout, 1, per_object=4, object_ids=[cube.object_id, cylinder.object_id], objects_per_batch=1,
                     guidance=False, device="cpu")
    assert local.keys == report.keys
    local_table = Dataset(layout).candidates("generator")
    order = lambda t: t.take(pc.sort_indices(t, [("grasp_id", "ascending")]))  # noqa: E731
    a, b = order(ray_table), order(local_table)
    assert a.column("grasp_id").to_pylist() == b.column("grasp_id").to_pylist()
    np.testing.assert_allclose(
        np.asarray(a.column("joints").to_pylist()), np.asarray(b.column("joints").to_pylist()), atol=1e-4
    )


def test_cli_train_and_generate(layout, trained, cube):
    from typer.testing import CliRunner

    from dga_engine.cli.main import app

    runner = CliRunner()
    res = runner.invoke(app, ["--root", layout.root, "train", "--round", "1", "--epochs", "2", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["epoch"] == 2 and out["resumed_from"] == 1
    res = runner.invoke(app, ["--root", layout.root, "generate", "--round", "1", "--per-object", "3", "--objects",
                              cube.object_id, "--no-guidance", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["grasps_written"] == 3 and out["guidance"] is False
    res = runner.invoke(app, ["--root", layout.root, "generate", "--round", "7", "--per-object", "3"])
    assert res.exit_code == 1 and "train --round 7" in res.output
