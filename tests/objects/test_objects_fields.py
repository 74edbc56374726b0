"""SDF grids kept with the object (dga_engine.objects.fields): read back exactly, untrusted, and optional."""

from __future__ import annotations

import errno
import io
import logging

import numpy as np
import pytest

RES = 16  # small grids: the cache's logic does not depend on the resolution


@pytest.fixture
def asset(object_store, box_object):
    return object_store.load(box_object.object_id)


def _arrays(grid):
    return {k: v.copy() for k, v in grid.arrays().items()}


def test_grid_is_built_once_then_read_exactly(layout, asset, monkeypatch):
    from dga_engine import fs
    from dga_engine.objects.fields import grid_path, object_grid
    from dga_engine.physics.fields import GridField

    fresh = _arrays(GridField.from_asset(asset, 0.9, resolution=RES))
    first = object_grid(layout, asset, 0.9, RES)
    path = grid_path(layout, asset, 0.9, RES)
    assert fs.exists(path) and path.startswith(layout.object_dir(asset.object_id) + "/fields/")

    def no_build(*a, **k):
        raise AssertionError("a kept grid must be read, not built again")

    monkeypatch.setattr(GridField, "from_asset", no_build)
    read = object_grid(layout, asset, 0.9, RES)
    for key in fresh:  # the same float64 grid as a fresh build: the same poses whether read or built
        assert np.array_equal(fresh[key], _arrays(first)[key]) and np.array_equal(fresh[key], _arrays(read)[key])
    assert grid_path(layout, asset, 1.1, RES) != path and grid_path(layout, asset, 0.9, 2 * RES) != path


def test_an_object_written_again_never_meets_its_old_grid(layout, asset):
    from dga_engine.objects.fields import grid_path

    before = grid_path(layout, asset, 1.0, RES)
    asset.meta.n_parts += 1  # what a re-ingest with other parts changes in meta.json
    assert grid_path(layout, asset, 1.0, RES) != before


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good(asset) -> dict:
    from dga_engine.physics.fields import GridField

    a = {k: v[0] for k, v in GridField.from_asset(asset, 1.0, resolution=RES).arrays().items()}
    return {**a, "version": np.int64(1)}


@pytest.mark.parametrize("damage", ["garbage", "truncated", "pickle", "extra key", "float32", "shape", "version",
                                    "nan", "oversized"])
def test_a_damaged_grid_is_rebuilt_with_a_warning(layout, asset, damage, caplog):
    from dga_engine import fs
    from dga_engine.objects.fields import grid_path, object_grid

    path = grid_path(layout, asset, 1.0, RES)
    good = _good(asset)
    data = {
        "garbage": b"not a zip file at all",
        "truncated": _npz(**good)[:500],
        "pickle": _npz(**{**good, "values": np.array([{"evil": 1}], dtype=object)}),
        "extra key": _npz(**good, more=np.zeros(3)),
        "float32": _npz(**{**good, "values": good["values"].astype(np.float32)}),
        "shape": _npz(**{**good, "values": good["values"][:-1]}),
        "version": _npz(**{**good, "version": np.int64(99)}),
        "nan": _npz(**{**good, "values": np.full_like(good["values"], np.nan)}),
        "oversized": _npz(**good) + b"\0" * (8 * RES**3 + 8192),
    }[damage]
    fs.write_bytes(path, data)
    with caplog.at_level(logging.WARNING, logger="dga_engine.objects.fields"):
        grid = object_grid(layout, asset, 1.0, RES)
    assert "rebuilding its SDF grid" in caplog.text
    for key in ("values", "lower", "upper"):
        assert np.array_equal(_arrays(grid)[key][0], good[key])
    assert fs.read_bytes(path) != data  # overwritten with a good grid, read without a warning next time
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dga_engine.objects.fields"):
        object_grid(layout, asset, 1.0, RES)
    assert caplog.text == ""


def test_a_root_that_cannot_be_written_still_gets_its_grid(layout, asset, monkeypatch, caplog):
    from dga_engine import fs
    from dga_engine.objects import fields

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fs, "write_bytes", full)
    with caplog.at_level(logging.WARNING, logger="dga_engine.objects.fields"):
        grid = fields.object_grid(layout, asset, 1.0, RES)
    assert grid.resolution == (RES,) * 3
    assert "could not be kept" in caplog.text and "No space left" in caplog.text
    assert not fs.exists(fields.grid_path(layout, asset, 1.0, RES))
