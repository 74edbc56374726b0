"""Odd store contents and odd units: stray folders are skipped with a warning, broken scales say so."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import trimesh
from typer.testing import CliRunner

from dga_engine.cli.main import app


def test_stray_folder_in_the_object_store_is_skipped(layout, box_object, caplog):
    from dga_engine.objects.store import ObjectStore

    stray = layout.objects() + "/bad name"
    import os

    os.makedirs(stray)
    with open(stray + "/meta.json", "w") as fh:
        fh.write("{}")
    with caplog.at_level(logging.WARNING):
        assert ObjectStore(layout).ids() == [box_object.object_id]
    assert "bad name" in caplog.text and "not an object id" in caplog.text
    run = CliRunner().invoke
    listed = run(app, ["--root", layout.root, "objects", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    assert [m["object_id"] for m in json.loads(listed.stdout)] == [box_object.object_id]
    described = run(app, ["--root", layout.root, "describe", "--json"])  # no endpoint: disabled, but lists the store
    assert described.exit_code == 0, described.output
    assert json.loads(described.stdout)["requested"] == 1
    # `synthesize --objects all` lists the store with the same ObjectStore.ids()


def _write_obj(path, mesh, factor):
    v = np.asarray(mesh.vertices) * factor
    with open(path, "w") as fh:
        fh.write("".join(f"v {a:.9e} {b:.9e} {c:.9e}\n" for a, b, c in v))
        fh.write("".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in mesh.faces))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # trimesh, on the 1e30 file
@pytest.mark.parametrize("factor, says", [(1e30, "too large"), (1e-30, "too small"), (1e-9, "too small")])
def test_absurd_units_are_quarantined_with_the_real_reason(tmp_path, layout, factor, says):
    from dga_engine.objects.ingest import ingest_paths

    path = tmp_path / "box.obj"
    _write_obj(path, trimesh.creation.box(extents=[0.05, 0.06, 0.07]), factor)
    report = ingest_paths(layout, [path])
    assert report.ingested == [] and len(report.quarantine) == 1
    reason = report.quarantine[0]["reason"]
    assert says in reason and "file units across" in reason and "rescale it" in reason
    assert "no valid triangles" not in reason


def test_small_but_plausible_units_still_ingest(tmp_path, layout):
    from dga_engine.objects.ingest import ingest_paths

    path = tmp_path / "box_km.obj"
    _write_obj(path, trimesh.creation.box(extents=[0.05, 0.06, 0.07]), 1e-3)  # a 5 cm box in kilometres
    report = ingest_paths(layout, [path])
    assert len(report.ingested) == 1 and report.quarantine == []


def test_absurd_units_in_memory_meshes(layout):
    from dga_engine.objects.ingest import BadMeshError, ingest_mesh

    mesh = trimesh.creation.box(extents=[0.05, 0.06, 0.07])
    mesh.apply_scale(1e30)
    with pytest.raises(BadMeshError, match="too large for any length unit"):
        ingest_mesh(layout, mesh, label="huge box")
