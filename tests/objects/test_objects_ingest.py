"""Local files, size normalisation and scales, repair of open meshes, and quarantine of bad input."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import trimesh

from dga_engine import fs
from dga_engine.objects.builtin import builtin_mesh
from dga_engine.objects.decompose import CoacdParams, DecompositionError, run_coacd
from dga_engine.objects.ingest import (
    BadMeshError,
    IngestConfig,
    ingest_mesh,
    ingest_mesh_all,
    ingest_paths,
    quarantine_records,
)
from dga_engine.objects.mesh import make_watertight, obb_extents
from dga_engine.objects.store import ObjectStore

from .objects_helpers import open_sphere


def test_local_files_in_every_format(layout, mesh_dir, fast_config):
    report = ingest_paths(layout, [mesh_dir], config=fast_config, licence="CC-BY-4.0")
    assert not report.quarantine, report.quarantine
    assert len(report.ingested) == 5  # obj, stl, ply, off, glb (notes.txt ignored)
    store = ObjectStore(layout)
    metas = {store.meta(i).source_id: store.meta(i) for i in report.ingested}
    assert set(metas) == {"box.obj", "can.stl", "ball.ply", "block.off", "sub/capsule.glb"}
    assert metas["box.obj"].label == "box" and metas["box.obj"].licence == "CC-BY-4.0"
    assert metas["sub/capsule.glb"].extra["file"] == "capsule.glb"
    for m in metas.values():
        assert m.source == "local" and m.watertight and m.n_parts == 1 and m.scale_applied == 1.0
    assert np.allclose(sorted(metas["box.obj"].extents), [0.04, 0.05, 0.09], atol=1e-6)
    again = ingest_paths(layout, [mesh_dir / "box.obj", mesh_dir / "can.stl"], config=fast_config)
    assert again.ingested == [] and len(again.skipped) == 2


def test_glb_scene_with_several_nodes_becomes_one_mesh(layout, tmp_path, fast_config):
    scene = trimesh.Scene()
    scene.add_geometry(trimesh.creation.box(extents=[0.03, 0.03, 0.03]), node_name="a",
                       transform=trimesh.transformations.translation_matrix([-0.02, 0, 0]))
    scene.add_geometry(trimesh.creation.box(extents=[0.03, 0.03, 0.03]), node_name="b",
                       transform=trimesh.transformations.translation_matrix([0.02, 0, 0]))
    path = tmp_path / "two.glb"
    scene.export(path)
    meta = ingest_mesh(layout, path, label="two boxes", config=fast_config)
    assert np.allclose(sorted(meta.extents), [0.03, 0.03, 0.07], atol=1e-6)  # transforms applied, overlap unioned
    assert meta.extra["repair"] == "union" and meta.watertight


def test_size_normalisation_and_scales(layout, fast_config):
    big = trimesh.creation.box(extents=[1.0, 2.0, 3.0])  # unit-less model: grasp size 2 -> 8 cm
    meta = ingest_mesh(layout, big, label="big box", config=fast_config)
    ext = obb_extents(ObjectStore(layout).load(meta.object_id).mesh)
    assert ext[1] == pytest.approx(0.08, rel=1e-4) and meta.scale_applied == pytest.approx(0.04)
    assert meta.extra["grasp_size"] == pytest.approx(0.08, rel=1e-4)
    rod = trimesh.creation.box(extents=[0.01, 0.01, 2.0])  # thin and too long: shrunk to 30 cm
    meta = ingest_mesh(layout, rod, label="rod", config=fast_config)
    assert max(meta.extents) == pytest.approx(0.30, rel=1e-4)

    cfg = IngestConfig(scales=(0.06, 0.1), remesh_resolution=20)
    metas = ingest_mesh_all(layout, big, label="big box", config=cfg)
    assert [m.object_id.rsplit("-", 1)[1] for m in metas] == ["s060", "s100"]
    assert [round(m.extra["grasp_size"], 4) for m in metas] == [0.06, 0.1]
    assert len({m.object_id for m in metas}) == 2
    with pytest.raises(ValueError, match="ingest_mesh_all"):
        ingest_mesh(layout, big, label="big box", config=cfg)
    assert [m.object_id for m in ingest_mesh_all(layout, big, label="big box", config=cfg)] == [
        m.object_id for m in metas
    ]
    with pytest.raises(ValueError):
        IngestConfig(scales=(0.0,))


def test_open_meshes_are_repaired_to_watertight(layout, fast_config):
    holed = open_sphere(hole_faces=6)
    meta = ingest_mesh(layout, holed, label="ball with a hole", config=fast_config)
    assert meta.watertight and meta.extra["repair"] in ("fill-holes", "level-set remesh")
    assert meta.decomposition["method"] == "convex-hull"  # the repaired ball is still convex: no CoACD
    stored = ObjectStore(layout).load(meta.object_id).mesh
    assert stored.is_watertight and stored.volume == pytest.approx(4 / 3 * np.pi * 0.04**3, rel=0.1)
    # an open tube (no caps): closed by the level-set remesh into a thin-walled solid
    tube = trimesh.creation.cylinder(radius=0.03, height=0.1, sections=24)
    tube.update_faces(np.abs(tube.face_normals[:, 2]) < 0.5)
    tube.remove_unreferenced_vertices()
    solid = make_watertight(tube, resolution=20, max_faces=5000)
    assert solid.method.startswith("level-set remesh") and solid.mesh.is_watertight and solid.mesh.volume > 0
    assert len(solid.mesh.faces) <= 5000
    assert np.allclose(solid.mesh.extents, tube.extents, atol=0.008)


def _write_bad_inputs(d):
    (d / "empty.obj").write_bytes(b"")
    (d / "garbage.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 99999999\n\x00\x01\x02")
    trimesh.Trimesh([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0], [0.1, 0.1, 0]], [[0, 1, 2], [1, 3, 2]]).export(d / "flat.obj")
    rng = np.random.default_rng(0)
    soup = rng.random((60, 3)) * 0.05
    trimesh.Trimesh(soup, np.arange(60).reshape(20, 3), process=False).export(d / "soup.stl")
    trimesh.creation.icosphere(subdivisions=4, radius=0.04).export(d / "dense.ply")  # 5120 faces
    builtin_mesh("u_shape").export(d / "bracket.obj")  # needs CoACD: times out below


def test_bad_inputs_are_quarantined_and_batch_continues(layout, tmp_path):
    d = tmp_path / "bad"
    d.mkdir()
    _write_bad_inputs(d)
    trimesh.creation.box(extents=[0.04, 0.05, 0.06]).export(d / "good.obj")
    cfg = IngestConfig(max_faces=2000, coacd_timeout_s=0.05)
    report = ingest_paths(layout, [d, tmp_path / "missing.obj"], config=cfg)
    assert len(report.ingested) == 1
    reasons = {os.path.basename(q["path"]): q["reason"] for q in report.quarantine}
    assert set(reasons) == {
        "empty.obj",
        "garbage.ply",
        "flat.obj",
        "soup.stl",
        "dense.ply",
        "bracket.obj",
        "missing.obj",
    }
    assert "empty" in reasons["empty.obj"] and "re-export" in reasons["empty.obj"]
    assert "could not be read" in reasons["garbage.ply"] or "no triangles" in reasons["garbage.ply"]
    assert "zero volume" in reasons["flat.obj"]
    assert "non-manifold junk" in reasons["soup.stl"]
    assert "over the cap of 2000" in reasons["dense.ply"] and "--max-faces" in reasons["dense.ply"]
    assert "did not finish within 0.05 s" in reasons["bracket.obj"] and "--coacd-timeout" in reasons["bracket.obj"]
    assert "not a file" in reasons["missing.obj"]
    records = quarantine_records(layout)
    assert len(records) == 7 and len(report.quarantined) == 7
    assert {r["key"] for r in records} == set(report.quarantined)
    assert all(fs.exists(f"{layout.quarantine()}/{k}.json") for k in report.quarantined)
    assert ObjectStore(layout).ids() == report.ingested  # nothing half-written

    # with a sane time limit the bracket ingests and its quarantine record goes away
    again = ingest_paths(layout, [d / "bracket.obj"], config=IngestConfig(coacd_mcts_iterations=30))
    assert len(again.ingested) == 1 and not again.quarantine
    assert len(quarantine_records(layout)) == 6


def test_ingest_mesh_raises_clear_error(layout):
    flat = trimesh.Trimesh([[0, 0, 0], [0.1, 0, 0], [0, 0.1, 0]], [[0, 1, 2]])
    with pytest.raises(BadMeshError, match="zero volume") as err:
        ingest_mesh(layout, flat, label="sheet")
    assert err.value.stage == "check"
    with pytest.raises(BadMeshError, match="unsupported file type"):
        ingest_mesh(layout, __file__, label="python")
    assert quarantine_records(layout) == []  # the single-object API raises, it does not quarantine


def test_coacd_child_process_survives_a_native_crash():
    v = np.random.default_rng(0).random((4, 3))
    faces = np.array([[0, 1, 2], [0, 1, 10**8], [1, 2, 3]])  # an out-of-range index segfaults CoACD
    with pytest.raises(DecompositionError) as err:
        run_coacd(v, faces, CoacdParams(), timeout_s=60)
    assert err.value.kind == "crash" and "crashed" in err.value.reason


def test_quarantine_records_are_json_with_path_and_reason(layout, tmp_path):
    (tmp_path / "e.stl").write_bytes(b"")
    report = ingest_paths(layout, [tmp_path / "e.stl"])
    rec = json.loads(open(f"{layout.quarantine()}/{report.quarantined[0]}.json").read())
    assert rec["path"].endswith("e.stl") and rec["reason"] and rec["source"] == "local" and rec["stage"] == "load"
