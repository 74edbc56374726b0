"""Benchmark seed synthesis: accepted grasps per CPU-minute, and how cost scales with the batch size.

    .venv/bin/python benchmarks/bench_synthesize.py                      # primitives, fast preset
    .venv/bin/python benchmarks/bench_synthesize.py --builtin can,mug --batch-sizes 16,32,64 --json

Two parts, each in one process with one torch thread (the pipeline's default):

1. step cost: milliseconds per annealing step (energy + gradient of a batch) for each batch size, on
   the first object: the optimiser's inner loop, independent of the filter;
2. end to end: for each batch size, ``synthesize_object`` on every object (``per_object`` = the batch
   size, one batch) and the physics filter (``filter_table``, one worker, default protocol) on the
   result: candidates/s, accepted grasps, accepted per CPU-minute (synthesis + filter CPU time of this
   process), Suc.6 over simulated grasps.

Numbers depend on the machine and on what else runs on it: say which when quoting them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import torch


def _objects(layout, names: list[str], builtin: bool) -> list[str]:
    import trimesh

    from dga_engine.objects.store import ObjectStore, write_simple_object

    if builtin:
        from dga_engine.objects.ingest import ingest_builtin

        ingest_builtin(layout, names)  # already-ingested shapes are skipped
        store = ObjectStore(layout)
        by_name = {store.meta(i).source_id: i for i in store.ids() if store.meta(i).source == "builtin"}
        return [by_name[n] for n in names]
    shapes = {
        "box": lambda: trimesh.creation.box(extents=[0.05, 0.05, 0.10]),
        "cylinder": lambda: trimesh.creation.cylinder(radius=0.03, height=0.08, sections=48),
        "sphere": lambda: trimesh.creation.icosphere(subdivisions=3, radius=0.035),
        "flat_box": lambda: trimesh.creation.box(extents=[0.08, 0.10, 0.03]),
    }
    store = ObjectStore(layout)
    return [write_simple_object(store, shapes[n](), n).object_id for n in names]


def step_cost(layout, object_id: str, batch_sizes: list[int], config, repeats: int) -> dict[int, float]:
    from dga_engine.hand import default_hand
    from dga_engine.objects.store import ObjectStore
    from dga_engine.physics.fields import GridField
    from dga_engine.synthesize.energy import GraspEnergy
    from dga_engine.synthesize.hand_sdf import default_hand_spheres
    from dga_engine.synthesize.initialize import initial_poses
    from dga_engine.synthesize.optimize import _evaluate

    asset = ObjectStore(layout).load(object_id)
    mesh = asset.mesh
    hand = default_hand()
    field = GridField.from_asset(asset, resolution=config.field_resolution)
    energy = GraspEnergy(
        hand, default_hand_spheres(), field, torch.as_tensor(mesh.bounds.mean(0), dtype=torch.float32), config
    )
    out = {}
    for b in batch_sizes:
        pose = initial_poses(hand, mesh, b, config, np.random.default_rng(0))
        idx = energy.draw_contacts(b, torch.Generator().manual_seed(0))
        x = pose.flat()
        _evaluate(energy, x, idx)
        t0 = time.perf_counter()
        for _ in range(repeats):
            _evaluate(energy, x, idx)
        out[b] = (time.perf_counter() - t0) / repeats * 1000
    return out


def end_to_end(layout, object_ids: list[str], batch_sizes: list[int], config) -> list[dict]:
    from dga_engine.simulate import filter_table
    from dga_engine.simulate.metrics import summarise
    from dga_engine.synthesize import synthesize_object

    rows = []
    for b in batch_sizes:
        cfg = config.replace(per_object=b, batch_size=b)
        cand = acc = 0
        syn_wall = syn_cpu = filt_cpu = 0.0
        suc6 = []
        for oid in object_ids:
            w0, c0 = time.perf_counter(), time.process_time()
            table = synthesize_object(layout, oid, cfg, seed=0)
            syn_wall += time.perf_counter() - w0
            syn_cpu += time.process_time() - c0
            c1 = time.process_time()
            out = filter_table(layout, table, workers=1)
            filt_cpu += time.process_time() - c1
            cand += table.num_rows
            acc += out.column("reason").null_count
            s = summarise(out)["suc6"]
            if s is not None:
                suc6.append(s)
        cpu_min = (syn_cpu + filt_cpu) / 60
        rows.append({
            "batch_size": b, "objects": len(object_ids), "candidates": cand, "accepted": acc,
            "acceptance": acc / cand if cand else None, "suc6_simulated": float(np.mean(suc6)) if suc6 else None,
            "synthesis_wall_s": syn_wall, "synthesis_cpu_s": syn_cpu, "filter_cpu_s": filt_cpu,
            "candidates_per_s": cand / syn_wall if syn_wall else None,
            "seconds_per_object": syn_wall / len(object_ids),
            "accepted_per_cpu_minute": acc / cpu_min if cpu_min else None,
        })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--objects", default="box,cylinder,sphere,flat_box", help="primitive names (box, cylinder, sphere, flat_box)"
    )
    ap.add_argument("--builtin", default=None, help="comma-separated builtin shape names instead of primitives")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--iterations", type=int, default=None, help="annealing steps (default: the preset's)")
    ap.add_argument("--batch-sizes", default="8,16,32,64")
    ap.add_argument("--step-repeats", type=int, default=10)
    ap.add_argument("--skip-end-to-end", action="store_true")
    ap.add_argument("--root", default=None, help="storage root to use (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the pipeline's default is 1)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from dga_engine.layout import Layout
    from dga_engine.synthesize import SynthesisConfig

    torch.set_num_threads(args.threads)
    config = SynthesisConfig.preset(args.preset).replace(threads=args.threads)
    if args.iterations is not None:
        config = config.replace(n_iter=args.iterations)
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")]
    layout = Layout.at(args.root or tempfile.mkdtemp(prefix="bench-synth-"))
    names = (args.builtin or args.objects).split(",")
    ids = _objects(layout, names, builtin=args.builtin is not None)
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "load_average": os.getloadavg()},
        "preset": args.preset, "n_iter": config.n_iter, "objects": names, "threads": args.threads,
        "step_ms": step_cost(layout, ids[0], batch_sizes, config, args.step_repeats),
    }  # fmt: skip
    if not args.skip_end_to_end:
        result["end_to_end"] = end_to_end(layout, ids, batch_sizes, config)
    result["machine"]["load_average_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}")
    print(f"preset {args.preset}, {config.n_iter} annealing steps, objects {names}")
    print("batch  ms/step  ms/step/grasp")
    for b, ms in result["step_ms"].items():
        print(f"{b:5d}  {ms:7.1f}  {ms / b:8.2f}")
    for r in result.get("end_to_end", []):
        print(f"batch {r['batch_size']:3d}: {r['candidates']} candidates, {r['accepted']} accepted "
              f"({100 * r['acceptance']:.0f}%), Suc.6 of simulated {r['suc6_simulated']}, "
              f"{r['seconds_per_object']:.1f} s/object, {r['candidates_per_s']:.2f} candidates/s, "
              f"{r['accepted_per_cpu_minute']:.1f} accepted per CPU-minute")


if __name__ == "__main__":
    main()
