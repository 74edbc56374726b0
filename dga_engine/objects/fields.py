"""Object SDF grids kept with the object: built once per (object, scale, resolution), then read.

    <root>/objects/<object_id>/fields/grid-r<R>-s<scale>-<meta hash>.npz
        values (R, R, R) float64 signed distances (negative inside), lower (3,) and upper (3,) float64 corners
        (metres, x y z), version () int

Seed synthesis and the polish preset anneal against the object's grid (``GridField.from_asset``); building it
costs 0.1-1 s of CPU per object and scale (11% of polishing one object's 23 grasps), and every run built it
again. The file is the grid exactly as built (float64), so a read grid gives the same poses as a fresh one.

The file name holds a hash of the object's meta.json: an object written again (re-ingested, new parts) never
meets an old grid. What is read back is untrusted: a file over the size its resolution allows, a pickle, wrong
keys, shapes or version, or values GridField refuses are rebuilt and overwritten, with a warning saying why.
A root that cannot be written (read-only, full) still gets its grid, built in memory, with a warning.
Two processes building the same grid at once both write the same bytes; each write is atomic.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import asdict

import numpy as np

from dga_engine import fs
from dga_engine.layout import Layout

log = logging.getLogger(__name__)

FIELDS_DIR = "fields"
GRID_VERSION = 1  # bump when GridField.from_mesh changes what it computes: old files are then rebuilt
_KEYS = ("values", "lower", "upper", "version")
_OVERHEAD_BYTES = 4096  # the npz's zip and array headers


def grid_path(layout: Layout, asset, scale: float, resolution: int) -> str:
    meta = json.dumps(asdict(asset.meta), sort_keys=True, default=str).encode("utf-8")
    digest = hashlib.sha256(meta).hexdigest()[:12]
    return f"{layout.object_dir(asset.object_id)}/{FIELDS_DIR}/grid-r{int(resolution)}-s{float(scale)!r}-{digest}.npz"


def object_grid(layout: Layout, asset, scale: float, resolution: int):
    """The :class:`~dga_engine.physics.fields.GridField` of a loaded object (``ObjectStore.load``) at uniform
    ``scale``: read from the object's folder when a valid one is there, else built and written there."""
    from dga_engine.physics.fields import GridField

    path = grid_path(layout, asset, scale, resolution)
    if fs.exists(path):
        try:
            return _read(path, resolution)
        except Exception as exc:  # noqa: BLE001 - untrusted bytes fail in many ways (zip, npy headers): rebuild
            log.warning("object %s: rebuilding its SDF grid %s (%s)", asset.object_id, path, exc)
    grid = GridField.from_asset(asset, scale, resolution=resolution)
    buf = io.BytesIO()
    np.savez(buf, **{k: v[0] for k, v in grid.arrays().items()}, version=np.int64(GRID_VERSION))
    try:
        fs.write_bytes(path, buf.getvalue())
    except OSError as exc:
        log.warning("object %s: its SDF grid could not be kept in %s (%s); it is rebuilt on every run until the "
                    "root can be written", asset.object_id, path, exc)
    return grid


def _read(path: str, resolution: int):
    from dga_engine.physics.fields import GridField

    limit = 8 * resolution**3 + 2 * 8 * 3 + 8 + _OVERHEAD_BYTES
    size = fs.size(path)
    if size > limit:
        raise ValueError(f"{size} bytes, more than a {resolution}^3 grid can take ({limit})")
    with np.load(io.BytesIO(fs.read_bytes(path)), allow_pickle=False) as z:
        if sorted(z.files) != sorted(_KEYS):
            raise ValueError(f"keys {sorted(z.files)}, expected {sorted(_KEYS)}")
        arrays = {k: z[k] for k in _KEYS}
    if arrays["version"].shape != () or int(arrays["version"]) != GRID_VERSION:
        raise ValueError(f"grid version {arrays['version']!r}, this engine writes {GRID_VERSION}")
    shapes = {"values": (resolution,) * 3, "lower": (3,), "upper": (3,)}
    for key, shape in shapes.items():
        if arrays[key].shape != shape or arrays[key].dtype != np.float64:
            raise ValueError(f"{key} is {arrays[key].dtype} {arrays[key].shape}, expected float64 {shape}")
    return GridField(arrays["values"], arrays["lower"], arrays["upper"])  # checks finiteness and the corners
