"""A storage root on an S3-compatible object store (moto's server on 127.0.0.1), through the engine's own code.

The store, object store, completion records and round ledger are used exactly as the stages use them, with
``s3://bucket/root`` as the root and the endpoint/credentials given only through configuration (FSSPEC_S3_*),
as a worker would be configured; the CLI check runs in a fresh process with nothing but those variables.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import trimesh

from dga_engine import fs, runs
from dga_engine.dataset.schema import REJECT_SCHEMA, pose_arrays, pose_table
from dga_engine.dataset.store import Dataset
from dga_engine.layout import Layout
from dga_engine.objects.store import ObjectStore, write_simple_object
from dga_engine.rounds import ROUND0_STAGES, Ledger
from tests.helpers import make_grasps as _grasps  # accepted-looking grasps (filter fields filled)

from .local_services import REPO, base_env, exe, run, s3_env


def test_failed_write_leaves_no_object(s3_root):
    """atomic_open on S3: an exception inside the block must not upload what was written so far."""
    path = f"{s3_root}/runs/partial.bin"
    fs.write_bytes(path, b"old")
    with pytest.raises(RuntimeError):
        with fs.atomic_open(path) as fh:
            fh.write(b"half of a new file")
            raise RuntimeError("writer crashed")
    assert fs.read_bytes(path) == b"old"
    with pytest.raises(RuntimeError):
        with fs.atomic_open(f"{s3_root}/runs/never.bin") as fh:
            fh.write(b"x")
            raise RuntimeError("writer crashed")
    assert not fs.exists(f"{s3_root}/runs/never.bin")
    assert fs.listdir(f"{s3_root}/runs") == ["partial.bin"]


@pytest.mark.slow
def test_dataset_store_on_s3(s3_root):
    layout = Layout.at(s3_root)
    assert layout.root == s3_root and not layout.is_local
    ds = Dataset(layout)
    table = _grasps({"obj-a": 5, "obj-b": 3})
    m = ds.write_shard(table, "r000-synthesis-0000")
    assert m.rows == 8 and set(m.object_ids) == {"obj-a", "obj-b"}
    ds.write_shard(_grasps({"obj-c": 4}, seed=1, round_=1), "r001-generator-0000")

    # a fresh Dataset (no caches) reads everything back from the bucket
    ds2 = Dataset(Layout.at(s3_root))
    assert sorted(m.key for m in ds2.shards()) == ["r000-synthesis-0000", "r001-generator-0000"]
    back = ds2.read(rounds=[0])
    assert back.num_rows == 8
    got = ds2.read_object("obj-a")
    want = table.filter(pa.compute.equal(table.column("object_id"), "obj-a"))
    assert sorted(got.column("grasp_id").to_pylist()) == sorted(want.column("grasp_id").to_pylist())
    np.testing.assert_array_equal(pose_arrays(got.sort_by("grasp_id"))["joints"],
                                  pose_arrays(want.sort_by("grasp_id"))["joints"])
    info = ds2.info()
    assert (info.rows, info.objects, info.rounds) == (12, 3, {"0": 8, "1": 4})

    # the same key replaces its shard; the old part file goes away
    ds2.write_shard(_grasps({"obj-a": 2}, seed=2), "r000-synthesis-0000")
    assert Dataset(layout).read(rounds=[0]).num_rows == 2

    # rejects and candidates
    rej = _grasps({"obj-b": 2}, seed=3)
    rej = rej.append_column("reason", pa.array(["unstable"] * 2)).append_column("detail", pa.array(["moved 3 cm"] * 2))
    ds2.write_rejects(rej.cast(REJECT_SCHEMA), "r000-synthesis-0000")
    cand = pose_table("obj-c", np.zeros((3, 3)), np.tile([1.0, 0, 0, 0], (3, 1)), np.zeros((3, 24)),
                      source="generator", source_record_id=["c0", "c1", "c2"], round_=1)
    ds2.write_candidates(cand, "generator", "r001-0000")
    ds3 = Dataset(layout)
    assert ds3.rejects().num_rows == 2
    assert ds3.candidate_keys("generator") == ["r001-0000"] and ds3.candidates("generator").num_rows == 3

    report = ds3.verify()
    assert report.ok, report.bad
    assert report.shards == 2 and report.rows == 2 + 4

    # a corrupted part on the bucket is caught by verify
    part = ds3.shards()[0].parts[0].path
    fs.write_bytes(ds3.p(part), b"PAR1 not really a parquet file PAR1")
    bad = Dataset(layout).verify()
    assert not bad.ok and bad.bad_shards()


def test_object_store_on_s3(s3_root, tmp_path):
    box = trimesh.creation.box(extents=[0.05, 0.05, 0.10])
    remote, local = ObjectStore(Layout.at(s3_root)), ObjectStore(Layout.at(tmp_path / "root"))
    meta = write_simple_object(remote, box, "box 5x5x10 cm")
    write_simple_object(local, box, "box 5x5x10 cm")
    assert remote.ids() == [meta.object_id] == local.ids()
    a, b = ObjectStore(Layout.at(s3_root)).load(meta.object_id), local.load(meta.object_id)
    assert a.meta.label == "box 5x5x10 cm" and a.meta.n_parts == 1
    for name in ("points", "normals", "dense_points", "dense_normals"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_allclose(a.mesh.vertices, b.mesh.vertices)
    assert len(a.parts) == 1 and a.mesh.is_watertight


def test_completion_records_and_ledger_on_s3(s3_root):
    layout = Layout.at(s3_root)
    assert runs.done_units(layout, "filter") == []
    assert not runs.is_done(layout, "filter", "obj-a")
    runs.mark_done(layout, "filter", "obj-a", {"accepted": 3})
    runs.mark_done(layout, "filter", "obj-b", {"accepted": 0})
    assert runs.is_done(layout, "filter", "obj-a")
    assert runs.done_units(layout, "filter") == ["obj-a", "obj-b"]
    assert runs.read_record(layout, "filter", "obj-a")["stats"] == {"accepted": 3}
    runs.clear(layout, "filter", "obj-b")
    assert runs.done_units(Layout.at(s3_root), "filter") == ["obj-a"]

    ledger = Ledger(layout)
    assert ledger.build_params() is None and ledger.rounds() == []
    ledger.save_build({"profile": "demo", "rounds": 1})
    for stage in ROUND0_STAGES:
        ledger.set_stage(0, stage, "running")
        ledger.set_stage(0, stage, "done", **({"accepted": 7} if stage == "filter" else {}))
    ledger.set_stage(1, "train", "running", checkpoint=None)
    again = Ledger(Layout.at(s3_root))
    assert again.build_params() == {"profile": "demo", "rounds": 1}
    status = again.status()
    assert [r["round"] for r in status["rounds"]] == [0, 1]
    assert status["rounds"][0]["status"] == "done" and status["rounds"][0]["accepted"] == 7
    assert status["rounds"][1]["status"] == "running" and not status["complete"]


@pytest.mark.slow
def test_cli_on_s3_root_configured_by_environment_only(s3_root, s3_endpoint):
    """A fresh process (like a worker) finds the bucket through FSSPEC_S3_* alone: shards verify and query."""
    layout = Layout.at(s3_root)
    Dataset(layout).write_shard(_grasps({"obj-a": 4, "obj-b": 2}), "r000-synthesis-0000")
    env = base_env(**s3_env(s3_endpoint))
    out = run([exe("dga-engine"), "--root", s3_root, "shards", "verify", "--json"], env=env, cwd=REPO, timeout=120)
    report = json.loads(out.stdout[out.stdout.index("{"):])
    assert report["ok"] and report["shards"] == 1 and report["rows"] == 6, report
    out = run(
        [
            exe("dga-engine"),
            "--root",
            s3_root,
            "shards",
            "query",
            "--json",
            "SELECT object_id, count(*) AS n FROM grasps GROUP BY ALL ORDER BY object_id",
        ],
        env=env,
        cwd=REPO,
        timeout=120,
    )
    rows = json.loads(out.stdout[out.stdout.index("{"):])["rows"]
    assert rows == [{"object_id": "obj-a", "n": 4}, {"object_id": "obj-b", "n": 2}]
