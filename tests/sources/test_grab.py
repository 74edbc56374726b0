"""GRAB -> DexGRAB: contact frames of GRAB's own files, the hand in the object frame, retargeted and curated."""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from dga_engine.cli.main import app
from dga_engine.dataset.schema import GRASP_SCHEMA
from dga_engine.sources import grab
from dga_engine.sources.safeload import SourceFileError, UnsafeSourceFile
from tests.retarget.helpers import needs_dex_retargeting
from tests.retarget.mano_builders import synthetic_mano, write_chumpy_pickle

from .grab_builders import DEFAULT_SEQUENCES, write_grab

pytestmark = needs_dex_retargeting


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    """(GRAB root, MANO file, truths): three sequences of two subjects on three objects (val, test, train)."""
    base = tmp_path_factory.mktemp("grab")
    model = synthetic_mano()
    mano = write_chumpy_pickle(base / "mano" / "MANO_RIGHT.pkl", model.arrays)
    truths = write_grab(base / "GRAB", model, list(DEFAULT_SEQUENCES))
    return base / "GRAB", mano, truths


def test_contact_filter_keeps_right_hand_labels_only():
    labels = np.zeros((9, 4), dtype=np.int64)
    labels[1, 2] = 22  # R_Hand
    labels[2, 0] = 41  # R_Index1
    labels[3, 3] = 55  # R_Thumb3
    labels[4, :] = 21  # L_Hand
    labels[5, :] = [26, 30, 40, 38]  # left fingers
    labels[6, 1] = 1  # the body
    labels[7, :] = [20, 23, 56, 0]  # R_ForeArm, Jaw, out of range
    labels[8, :] = [26, 0, 0, 47]  # both hands: right counts
    assert grab.right_hand_contact(labels).tolist() == [False, True, True, True, False, False, False, False, True]


