"""curate end to end: objects ingested, candidates written with provenance, frames and scales right."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dga_engine import runs
from dga_engine.dataset.schema import pose_arrays
from dga_engine.dataset.store import Dataset
from dga_engine.objects.store import ObjectStore
from dga_engine.sources.curate import CurateConfig, CurateError, curate
from dga_engine.sources.kinematics import engine_fingertips

from . import builders

WRITERS = {
    "dexgraspnet": builders.write_dexgraspnet,
    "unidexgrasp": builders.write_unidexgrasp,
    "multidex": builders.write_multidex,
    "dga": builders.write_dga,
    "realdex": builders.write_realdex,
}
THUMB_TOL_MM = {"dexgraspnet": 0.1, "unidexgrasp": 0.1, "multidex": 1.0, "dga": 1.0, "realdex": 1.0}


def _write(layout, source):
    root = Path(layout.source(source))
    return root, WRITERS[source](root)


def _check_candidates(layout, source, truths, tol_mm):
    """Every candidate's engine thumb tip touches object_scale * (the stored mesh's image of the source corner)."""
    table = Dataset(layout).candidates(source)
    assert table.num_rows == sum(len(t.scales) for t in truths.values())
    arrays = pose_arrays(table)
    store = ObjectStore(layout)
    by_record = {rid: (key, t) for key, t in truths.items() for rid in t.scales}
    rows = table.select(["object_id", "source", "source_record_id", "round", "suc1"]).to_pylist()
    quat = arrays["rotation"].astype(np.float64)
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_quat(quat[:, [1, 2, 3, 0]]).as_matrix()
    tips = engine_fingertips(arrays["translation"], rot, arrays["joints"])[:, 4]
    for i, row in enumerate(rows):
        assert row["source"] == source and row["round"] == 0 and row["suc1"] is None
        key, truth = by_record[row["source_record_id"]]
        meta = store.meta(row["object_id"])
        assert meta.source == source and meta.source_id == key
        stored = store.load(row["object_id"], with_parts=False).mesh
        corner = stored.bounds[1]  # boxes: the stored image of the source mesh's max corner
        expected = arrays["object_scale"][i] * corner
        err = np.linalg.norm(tips[i] - expected) * 1000
        assert err < tol_mm, (row["source_record_id"], err)
        # the metric size of the object the grasp was made on is what the source says
        source_mesh_extent = np.ptp(np.asarray(stored.vertices), axis=0) * arrays["object_scale"][i]
        assert np.ptp(stored.vertices, axis=0).max() > 0
        assert source_mesh_extent.max() == pytest.approx(
            truth.scales[row["source_record_id"]] * _source_extent(layout, source, key).max(), rel=1e-3)
    return table


def _source_extent(layout, source, key):
    from dga_engine.sources.curate import load_source_mesh, make_loader

    loader = make_loader(source, Path(layout.source(source)), CurateConfig())
    loader.units()
    if hasattr(loader, "objects"):
        for u in loader.units():
            loader.load_unit(u)
    mesh = load_source_mesh(loader.object(key).mesh_path)
    return np.ptp(mesh.vertices, axis=0)


@pytest.mark.parametrize("source", sorted(WRITERS))
def test_curate_end_to_end(layout, source):
    root, truths = _write(layout, source)
    report = curate(layout, source)
    assert report.grasps_written == sum(len(t.scales) for t in truths.values())
    assert not report.skipped_files and not report.missing_objects and report.bad_records == 0
    assert set(report.objects) == set(truths)
    _check_candidates(layout, source, truths, THUMB_TOL_MM[source])
    # the fingertip residual against the source model is reported per finger
    if source in ("dexgraspnet", "unidexgrasp"):
        assert max(report.fk_residual_mm.values()) < 0.05
    else:
        assert 1.0 < report.fk_residual_mm["lf"] < 2.5 and report.fk_residual_mm["ff"] < 0.05
    # splits as the source gives them, per stored object
    splits = json.loads(Path(report.splits_file).read_text())["objects"]
    assert {v["source_id"] for v in splits.values()} == set(truths)
    assert {v["split"] for v in splits.values()} <= {"train", "test"}
    # a rerun finds every unit done and writes nothing
    again = curate(layout, source)
    assert again.units_resumed == report.units_total and again.grasps_written == 0


def test_object_scale_semantics(layout):
    """DexGraspNet stores normalised meshes at 0.1: a grasp made at scale 0.06 gets object_scale 0.6 (times ingest's own
    factor)."""
    root, truths = _write(layout, "dexgraspnet")
    report = curate(layout, "dexgraspnet")
    table = Dataset(layout).candidates("dexgraspnet")
    scales = dict(zip(table.column("source_record_id").to_pylist(), table.column("object_scale").to_numpy()))
    # ingestion rescales a mesh whose grasp size is outside its range: that factor is accounted for too
    assert any(abs(o["ingest_scale"] - 1.0) > 0.1 for o in report.objects.values())
    for key, truth in truths.items():
        info = report.objects[key]
        assert info["canonical_scale"] == 0.1
        for rid, s in truth.scales.items():
            assert scales[rid] == pytest.approx(s / (0.1 * info["ingest_scale"]), rel=1e-6)
    # metric MultiDex meshes are stored as they are
    _write(layout, "multidex")
    rep = curate(layout, "multidex")
    assert {o["canonical_scale"] for o in rep.objects.values()} == {1.0}


def test_release_point_cloud_disagreeing_with_the_mesh_is_flagged(layout):
    root, truths = _write(layout, "dga")
    name = "core-jar-1b2c3d4e5f60718293a4b5c6d7e8f90a"
    mesh_file = root / "Unidexgrasp" / "meshes" / f"{name}.obj"
    builders.normalised_box((0.9, 0.9, 1.3)).apply_scale(2.0).export(mesh_file)  # not the mesh the release used
    report = curate(layout, "dga")
    assert any(name in w and "2x the size" not in w and "0.5x" in w for w in report.warnings), report.warnings


def test_missing_mesh_is_reported_and_retried(layout):
    root, truths = _write(layout, "dexgraspnet")
    code = sorted(truths)[0]
    hidden = root.parent / "hidden-mesh"
    shutil.move(str(root / "meshdata" / code), str(hidden))
    report = curate(layout, "dexgraspnet")
    assert code in report.missing_objects and "mesh not found" in report.missing_objects[code]
    assert report.grasps_missing_object == len(truths[code].scales)
    assert report.grasps_written == sum(len(t.scales) for k, t in truths.items() if k != code)
    shutil.move(str(hidden), str(root / "meshdata" / code))
    again = curate(layout, "dexgraspnet")
    assert again.units_resumed == 1 and again.grasps_written == len(truths[code].scales) and not again.missing_objects


def test_unsafe_and_broken_files_are_skipped(layout, tmp_path):
    root, truths = _write(layout, "dexgraspnet")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    arr = np.empty(1, dtype=object)
    arr[0] = {"qpos": Exploit(), "scale": 0.1}
    np.save(root / "dataset" / "core-evil-0000.npy", arr, allow_pickle=True)
    good = next((root / "dataset").glob("core-mug*.npy")).read_bytes()
    (root / "dataset" / "core-cut-0000.npy").write_bytes(good[: len(good) // 2])
    report = curate(layout, "dexgraspnet")
    skipped = dict(report.skipped_files)
    assert set(skipped) == {"dataset/core-evil-0000.npy", "dataset/core-cut-0000.npy"}
    assert "refusing to unpickle" in skipped["dataset/core-evil-0000.npy"]
    assert "truncated" in skipped["dataset/core-cut-0000.npy"]
    assert not marker.exists()
    assert report.grasps_written == sum(len(t.scales) for t in truths.values())
    assert not runs.is_done(layout, "curate-dexgraspnet", "dataset_core-evil-0000.npy")


def test_missing_source_folder(layout):
    with pytest.raises(CurateError, match="does not exist"):
        curate(layout, "unidexgrasp")
    Path(layout.source("unidexgrasp")).mkdir(parents=True)
    with pytest.raises(CurateError, match="no source files"):
        curate(layout, "unidexgrasp")


def test_cli(layout, tmp_path):
    from dga_engine.cli.main import app

    src = tmp_path / "elsewhere"
    truths = builders.write_multidex(src)
    runner = CliRunner()
    res = runner.invoke(app, ["--root", layout.root, "curate", "--source", "multidex", "--path", str(src), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["grasps_written"] == sum(len(t.scales) for t in truths.values()) and out["source"] == "multidex"
    res = runner.invoke(app, ["--root", layout.root, "curate", "--source", "dexgraspnet"])
    assert res.exit_code == 1 and "does not exist" in res.output
    res = runner.invoke(app, ["--root", layout.root, "curate", "--source", "dexycb"])
    assert res.exit_code == 2 and "'dexycb' is not one of 'dexgraspnet'" in res.output and "'grab'" in res.output


def test_curate_then_filter(layout):
    """curate -> filter: every curated grasp ends up accepted in a shard or rejected with a reason, provenance
    intact."""
    stage = pytest.importorskip("dga_engine.simulate.stage")
    from dga_engine.dataset.schema import REJECT_REASONS

    root, truths = _write(layout, "multidex")
    report = curate(layout, "multidex")
    curated = set(Dataset(layout).candidates("multidex").column("source_record_id").to_pylist())
    summary = stage.run_filter(layout, source="multidex")
    assert summary.total == report.grasps_written == len(curated)
    assert summary.accepted + summary.rejected == summary.total
    ds = Dataset(layout)
    rejects = ds.rejects()
    accepted = ds.read(sources=["multidex"]) if summary.accepted else None
    seen = set(rejects.column("source_record_id").to_pylist())
    if accepted is not None:
        seen |= set(accepted.column("source_record_id").to_pylist())
    assert seen == curated
    assert set(rejects.column("reason").to_pylist()) <= set(REJECT_REASONS)
    assert set(rejects.column("source").to_pylist()) == {"multidex"}
