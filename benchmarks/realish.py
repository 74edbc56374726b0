"""Real-ish benchmark objects: ten meshes from another project, at real size, with their convex parts.

The meshes ship in ``pybullet_data`` (the ``pybullet`` wheel: ``pip install 'dga-engine[bench]'``): a duck,
the Stanford bunny, a teddy, a mug, a soccer ball, a lego brick, a torus, a sphere and two of the
procedural ``random_urdfs`` shapes. The bunny and the mug are subdivided to ~14k faces, the soccer ball is
kept at 9k: stored meshes of 500-20,000 faces with up to 16 CoACD parts, like the sources' objects. Each
is ingested through the engine's own path (size normalisation, watertight repair, CoACD) once into a
cached storage root, ``benchmarks/out/realish/root``, reused by every benchmark that asks for it.

``validated_grasps`` adds, per object, seed-synthesis grasps that the physics filter accepted (cached as
Parquet): the stand-in for "grasps a source's own validator passed", from which the refine benchmark
builds its near misses.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "realish"
ROOT = OUT / "root"

# name -> (file inside pybullet_data, subdivisions)
MESHES = {
    "duck": ("duck.obj", 0),
    "bunny_hires": ("bunny.obj", 2),
    "teddy": ("teddy2_VHACD_CHs.obj", 0),
    "mug_hires": ("objects/mug.obj", 2),
    "soccerball": ("soccerball.obj", 0),
    "lego": ("lego/lego.obj", 0),
    "torus": ("torus/torus_textured.obj", 0),
    "sphere": ("sphere_smooth.obj", 0),
    "random_008": ("random_urdfs/008/008.obj", 0),
    "random_000": ("random_urdfs/000/000.obj", 0),
}


def _pybullet_data() -> Path:
    try:
        import pybullet_data
    except ImportError:  # pragma: no cover - benchmark dependency
        sys.exit("these benchmarks need the pybullet wheel's meshes: pip install 'dga-engine[bench]' (or pybullet)")
    return Path(pybullet_data.getDataPath())


def object_ids(names: list[str] | None = None, processes: int = 2) -> dict[str, str]:
    """Ingest (once) and return {name: object_id} for the real-ish set (or the named subset)."""
    import json

    import trimesh

    from dga_engine.layout import Layout
    from dga_engine.objects.ingest import ingest_paths

    names = list(names or MESHES)
    index_file = OUT / "objects.json"
    known = json.loads(index_file.read_text()) if index_file.exists() else {}
    missing = [n for n in names if n not in known]
    if missing:
        data = _pybullet_data()
        src = OUT / "meshes"
        src.mkdir(parents=True, exist_ok=True)
        paths = []
        for n in missing:
            rel, subdiv = MESHES[n]
            mesh = trimesh.load(data / rel, force="mesh")
            for _ in range(subdiv):
                mesh = mesh.subdivide()
            path = src / f"{n}.obj"
            mesh.export(path)
            paths.append(path)
        t0 = time.perf_counter()
        report = ingest_paths(Layout.at(str(ROOT)), paths, processes=processes, source="pybullet_data")
        print(f"ingested {len(report.object_ids)} real-ish objects in {time.perf_counter() - t0:.0f} s "
              f"(quarantined: {report.quarantine})", file=sys.stderr)
        from dga_engine.objects.store import ObjectStore

        store = ObjectStore(Layout.at(str(ROOT)))
        for oid in store.ids():
            meta = store.meta(oid)
            stem = Path(meta.source_id).stem
            if stem in MESHES:
                known[stem] = oid
        OUT.mkdir(parents=True, exist_ok=True)
        index_file.write_text(json.dumps(known, indent=1, sort_keys=True))
    return {n: known[n] for n in names if n in known}


def describe(ids: dict[str, str]) -> list[tuple[str, int, int, str]]:
    """(name, stored faces, convex parts, extents in cm) of each object."""
    from dga_engine.layout import Layout
    from dga_engine.objects.store import ObjectStore

    store = ObjectStore(Layout.at(str(ROOT)))
    rows = []
    for name, oid in ids.items():
        a = store.load(oid)
        rows.append((name, len(a.mesh.faces), len(a.parts), "x".join(f"{e * 100:.1f}" for e in a.mesh.extents)))
    return rows


def validated_grasps(ids: dict[str, str], per_object: int = 32, seed: int = 0, workers: int = 2):
    """Seed-synthesis grasps the filter accepted, per object (cached): a GRASP_SCHEMA table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dga_engine.layout import Layout
    from dga_engine.simulate import filter_table
    from dga_engine.synthesize import SynthesisConfig, run_synthesis

    cache = OUT / f"validated-{per_object}-s{seed}.parquet"
    have = pq.read_table(cache) if cache.exists() else None
    done = set(have.column("object_id").to_pylist()) if have is not None else set()
    todo = [oid for oid in ids.values() if oid not in done]
    if todo:
        layout = Layout.at(str(ROOT))
        config = SynthesisConfig.preset("fast").replace(per_object=per_object)
        t0 = time.perf_counter()
        run_synthesis(layout, todo, config, seed=seed, workers=workers)
        from dga_engine.dataset.store import Dataset

        cand = Dataset(layout).candidates("synthesis")
        cand = cand.filter(pa.compute.is_in(cand.column("object_id"), pa.array(todo)))
        filtered = filter_table(layout, cand, workers=workers)
        accepted = filtered.filter(pa.compute.is_null(filtered.column("reason")))
        from dga_engine.dataset.schema import GRASP_SCHEMA

        accepted = accepted.select(GRASP_SCHEMA.names)
        print(f"validated grasps: {accepted.num_rows}/{filtered.num_rows} accepted in {time.perf_counter() - t0:.0f} s",
              file=sys.stderr)
        have = accepted if have is None else pa.concat_tables([have, accepted.cast(have.schema)])
        OUT.mkdir(parents=True, exist_ok=True)
        pq.write_table(have, cache)
    return have.filter(pa.compute.is_in(have.column("object_id"), pa.array(list(ids.values()))))


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    ids = object_ids()
    for row in describe(ids):
        print(*row, sep="\t")
    print(validated_grasps(ids).num_rows, "validated grasps")
