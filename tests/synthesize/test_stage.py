import json

import numpy as np
import pyarrow as pa
import pytest

from dga_engine import runs
from dga_engine.dataset.schema import GRASP_SCHEMA, make_grasp_id, pose_arrays
from dga_engine.dataset.store import Dataset
from dga_engine.hand import default_hand
from dga_engine.synthesize import (
    GENERATOR_VERSION,
    SynthesisConfig,
    read_verdicts,
    run_synthesis,
    synthesize_object,
    unit_key,
)
from dga_engine.synthesize.stage import STAGE


def test_candidates_respect_limits_and_carry_provenance(layout, box_object, tiny_config):
    config = tiny_config.replace(per_object=6, object_scales=(1.0, 0.8))  # 2 batches per scale (4 + 2)
    stats = []
    table = synthesize_object(layout, box_object.object_id, config, seed=7, stats=stats)
    assert table.schema.equals(GRASP_SCHEMA, check_metadata=False)
    assert table.num_rows == 12 and len(stats) == 4
    a = pose_arrays(table)
    hand = default_hand()
    assert np.isfinite(a["translation"]).all() and np.isfinite(a["joints"]).all()
    assert (a["joints"] >= hand.lower.numpy() - 1e-6).all() and (a["joints"] <= hand.upper.numpy() + 1e-6).all()
    np.testing.assert_allclose(np.linalg.norm(a["rotation"], axis=1), 1.0, atol=1e-5)
    assert sorted(set(a["object_scale"].tolist())) == pytest.approx([0.8, 1.0])
    d = table.to_pydict()
    chash = config.config_hash()
    assert set(d["source"]) == {"synthesis"} and set(d["round"]) == {0}
    assert set(d["generator"]) == {f"synthesis-{GENERATOR_VERSION}"} and set(d["generator_config_hash"]) == {chash}
    assert (
        d["source_record_id"][0] == f"{chash}:seed=7:scale=1:0"
        and d["source_record_id"][-1] == f"{chash}:seed=7:scale=0.8:5"
    )
    assert len(set(d["grasp_id"])) == 12
    assert d["grasp_id"][0] == make_grasp_id(box_object.object_id, "synthesis", d["source_record_id"][0], 0)
    assert all(v is None for v in d["suc6"])  # unfiltered
    # hands start around the object and end near it: every root within reach of the box
    assert (np.linalg.norm(a["translation"], axis=1) < 0.6).all()


def test_same_seed_same_grasps_other_seed_other_grasps(layout, box_object, tiny_config):
    one = pose_arrays(synthesize_object(layout, box_object.object_id, tiny_config, seed=3))
    two = pose_arrays(synthesize_object(layout, box_object.object_id, tiny_config, seed=3))
    other = pose_arrays(synthesize_object(layout, box_object.object_id, tiny_config, seed=4))
    for k in ("translation", "rotation", "joints"):
        np.testing.assert_array_equal(one[k], two[k])
    assert not np.allclose(one["joints"], other["joints"])


def test_config_hash_tracks_settings_not_threads():
    base = SynthesisConfig()
    assert base.config_hash() == SynthesisConfig().config_hash()
    assert base.config_hash() != base.replace(n_iter=base.n_iter + 1).config_hash()
    assert base.config_hash() == base.replace(threads=2).config_hash()
    assert SynthesisConfig.preset("fast") != SynthesisConfig.preset("default")
    with pytest.raises(ValueError, match="unknown synthesis preset"):
        SynthesisConfig.preset("nope")
    with pytest.raises(ValueError):
        base.replace(per_object=0)


def test_run_writes_candidates_records_and_resumes(layout, box_object, tiny_config):
    oid = box_object.object_id
    report = run_synthesis(layout, [oid, "obj-does-not-exist"], tiny_config, seed=1)
    assert report.candidates == 4 and report.failed == 1 and report.accepted is None
    good, bad = report.objects
    assert good.error is None and good.candidates == 4 and good.key == unit_key(oid, 1, tiny_config)
    assert "obj-does-not-exist" in bad.error and "ingest" in bad.error  # the store's message says what to do
    ds = Dataset(layout)
    assert ds.candidate_keys("synthesis") == [good.key]
    assert runs.is_done(layout, STAGE, good.key) and not runs.is_done(layout, STAGE, "obj-does-not-exist")
    written = ds.candidates("synthesis")
    # resume: nothing is recomputed, nothing is rewritten
    again = run_synthesis(layout, [oid], tiny_config, seed=1)
    assert again.objects[0].skipped and again.candidates == 4
    assert ds.candidates("synthesis").column("grasp_id").equals(written.column("grasp_id"))
    # a different seed is a different unit
    third = run_synthesis(layout, [oid], tiny_config, seed=2)
    assert not third.objects[0].skipped and len(ds.candidate_keys("synthesis")) == 2


def test_verdicts_after_the_filter_stage(layout, box_object, tiny_config):
    from dga_engine.simulate import run_filter

    report = run_synthesis(layout, [box_object.object_id], tiny_config, seed=0)
    assert report.accepted is None and report.objects[0].accepted is None  # the stage does not filter
    run_filter(layout, source="synthesis")
    read_verdicts(layout, report)
    item = report.objects[0]
    assert item.accepted is not None and 0 <= item.accepted <= item.candidates == 4
    assert report.accepted == item.accepted
    assert item.accepted + sum(item.reasons.values()) == 4
    ds = Dataset(layout)
    kept = ds.read(object_ids=[box_object.object_id])
    assert kept.num_rows == item.accepted and set(kept.column("source").to_pylist()) <= {"synthesis"}
    d = report.to_dict()
    json.dumps(d)  # JSON-ready
    assert d["acceptance"] == pytest.approx(item.accepted / 4)


def test_worker_processes_give_the_same_grasps(layout, object_store, box_object, tiny_config):
    import trimesh

    from dga_engine.objects.store import write_simple_object

    cyl = write_simple_object(
        object_store, trimesh.creation.cylinder(radius=0.03, height=0.08, sections=24), "cylinder"
    )
    ids = [box_object.object_id, cyl.object_id]
    pooled = run_synthesis(layout, ids, tiny_config, seed=2, workers=2)
    assert pooled.failed == 0 and pooled.candidates == 8
    ds = Dataset(layout)
    together = ds.candidates("synthesis").sort_by("grasp_id")
    alone = pa.concat_tables([synthesize_object(layout, oid, tiny_config, seed=2) for oid in ids]).sort_by("grasp_id")
    for col in ("grasp_id", "translation", "rotation", "joints"):
        assert together.column(col).equals(alone.column(col)), col


def test_a_failing_filter_keeps_the_candidates(layout, box_object, tiny_config):
    from dga_engine.simulate import run_filter

    report = run_synthesis(layout, [box_object.object_id], tiny_config, seed=0)
    with pytest.raises(ValueError, match="no-such-backend"):
        run_filter(layout, source="synthesis", backend="no-such-backend")
    assert report.accepted is None and report.candidates == 4
    assert Dataset(layout).candidates("synthesis").num_rows == 4
