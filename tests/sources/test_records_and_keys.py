"""Curate judges every record on its own and never confuses two units (keys are injective)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dga_engine import runs
from dga_engine.dataset.store import Dataset
from dga_engine.sources import base
from dga_engine.sources.curate import curate

from . import builders


@pytest.mark.parametrize(
    "pair", [("a/b", "a_b"), ("core-mug a.npy", "core-mug_a.npy"), ("ä", "ö"), ("x" * 300, "x" * 301)]
)
def test_unit_keys_are_injective_and_safe(pair):
    from dga_engine.layout import safe_name

    a, b = (base.unit_key(u) for u in pair)
    assert a != b
    assert safe_name(a) == a and safe_name(b) == b and len(a) <= 120
    assert base.unit_key(pair[0]) == a  # stable


def test_colliding_file_names_are_both_curated(layout):
    root = Path(layout.source("dexgraspnet"))
    truths = builders.write_dexgraspnet(root, codes=("core-mug a", "core-mug_a", "ä-cup", "ö-cup"), per_object=2)
    report = curate(layout, "dexgraspnet")
    assert (report.units_done, report.units_resumed) == (4, 0), report
    assert report.grasps_written == 8 and not report.skipped_files and not report.missing_objects
    ids = Dataset(layout).candidates("dexgraspnet").column("source_record_id").to_pylist()
    assert {i.rsplit(":", 1)[0] for i in ids} == {f"dataset/{c}.npy" for c in truths}
    again = curate(layout, "dexgraspnet")
    assert (again.units_done, again.units_resumed) == (0, 4)


def test_units_completed_under_the_old_keys_are_recognised(layout, monkeypatch):
    """A root curated by a version with the old (colliding) keys: its units are not curated twice, and the unit
    the old keys hid is curated now."""
    import importlib

    # the module (the package exports the function)
    curate_module = importlib.import_module("dga_engine.sources.curate")

    root = Path(layout.source("dexgraspnet"))
    builders.write_dexgraspnet(root, codes=("core-mug a", "core-mug_a", "core-bowl"), per_object=2)
    monkeypatch.setattr(curate_module, "unit_key", base.legacy_unit_key)  # what older versions did
    old = curate(layout, "dexgraspnet")
    assert (old.units_done, old.units_resumed, old.grasps_written) == (2, 1, 4)  # the collision, as it was
    monkeypatch.undo()
    ds = Dataset(layout)
    before = ds.candidate_keys("dexgraspnet")
    now = curate(layout, "dexgraspnet")
    assert (now.units_done, now.units_resumed, now.grasps_written) == (1, 2, 2)
    ids = ds.candidates("dexgraspnet").column("source_record_id").to_pylist()
    assert len(ids) == len(set(ids)) == 6  # nothing written twice
    assert set(before) <= set(ds.candidate_keys("dexgraspnet"))
    assert len(runs.done_units(layout, "curate-dexgraspnet")) == 2 + 3  # old records kept, new keys for all three


def _release_with_extra_records(layout, edits: list[dict]) -> tuple[Path, str, int]:
    """A DexGraspNet-derived release file whose first object gets extra records: copies of its first record
    with ``edits`` applied. Returns (root, object name, number of good records of that object)."""
    root = Path(layout.source("dga"))
    name = "core-cup-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    builders.write_release_file(
        root / "DexGraspNet",
        "dexgraspnet_shadowhand.pt",
        {name: builders.normalised_box((1.1, 1.1, 1.5))},
        "multiply",
        4,
        3,
        mesh_layout="meshdata",
    )
    path = root / "DexGraspNet" / "dexgraspnet_shadowhand.pt"
    data = torch.load(path, weights_only=False)  # our own fixture file
    template = data["metadata"][0]
    for edit in edits:
        data["metadata"].append({**template, **edit})
    torch.save(data, path)
    return root, name, 4


def test_one_broken_record_does_not_cost_its_object_the_good_ones(layout):
    mirror = torch.diag(torch.tensor([1.0, 1.0, -1.0]))
    edits = [
        {"rotations": torch.eye(3) * 5},  # a scaled matrix
        {"translations": torch.tensor([1e9, 0.0, 0.0])},  # a root a million km away
        {"rotations": torch.zeros(3, 3)},  # would become the identity
        {"rotations": mirror},  # a mirror image: would become some rotation
        {"joint_positions": torch.full((24,), 1e6)},
    ]
    root, name, good = _release_with_extra_records(layout, edits)
    report = curate(layout, "dga")
    assert not report.skipped_files, report.skipped_files
    assert report.grasps_written == good, report
    assert report.bad_records == len(edits)
    example = " ".join(report.bad_record_examples)
    assert "not a rotation matrix" in example and "record 4" in example
    ids = Dataset(layout).candidates("dga").column("source_record_id").to_pylist()
    assert sorted(int(i.rsplit(":", 1)[1]) for i in ids) == list(range(good))


def test_pose_check_reasons():
    eye = np.eye(3)[None]
    cases = {
        "all zeros": (np.zeros((1, 3, 3)), np.zeros((1, 3))),
        "|R^T R - I|": (5 * eye, np.zeros((1, 3))),
        "mirror": (np.diag([1.0, 1.0, -1.0])[None], np.zeros((1, 3))),
        "m from the object": (eye, np.array([[1e9, 0, 0]])),
        "non-finite": (eye, np.array([[np.nan, 0, 0]])),
    }
    for words, (r, t) in cases.items():
        ok, first, why = base.pose_check(r, t)
        assert not ok[0] and first == 0 and words in why, (words, why)
    ok, first, why = base.pose_check(np.repeat(eye, 3, 0) * (1 + 1e-6), np.zeros((3, 3)))
    assert ok.all() and first == -1 and why == ""


def test_an_endless_object_name_is_a_bad_record_not_an_abort(layout):
    root, name, good = _release_with_extra_records(layout, [{"object_name": "x" * 5000}, {"object_name": "a\nb"}])
    report = curate(layout, "dga")
    assert report.grasps_written == good and report.bad_records == 2, report
    assert "longer than any object name" in " ".join(report.bad_record_examples)


def test_a_few_fk_outliers_are_dropped_alone(layout, monkeypatch):
    """When the FK check finds a minority of a batch's sampled records off, only those are dropped."""
    from dga_engine.sources import kinematics

    real = kinematics.PoseConverter.fingertip_residual_mm

    def one_off(self, rotation, translation, q_src):
        res = real(self, rotation, translation, q_src)
        res[0] += 50.0  # the first sampled record disagrees by 5 cm
        return res

    monkeypatch.setattr(kinematics.PoseConverter, "fingertip_residual_mm", one_off)
    root, name, good = _release_with_extra_records(layout, [])
    report = curate(layout, "dga")
    assert report.grasps_written == good - 1 and report.bad_records == 1, report
    assert "miss the source model's" in report.bad_record_examples[0]
