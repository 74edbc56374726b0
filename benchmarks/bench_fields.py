"""Object SDF grids on real-size meshes: build time, memory, and error against exact distances.

    .venv/bin/python benchmarks/bench_fields.py [--resolution 64] [--json out.json]

On the real-ish objects (``benchmarks/realish.py``: ten meshes of 500-20,000 faces, up to 16 convex parts), per
object: CPU seconds and the resident-memory growth of ``GridField.from_mesh`` (the field that synthesis, refine
and training build per object), then on 2,000 points near the surface (within 2 voxels) and 500 further away,
the grid's signed distance against trimesh's exact point-to-triangle distance, and the share of points whose
inside/outside sign disagrees with the convex parts' exact inside test. The baseline in the same run is the
old construction's first step, ``trimesh.Trimesh.contains`` (ray tests), timed on 1% of the grid's nodes and
scaled up: the full call is what grew past 23 GB on ten such meshes.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realish  # noqa: E402


def rss_mb() -> float:
    """Current resident set size (MB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def measure(asset, resolution: int, rng: np.random.Generator) -> dict:
    import torch
    import trimesh

    from dga_engine.physics.fields import GridField
    from dga_engine.physics.penetration import ObjectParts

    mesh, parts = asset.mesh, ObjectParts(asset.parts)
    before = rss_mb()
    c0 = time.process_time()
    grid = GridField.from_mesh(mesh, parts, resolution=resolution)
    build_s = time.process_time() - c0
    grown = rss_mb() - before
    voxel = float(grid.voxel_size.max())

    # points near the surface (within 2 voxels along the normal) and further out (up to 3 cm)
    surface, face = trimesh.sample.sample_surface(mesh, 2000, seed=1)
    near = surface + mesh.face_normals[face] * rng.uniform(-2 * voxel, 2 * voxel, size=(2000, 1))
    far = surface[:500] + mesh.face_normals[face[:500]] * rng.uniform(2 * voxel, 0.03, size=(500, 1))
    out = {}
    for name, pts in (("near", near), ("far", far)):
        exact = -trimesh.proximity.signed_distance(mesh, pts)  # trimesh: positive inside; ours: negative inside
        inside = parts.contains(pts)
        got = grid.sdf(torch.as_tensor(pts, dtype=torch.float32).unsqueeze(0)).squeeze(0).numpy()
        err = np.abs(np.abs(got) - np.abs(exact)) * 1000
        row = {"abs_error_mm_median": float(np.median(err)), "abs_error_mm_p95": float(np.percentile(err, 95))}
        row["sign_disagrees_with_parts"] = float(np.mean((got < 0) != inside))
        out[name] = row

    nodes = GridField._nodes(*GridField._bounds(np.asarray(mesh.vertices), 0.03), resolution)
    sample = nodes[rng.choice(len(nodes), size=max(1, len(nodes) // 100), replace=False)]
    c0 = time.process_time()
    mesh.contains(sample)
    contains_s = (time.process_time() - c0) * len(nodes) / len(sample)
    return {"faces": len(mesh.faces), "parts": len(asset.parts), "voxel_mm": voxel * 1000,
            "build_cpu_s": build_s, "rss_growth_mb": grown, **out, "baseline_contains_cpu_s_estimate": contains_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    from dga_engine.layout import Layout
    from dga_engine.objects.store import ObjectStore

    torch.set_num_threads(1)
    ids = realish.object_ids()
    store = ObjectStore(Layout.at(str(realish.ROOT)))
    rng = np.random.default_rng(0)
    rows = {}
    for name, oid in sorted(ids.items()):
        rows[name] = measure(store.load(oid), args.resolution, rng)
        print(name, json.dumps(rows[name]), file=sys.stderr, flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import os

    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "load": os.getloadavg(), "resolution": args.resolution,
              "objects": rows, "peak_rss_mb": peak}
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
