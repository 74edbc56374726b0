"""The embedded default set: variety, determinism, graspable sizes, watertightness, stable ids."""

from __future__ import annotations

import numpy as np
import pytest

from dga_engine.objects.builtin import (
    BUILTIN_NAMES,
    UnknownBuiltinError,
    builtin_label,
    builtin_mesh,
    builtin_shape,
    demo_subset,
)
from dga_engine.objects.ingest import ingest_builtin
from dga_engine.objects.mesh import obb_extents
from dga_engine.objects.store import ObjectStore, content_id


def test_set_is_large_and_named():
    assert len(BUILTIN_NAMES) >= 30
    assert len(set(BUILTIN_NAMES)) == len(BUILTIN_NAMES)
    labels = [builtin_label(n) for n in BUILTIN_NAMES]
    assert len(set(labels)) == len(labels) and all(len(x) > 3 for x in labels)
    for kind in (
        "box",
        "can",
        "bottle",
        "mug",
        "bowl",
        "torus",
        "l_shape",
        "t_shape",
        "sphere",
        "cone",
        "capsule",
        "wedge",
    ):
        assert any(kind in n for n in BUILTIN_NAMES), kind
    with pytest.raises(UnknownBuiltinError, match="choose from"):
        builtin_shape("no_such_shape")


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_shapes_are_watertight_graspable_and_deterministic(name):
    mesh = builtin_mesh(name)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    ext = obb_extents(mesh)
    assert 0.029 <= ext[1] <= 0.121, f"{name}: grasp size {ext[1]:.3f} m out of 3-12 cm"
    assert ext[2] <= 0.25, f"{name}: longest side {ext[2]:.3f} m"
    ratio = mesh.volume / mesh.convex_hull.volume
    assert (ratio > 0.999) == builtin_shape(name).convex, f"{name}: convex flag disagrees with hull ratio {ratio:.3f}"
    again = builtin_mesh(name)
    assert np.array_equal(mesh.vertices, again.vertices) and np.array_equal(mesh.faces, again.faces)


def test_demo_subset_is_small_varied_and_stable():
    six = demo_subset(6)
    assert six == demo_subset(6) and len(set(six)) == 6
    assert set(six) <= set(BUILTIN_NAMES)
    assert sum(builtin_shape(n).convex for n in six) >= 2 and sum(not builtin_shape(n).convex for n in six) >= 2
    assert demo_subset(3) == six[:3]
    assert sorted(demo_subset(1000)) == sorted(BUILTIN_NAMES)


# Content ids of two builtins, pinned: a change here means every stored builtin object changes id.
PINNED = {"box_tall": "obj-4246b48ffb8495d1", "can": "obj-e0195e11f141ae56"}


def test_ingest_builtin_ids_stable_and_reingest_is_noop(layout, fast_config):
    names = ["box_tall", "can", "sphere_6cm", "l_shape"]  # l_shape: one real CoACD run
    first = ingest_builtin(layout, names, config=fast_config)
    assert len(first.ingested) == 4 and not first.quarantined and not first.skipped
    store = ObjectStore(layout)
    by_source = {store.meta(i).source_id: store.meta(i) for i in first.ingested}
    for name, oid in PINNED.items():
        assert by_source[name].object_id == oid
    assert by_source["l_shape"].decomposition["method"] == "coacd" and by_source["l_shape"].n_parts >= 2
    assert by_source["can"].decomposition["method"] == "convex-hull" and by_source["can"].n_parts == 1
    for meta in by_source.values():
        assert meta.source == "builtin" and meta.watertight and meta.scale_applied == 1.0
        assert meta.label == builtin_label(meta.source_id)
        asset = store.load(meta.object_id)
        assert np.allclose(asset.mesh.bounds.sum(axis=0), 0, atol=1e-4)  # centred
        assert asset.points.shape == (2048, 3) and asset.dense_normals.shape == (10240, 3)
        assert np.allclose(np.linalg.norm(asset.normals, axis=1), 1, atol=1e-4)
    second = ingest_builtin(layout, names, config=fast_config)
    assert second.ingested == [] and sorted(second.skipped) == sorted(first.ingested)
    # a fresh root gives the same ids (content-derived, deterministic)
    from dga_engine.layout import Layout

    other = ingest_builtin(Layout.at(layout.root + "-other"), ["box_tall", "sphere_6cm"], config=fast_config)
    assert other.ingested == [by_source["box_tall"].object_id, by_source["sphere_6cm"].object_id]
    assert content_id(store.load(PINNED["can"]).mesh)  # the stored mesh reads back


def test_ingest_builtin_parallel(layout, fast_config):
    report = ingest_builtin(layout, ["cube_5cm", "puck", "wedge"], processes=2, config=fast_config)
    assert len(report.ingested) == 3 and report.processes == 2
    assert set(report.ingested) == set(ObjectStore(layout).ids())