def test_hand_lands_in_the_object_frame(download):
    root, mano, truths = download
    unit = "grab/s2/mug_drink.npz"
    seq = grab.read_sequence(root / unit, grab.MEMBERS)
    assert set(seq) == set(grab.MEMBERS) and seq["obj_name"] == "mug" and seq["n_comps"] == 24
    loader = grab.GrabLoader(root, str(mano))
    hand = loader._hand(seq["rhand"]["vtemp"], 24, root / unit)
    p, o = seq["rhand"]["params"], seq["object"]["params"]
    world = hand.keypoints(p["global_orient"], p["hand_pose"], p["transl"])
    kp = grab.world_to_object(world, o["global_orient"], o["transl"])
    np.testing.assert_allclose(kp, truths[unit].keypoints_object, atol=2e-6)
    # GRAB's placement of the mesh (v @ R + t, no centre) and the inverse used for the hand agree: the held
    # fingertips touch the placed mesh in the world.
    import trimesh

    mesh = trimesh.load(root / "tools/object_meshes/contact_meshes/mug.ply", process=False)
    contact = np.flatnonzero(truths[unit].right_contact)
    held = contact[len(contact) // 2]
    placed = grab.object_vertices_world(mesh.vertices, o["global_orient"][held:held + 1], o["transl"][held:held + 1])[0]
    tips = world[held, [4, 8, 12]]
    dist = np.linalg.norm(tips[:, None] - placed[None], axis=2).min(axis=1)
    assert dist.max() < 0.01, dist
    np.testing.assert_allclose(
        grab.world_to_object(placed[None], o["global_orient"][held : held + 1], o["transl"][held : held + 1])[0],
        mesh.vertices,
        atol=1e-6,
    )
    loader.close()


def test_thinning_keeps_moves_and_segment_starts():
    kp = np.zeros((8, 21, 3))
    kp[3:, 0, 0] = 0.002  # a 2 mm move at frame 3: below the 5 mm threshold
    kp[5:, 4, 1] = 0.006  # a 6 mm move of the thumb tip at frame 5
    starts = np.zeros(8, dtype=bool)
    starts[7] = True  # a new run of contact frames
    assert grab.thin_frames(kp, starts, 5.0).tolist() == [0, 5, 7]
    assert grab.thin_frames(kp, starts, 0.0).tolist() == list(range(8))


def test_load_unit_keeps_right_hand_contact_frames(download):
    root, mano, truths = download
    unit = "grab/s1/apple_lift.npz"
    truth = truths[unit]
    with_stride = grab.GrabLoader(root, str(mano), frame_stride=3, min_change_mm=0.0)
    result = with_stride.load_unit(unit)
    (batch,) = result.batches
    frames = [int(r.split(":")[1].split(";")[0]) for r in batch.record_ids]
    expected = [f for f in np.flatnonzero(truth.right_contact) if f % 3 == 0]
    assert frames == expected and not truth.left_only[frames].any()
    assert batch.record_ids[0] == f"{unit}:{frames[0]};subject=s1;intent=lift" and batch.object_key == "apple"
    assert batch.translation.shape == (len(frames), 3) and batch.rotation.shape == (len(frames), 3, 3)
    assert batch.joints.shape == (len(frames), 24) and (batch.mesh_scale == 1).all()
    assert batch.residual_mm.shape == (5,) and batch.residual_mm.max() <= 25.0
    thinned = grab.GrabLoader(root, str(mano)).load_unit(unit)  # default: frames closer than 5 mm are dropped
    assert 1 <= len(thinned.batches[0]) < len(batch)
    obj = with_stride.object("apple")
    assert obj.split == "val" and obj.mesh_path.endswith("contact_meshes/apple.ply")
    assert grab.split_of("mug") == "test" and grab.split_of("cubesmall") == "train"


def test_unreadable_and_crafted_sequences(download, tmp_path):
    root, mano, _ = download
    loader = grab.GrabLoader(root, str(mano))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(SourceFileError, match="npz"):
        grab.read_sequence(tmp_path / "broken.npz")
    np.savez(tmp_path / "partial.npz", obj_name=np.array("mug", dtype=object))
    with pytest.raises(SourceFileError, match="missing"):
        grab.read_sequence(tmp_path / "partial.npz")
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    members = dict(np.load(root / "grab/s1/apple_lift.npz", allow_pickle=True))
    evil = np.empty((), dtype=object)
    evil[()] = {"params": Payload()}
    np.savez(tmp_path / "evil.npz", **{**members, "rhand": evil})
    with pytest.raises(UnsafeSourceFile, match="mkdir"):
        grab.read_sequence(tmp_path / "evil.npz")
    assert not marker.exists()
    loader.close()


def test_curate_grab_end_to_end(download, tmp_path, monkeypatch):
    root, mano, truths = download
    monkeypatch.delenv("DGA_MANO_MODEL", raising=False)
    runner = CliRunner()
    store = tmp_path / "store"
    res = runner.invoke(app, ["--root", str(store), "curate", "--source", "grab", "--path", str(root)])
    assert res.exit_code == 1 and "mano.is.tue.mpg.de" in res.output and "--mano-model" in res.output

    res = runner.invoke(
        app,
        ["--root", str(store), "curate", "--source", "grab", "--path", str(root), "--mano-model", str(mano), "--json"],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["units_done"] == 3 and out["grasps_written"] > 0 and not out["skipped_files"]
    assert {k: v["split"] for k, v in out["objects"].items()} == {"apple": "val", "mug": "test", "cubesmall": "train"}
    files = sorted((store / "datasets" / "dga" / "candidates" / "grab").glob("*.parquet"))
    assert len(files) == 3
    table = pq.read_table(files[0])
    assert table.schema.equals(GRASP_SCHEMA, check_metadata=False) and set(table.column("source").to_pylist()) == {
        "grab"
    }
    ids = table.column("source_record_id").to_pylist()
    assert all(";subject=" in i and ";intent=" in i for i in ids)
    unit, frame = ids[0].split(";")[0].rsplit(":", 1)
    assert truths[unit].right_contact[int(frame)]
    splits = json.loads((store / "datasets" / "dga" / "splits" / "grab.json").read_text())
    assert sorted(v["split"] for v in splits["objects"].values()) == ["test", "train", "val"]
    # Objects went through ingestion like any other (metric, with provenance).
    meta = json.loads(next((store / "objects").glob(f"{out['objects']['apple']['object_id']}/meta.json")).read_text())
    assert meta["source"] == "grab" and meta["source_id"] == "apple"
    # A rerun resumes; the environment variable names the model too.
    monkeypatch.setenv("DGA_MANO_MODEL", str(mano))
    res = runner.invoke(app, ["--root", str(store), "curate", "--source", "grab", "--path", str(root), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["units_resumed"] == 3
