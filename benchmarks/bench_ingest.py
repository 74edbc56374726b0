"""Benchmark of object ingestion: objects/min per core and the CoACD share of the time.

    python benchmarks/bench_ingest.py [--names can,box_tall,...] [--demo 6] [--processes 1] [--compare-auto 120]

Ingests a handful of builtin shapes plus two open (non-watertight) meshes -- the builtin mug with a dozen
faces removed (hole filling) and with a 2 cm patch of wall removed (level-set repair) -- into a fresh temporary root,
and prints one JSON object: per-stage seconds, wall and
CPU time (this process plus its CoACD children), objects/min, objects/min per core and the CoACD share.

``--compare-auto S`` also runs CoACD with its own 'auto' preprocessing on the raw open mesh (what a
pipeline without our repair would do), with a time limit of S seconds, to show what the repair saves.

The benchmark machine may be shared (the development box has 2 cores and other jobs): CPU time is
reported next to wall time, and ``loadavg`` before and after, so figures can be read in context.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time


def open_mug():
    """The builtin mug with a dozen faces of its wall removed: open (cracked), as many downloaded meshes are."""
    import numpy as np

    from dga_engine.objects.builtin import builtin_mesh

    mesh = builtin_mesh("mug")
    keep = np.ones(len(mesh.faces), bool)
    keep[np.random.default_rng(0).choice(len(mesh.faces), 12, replace=False)] = False
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    assert not mesh.is_watertight
    return mesh


def holed_mug():
    """The builtin mug with a patch of its outer wall (about 2 cm across) removed: too big for hole filling,
    so it takes the level-set repair path."""
    import numpy as np
    import trimesh

    from dga_engine.objects.builtin import builtin_mesh

    mesh = builtin_mesh("mug")
    v, f = trimesh.remesh.subdivide_to_size(mesh.vertices, mesh.faces, max_edge=0.004)
    mesh = trimesh.Trimesh(v, f)  # a denser mesh, as scanned or downloaded meshes are
    centre = np.array([-0.04, 0.0, 0.05])  # on the outer wall, opposite the handle
    mesh.update_faces(np.linalg.norm(mesh.triangles_center - centre, axis=1) > 0.01)
    mesh.remove_unreferenced_vertices()
    assert not mesh.is_watertight
    return mesh


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--names", default=None, help="comma-separated builtin names (default: demo subset)")
    ap.add_argument("--demo", type=int, default=6, help="size of the builtin demo subset when --names is not given")
    ap.add_argument("--processes", type=int, default=1)
    ap.add_argument(
        "--compare-auto", type=float, default=0.0, help="also time CoACD 'auto' on the raw open mesh (s limit)"
    )
    args = ap.parse_args(argv)

    from dga_engine.layout import Layout
    from dga_engine.objects.builtin import demo_subset
    from dga_engine.objects.decompose import CoacdParams, DecompositionError, run_coacd
    from dga_engine.objects.ingest import IngestConfig, IngestItem, ingest_items

    names = args.names.split(",") if args.names else demo_subset(args.demo)
    config = IngestConfig()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="dga-bench-ingest-") as tmp:
        items = [IngestItem(source="builtin", source_id=n, label=n, builtin=n) for n in names]
        for name, make in (("open_mug.obj", open_mug), ("holed_mug.obj", holed_mug)):
            path = os.path.join(tmp, name)
            make().export(path)
            items.append(IngestItem(source="local", source_id=name, label=name[:-4].replace("_", " "), path=path))
        cpu0, t0 = _cpu(), time.perf_counter()
        report = ingest_items(Layout.at(os.path.join(tmp, "root")), items, args.processes, config)
        wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
        from dga_engine.objects.store import ObjectStore

        store = ObjectStore(Layout.at(os.path.join(tmp, "root")))
        per_object = {
            store.meta(i).source_id: {
                "parts": store.meta(i).n_parts,
                "method": store.meta(i).decomposition["method"],
                "coacd_s": store.meta(i).decomposition.get("seconds"),
                "repair": store.meta(i).extra["repair"],
            }
            for i in report.ingested
        }
        result = {
            "objects": len(items),
            "ingested": len(report.ingested),
            "quarantined": report.quarantine,
            "processes": args.processes,
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "stage_s": {k: round(v, 2) for k, v in report.timings.items() if k != "wall"},
            "objects_per_min": round(60 * len(report.ingested) / wall, 2),
            "objects_per_min_per_core": round(60 * len(report.ingested) / wall / args.processes, 2),
            "cpu_s_per_object": round(cpu / max(1, len(report.ingested)), 2),
            "coacd_share_of_stage_time": round(
                report.timings.get("decompose", 0.0)
                / max(1e-9, sum(v for k, v in report.timings.items() if k != "wall")),
                3,
            ),
            "per_object": per_object,
            "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
            "cores": os.cpu_count(),
        }
        if args.compare_auto > 0:
            raw = open_mug()
            try:
                parts, seconds = run_coacd(raw.vertices, raw.faces, CoacdParams(preprocess="auto"), args.compare_auto)
                result["coacd_auto_on_raw_open_mesh"] = {"seconds": round(seconds, 2), "parts": len(parts)}
            except DecompositionError as exc:
                result["coacd_auto_on_raw_open_mesh"] = {"error": exc.kind, "limit_s": args.compare_auto}
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


if __name__ == "__main__":
    main()
