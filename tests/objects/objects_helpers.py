"""Mesh builders shared by the object tests (a plain module: conftest names clash across test folders)."""

from __future__ import annotations

import numpy as np
import trimesh


def open_sphere(radius: float = 0.04, hole_faces: int = 30) -> trimesh.Trimesh:
    """A sphere with a hole: the faces nearest the top removed (an open, non-watertight mesh)."""
    m = trimesh.creation.icosphere(subdivisions=4, radius=radius)
    order = np.argsort(-m.triangles_center[:, 2])
    keep = np.ones(len(m.faces), bool)
    keep[order[:hole_faces]] = False
    m.update_faces(keep)
    m.remove_unreferenced_vertices()
    assert not m.is_watertight
    return m


def write_objaverse_mirror(root, lvis: dict, annotations: dict, with_glb: set | None = None) -> dict:
    """A fake ``hf-objaverse-v1`` tree in the objaverse package's own cache layout.

    ``annotations``: uid -> metadata dict; every uid gets a distinct small box GLB (unless left out of
    ``with_glb``). Returns object-paths (uid -> relative path).
    """
    import gzip
    import json
    from pathlib import Path

    root = Path(root)
    paths = {uid: f"glbs/000-000/{uid}.glb" for uid in annotations}
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    (root / "glbs" / "000-000").mkdir(parents=True, exist_ok=True)
    for name, obj in (
        ("object-paths.json.gz", paths),
        ("lvis-annotations.json.gz", lvis),
        ("metadata/000-000.json.gz", annotations),
    ):
        with gzip.open(root / name, "wb") as fh:
            fh.write(json.dumps(obj).encode("utf-8"))
    for i, uid in enumerate(sorted(annotations)):
        if with_glb is not None and uid not in with_glb:
            continue
        if "/" in uid or ".." in uid:
            continue  # an unsafe uid has no file: it must be refused before any fetch
        box = trimesh.creation.box(extents=[0.03 + 0.004 * i, 0.05, 0.07])
        box.export(root / paths[uid])
    return paths
