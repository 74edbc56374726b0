"""Each loader on a tiny dataset in its source's exact format: what it reads, and what it refuses."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from dga_engine.sources.curate import CurateConfig, make_loader
from dga_engine.sources.kinematics import engine_fingertips
from dga_engine.sources.safeload import SourceFileError, UnsafeSourceFile

from . import builders


def _load_all(source, root, **cfg):
    loader = make_loader(source, root, CurateConfig(**cfg))
    batches, results = [], []
    for unit in loader.units():
        res = loader.load_unit(unit)
        results.append(res)
        batches += res.batches
    return loader, batches, results


def _check_thumbs_touch(batches, truths, tol_mm):
    """The engine's thumb tip of every converted grasp is at the object corner times the grasp's metric scale."""
    seen = 0
    for b in batches:
        truth = truths[b.object_key]
        tips = engine_fingertips(b.translation, b.rotation, b.joints)[:, 4]
        for i, rid in enumerate(b.record_ids):
            assert b.mesh_scale[i] == pytest.approx(truth.scales[rid], rel=1e-6), rid
            err = np.linalg.norm(tips[i] - truth.corner * truth.scales[rid]) * 1000
            assert err < tol_mm, (rid, err)
            seen += 1
    assert seen == sum(len(t.scales) for t in truths.values())


def test_dexgraspnet(dexgraspnet_root):
    root, truths = dexgraspnet_root
    loader, batches, _ = _load_all("dexgraspnet", root)
    assert loader.units() == sorted(f"dataset/{c}.npy" for c in truths)
    _check_thumbs_touch(batches, truths, 0.01)
    assert sorted(set(np.round(np.concatenate([b.mesh_scale for b in batches]), 4))) == [0.06, 0.08, 0.1, 0.12]
    code = next(iter(truths))
    obj = loader.object(code)
    assert (
        obj.mesh_path.endswith(f"meshdata/{code}/coacd/decomposed.obj") and obj.split == "train" and obj.label == "mug"
    )
    assert all(b.residual_mm.max() < 0.01 for b in batches)


def test_unidexgrasp_scale_is_inverse(unidexgrasp_root):
    root, truths = unidexgrasp_root
    loader, batches, _ = _load_all("unidexgrasp", root)
    _check_thumbs_touch(batches, truths, 0.01)
    assert sorted(set(np.round(np.concatenate([b.mesh_scale for b in batches]), 4))) == [0.06, 0.1, 0.15]
    splits = {k: loader.object(k).split for k in truths}
    assert sorted(splits.values()) == ["test", "train"]
    assert all(loader.object(k).mesh_path.endswith("coacd/decomposed.obj") for k in truths)


@pytest.mark.parametrize("ur", [False, True])
def test_multidex(tmp_path, ur):
    truths = builders.write_multidex(tmp_path, ur=ur)
    loader, batches, _ = _load_all("multidex" if not ur else "dga", tmp_path)
    _check_thumbs_touch(batches, truths, 2.5)
    assert all(b.residual_mm[3] > 1.0 for b in batches)  # the URDF's little finger differs from ours
    if not ur:
        assert loader.object("contactdb+apple").split == "test" and loader.object("ycb+foam_brick").split == "train"
        assert loader.object("ycb+foam_brick").mesh_path.endswith("data/object/ycb/foam_brick/foam_brick.stl")


def test_dga_release(dga_root):
    root, truths = dga_root
    loader, batches, _ = _load_all("dga", root)
    assert loader.units() == [
        "DexGraspNet/dexgraspnet_shadowhand_downsample.pt",
        "Unidexgrasp/unidexgrasp_shadowhand.pt",
    ]
    _check_thumbs_touch(batches, truths, 2.5)
    scales = {b.object_key: b.mesh_scale for b in batches}
    np.testing.assert_allclose(scales["core-cup-0a1b2c3d4e5f60718293a4b5c6d7e8f9"], [0.08, 0.1], rtol=1e-6)  # multiply
    np.testing.assert_allclose(scales["sem-Car-2a3b4c5d6e7f8091a2b3c4d5e6f70819"], [0.08, 0.1], rtol=1e-6)  # divide
    obj = loader.object("ddg-gd_banana_poisson_002")
    assert obj.split == "test" and obj.mesh_path.endswith("meshdata/ddg-gd_banana_poisson_002/coacd/decomposed.obj")
    assert obj.extra["point_cloud_diagonal"] == pytest.approx(np.linalg.norm([1.6, 0.6, 0.6]), rel=0.05)


def test_dga_downsample_dropped_when_full_file_exists(dga_root):
    root, _ = dga_root
    folder = root / "DexGraspNet"
    (folder / "dexgraspnet_shadowhand.pt").write_bytes((folder / "dexgraspnet_shadowhand_downsample.pt").read_bytes())
    loader = make_loader("dga", root, CurateConfig())
    assert loader.units() == ["DexGraspNet/dexgraspnet_shadowhand.pt", "Unidexgrasp/unidexgrasp_shadowhand.pt"]


def test_dga_unknown_scale_meaning_needs_a_mode(dga_root):
    root, _ = dga_root
    os.rename(root / "Unidexgrasp" / "unidexgrasp_shadowhand.pt", root / "Unidexgrasp" / "mystery.pt")
    loader = make_loader("dga", root, CurateConfig())
    with pytest.raises(SourceFileError, match="--scale-mode"):
        loader.load_unit("Unidexgrasp/mystery.pt")
    loader = make_loader("dga", root, CurateConfig(scale_mode="divide"))
    assert sum(len(b) for b in loader.load_unit("Unidexgrasp/mystery.pt").batches) == 4


def test_realdex_release_and_raw(realdex_root):
    root, truths = realdex_root
    loader, batches, _ = _load_all("realdex", root)
    assert loader.units() == ["realdex_shadowhand.pt", "raw/banana_toy/capture.npz"]
    raw = [b for b in batches if b.object_key == "banana_toy"]
    assert [r.split(":")[1] for r in raw[0].record_ids] == ["3", "4", "5"]  # approach frames dropped
    release = [b for b in batches if b.object_key != "banana_toy"]
    _check_thumbs_touch(release, {k: v for k, v in truths.items() if k != "banana_toy"}, 2.5)
    # raw frames: the converted thumb tip is where the source model puts it in the object frame
    assert raw[0].residual_mm.max() < 2.5
    assert loader.object("banana_toy").mesh_path.endswith("raw/banana_toy/banana_toy.obj")


def test_bad_records_are_skipped_and_counted(tmp_path):
    builders.write_dexgraspnet(tmp_path, codes=("core-a-0123",), per_object=3)
    path = tmp_path / "dataset" / "core-a-0123.npy"
    arr = np.load(path, allow_pickle=True)  # trusted: our own fixture
    arr[1] = {"qpos": {k: v for k, v in arr[1]["qpos"].items() if k != "robot0:THJ0"}, "scale": 0.1}
    arr = np.concatenate(
        [arr, np.array([{"qpos": dict(arr[0]["qpos"], WRJTx=float("nan")), "scale": 0.1}, "junk"], dtype=object)]
    )
    np.save(path, arr, allow_pickle=True)
    _, batches, results = _load_all("dexgraspnet", tmp_path)
    assert [r.split(":")[1] for r in batches[0].record_ids] == ["0", "2"]
    assert results[0].bad_records == 3 and "robot0:THJ0" in results[0].bad_record_example


def test_unidexgrasp_bad_file_skipped_rest_loads(unidexgrasp_root):
    root, truths = unidexgrasp_root
    folder = next((root / "DFCData" / "poses" / "core").iterdir())
    good = sorted(folder.glob("*.npz"))
    data = good[0].read_bytes()
    (folder / "00007.npz").write_bytes(data[: len(data) // 2])  # truncated
    q = np.empty((), dtype=object)
    q[()] = {"x": builders.Truth}  # names a class: refused
    np.savez(folder / "00008.npz", qpos=q, scale=np.float32(10.0))
    loader = make_loader("unidexgrasp", root, CurateConfig())
    res = loader.load_unit(f"poses/core/{folder.name}")
    assert len(res.batches[0]) == len(good)
    skipped = dict(res.skipped_files)
    assert set(skipped) == {f"poses/core/{folder.name}/00007.npz", f"poses/core/{folder.name}/00008.npz"}
    assert "refusing to unpickle tests.sources.builders.Truth" in skipped[f"poses/core/{folder.name}/00008.npz"]


def test_malicious_release_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    torch.save({"info": {}, "metadata": [Exploit()]}, tmp_path / "dexgraspnet_shadowhand.pt")
    loader = make_loader("dga", tmp_path, CurateConfig())
    with pytest.raises(UnsafeSourceFile):
        loader.load_unit("dexgraspnet_shadowhand.pt")
    assert not marker.exists()
    with open(tmp_path / "object_pcds_nors.pkl", "wb") as fh:
        pickle.dump({"x": Exploit()}, fh)
    assert loader.objects.pc_diagonal(tmp_path, "x") is None and not marker.exists()


def test_release_records_with_unsafe_names_are_skipped(tmp_path):
    builders.write_release_file(tmp_path, "realdex_shadowhand.pt", {"cup": builders.metric_box()}, "divide", 2, 0)
    data = torch.load(tmp_path / "realdex_shadowhand.pt", weights_only=True)
    data["metadata"][0]["object_name"] = "../../etc/passwd"
    data["metadata"].append({"rotations": torch.eye(3)})  # missing keys
    torch.save(data, tmp_path / "realdex_shadowhand.pt")
    loader = make_loader("realdex", tmp_path, CurateConfig())
    res = loader.load_unit("realdex_shadowhand.pt")
    assert sum(len(b) for b in res.batches) == 1 and res.bad_records == 2
    assert "not a safe relative name" in res.bad_record_example
    assert json.loads((tmp_path / "grasp.json").read_text())["_test_split"] == ["cup"]
