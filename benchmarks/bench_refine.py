"""Refine before the filter: how many near misses come back, at what cost, and nothing moved past its bounds.

    .venv/bin/python benchmarks/bench_refine.py [--per-object 32] [--objects N] [--json out.json]

Everything runs in one process (CPU seconds are the figures to compare; wall time depends on the load).

On the real-ish objects (``benchmarks/realish.py``: ten meshes of 500-20,000 faces, up to 16 convex parts):

1. validated grasps: seed-synthesis grasps the filter accepted (cached), the stand-in for grasps a source's
   own validator passed;
2. candidates built from them like the failures seen on real DexGraspNet / UniDexGrasp releases
   (``tests/refine/nearmiss.py``): 45% pressed 1.1-4 mm into the hand (root along the palm normal or the
   fingers' flexion), 20% with a joint 0.05-0.3 rad past its limit, 5% far misses (the palm 3 cm into the
   object: must not be "repaired"), the rest untouched;
3. in one run: the filter alone (the baseline, ``--no-refine``), then repair + filter on the same
   candidates; recovered share of the near misses, Suc.6 of the simulated near misses, penetration of
   every accepted grasp against both limits, the largest moves against the preset's bounds, far misses
   accepted (target 0), untouched grasps still accepted, and CPU per grasp of refine vs the filter;
4. polish vs seed synthesis: CPU per grasp of the polish preset on the near misses against one seed
   synthesis batch of the same size on the same object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realish  # noqa: E402

from dga_engine.dataset.schema import pose_arrays, pose_table  # noqa: E402
from dga_engine.layout import Layout  # noqa: E402


def build_candidates(layout: Layout, validated: pa.Table, seed: int = 0) -> tuple[pa.Table, np.ndarray]:
    """Near-miss candidates from validated grasps; returns (GRASP_SCHEMA table, kind per row)."""
    from dga_engine.objects.store import ObjectStore
    from dga_engine.physics.penetration import ObjectCloud
    from tests.refine import nearmiss

    rng = np.random.default_rng(seed)
    store = ObjectStore(layout)
    parts = []
    kinds_all = []
    for oid in sorted(set(validated.column("object_id").to_pylist())):
        rows = validated.filter(pc.equal(validated.column("object_id"), oid))
        a = pose_arrays(rows)
        n = rows.num_rows
        t, quat, q, scale = a["translation"].astype(np.float64), a["rotation"], a["joints"].astype(np.float64), a["object_scale"]
        kind = rng.choice(["press", "limits", "far", "untouched"], size=n, p=[0.45, 0.20, 0.05, 0.30])
        cloud = ObjectCloud.from_asset(store.load(oid), float(scale[0]))
        press = np.flatnonzero(kind == "press")
        if len(press):
            mode = rng.choice(["palm", "fingers"], size=len(press))
            depth = rng.uniform(1.1, 4.0, size=len(press))
            t[press], q[press], _ = nearmiss.press(cloud, t[press], quat[press], q[press], depth, mode)
        lim = np.flatnonzero(kind == "limits")
        if len(lim):
            q[lim], moved = nearmiss.past_limits(q[lim], rng.uniform(0.05, 0.3, size=len(lim)), rng)
            kind[lim[[m is None for m in moved]]] = "untouched"  # no joint at a limit: left as it was
        far = np.flatnonzero(kind == "far")
        if len(far):
            normal = nearmiss.palm_normals(t[far], nearmiss.matrices(quat[far]), q[far])
            t[far] += 0.03 * normal
        recs = [f"{r}:{k}" for r, k in zip(rows.column("source_record_id").to_pylist(), kind)]
        parts.append(pose_table(oid, t, quat, q, source="nearmiss", source_record_id=recs, round_=0,
                                generator="bench_refine", object_scale=scale))
        kinds_all.append(kind)
    return pa.concat_tables(parts), np.concatenate(kinds_all)


def outcome(table: pa.Table, kinds: np.ndarray, ids_in: list[str]) -> dict:
    """Verdicts per kind, matching refined rows back to their candidates through refined_from."""
    ids = table.column("grasp_id").to_pylist()
    origin = [r or g for r, g in zip(table.column("refined_from").to_pylist(), ids)]
    pos = {g: i for i, g in enumerate(ids_in)}
    reason = table.column("reason").to_pylist()
    suc6 = table.column("suc6").to_pylist()
    oh = table.column("pen_object_hand_mm").to_numpy(zero_copy_only=False)
    ho = table.column("pen_hand_object_mm").to_numpy(zero_copy_only=False)
    row_kind = np.array([kinds[pos[o]] for o in origin])
    acc = np.array([r is None for r in reason])
    near = np.isin(row_kind, ["press", "limits"])
    simulated_near = near & np.array([s is not None for s in suc6])
    out = {"accepted": int(acc.sum()), "grasps": len(ids)}
    for k in ("press", "limits", "far", "untouched"):
        m = row_kind == k
        out[f"{k}_accepted"] = f"{int((acc & m).sum())}/{int(m.sum())}"
    out["near_miss_recovered"] = float(acc[near].mean()) if near.any() else None
    out["near_miss_suc6_of_simulated"] = (float(np.mean([bool(s) for s in np.array(suc6, dtype=object)[simulated_near]]))
                                          if simulated_near.any() else None)
    out["accepted_max_pen_object_hand_mm"] = float(np.nanmax(oh[acc])) if acc.any() else None
    out["accepted_max_pen_hand_object_mm"] = float(np.nanmax(ho[acc])) if acc.any() else None
    reasons: dict[str, int] = {}
    for r in reason:
        if r:
            reasons[r] = reasons.get(r, 0) + 1
    out["reasons"] = reasons
    return out


def filtered_rows(layout: Layout, source: str, ids: list[str]) -> pa.Table:
    """Accepted and rejected rows of ``source`` (reason null = accepted)."""
    from dga_engine.dataset.store import Dataset

    verdicts = Dataset(layout).verdicts(sources=[source])
    acc = verdicts.accepted.append_column("reason", pa.nulls(verdicts.accepted.num_rows, pa.string()))
    rej = verdicts.rejected.select(acc.column_names)
    return pa.concat_tables([acc, rej.cast(acc.schema)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-object", type=int, default=32)
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--skip-polish", action="store_true", help="leave out the polish vs synthesis comparison")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--refine-config", type=str, default="{}", help="JSON of RefineConfig fields over the repair preset")
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from dga_engine.dataset.store import Dataset
    from dga_engine.refine import RefineConfig, run_refine
    from dga_engine.simulate import run_filter

    names = list(realish.MESHES)[: args.objects]
    ids = realish.object_ids(names)
    validated = realish.validated_grasps(ids, per_object=args.per_object)
    tmp = tempfile.mkdtemp(prefix="bench-refine-")
    # a fresh dataset over the cached objects: link the object store, nothing else
    os.makedirs(f"{tmp}/root", exist_ok=True)
    os.symlink(realish.ROOT / "objects", f"{tmp}/root/objects")
    layout = Layout.at(f"{tmp}/root")
    cand, kinds = build_candidates(layout, validated)
    ds = Dataset(layout)
    ds.write_candidates(cand, "nearmiss", "all")
    ids_in = cand.column("grasp_id").to_pylist()
    report: dict = {"machine": os.uname().nodename, "load": os.getloadavg(), "date": time.strftime("%Y-%m-%d"),
                    "objects": len(ids), "validated": validated.num_rows, "candidates": cand.num_rows,
                    "kinds": {k: int((kinds == k).sum()) for k in ("press", "limits", "far", "untouched")}}

    # baseline: the filter alone (a dataset of its own)
    base = Layout.at(f"{tmp}/base")
    os.makedirs(base.root, exist_ok=True)
    os.symlink(realish.ROOT / "objects", f"{base.root}/objects")
    Dataset(base).write_candidates(cand, "nearmiss", "all")
    c0 = time.process_time()
    run_filter(base, "nearmiss")  # one process: its CPU time is the filter's cost
    filter_cpu = time.process_time() - c0
    report["baseline"] = outcome(filtered_rows(base, "nearmiss", ids_in), kinds, ids_in)
    report["filter_cpu_ms_per_grasp"] = 1000 * filter_cpu / cand.num_rows

    # repair + filter
    config = RefineConfig.preset("repair").replace(**json.loads(args.refine_config))
    r = run_refine(layout, "nearmiss", config)
    report["refine"] = {"statuses": r.statuses, "cpu_ms_per_grasp": 1000 * r.cpu_seconds / max(1, r.total),
                        "max_joint_change": r.max_joint_change, "max_translation_change_mm": 1000 * r.max_translation_change,
                        "max_rotation_change": r.max_rotation_change,
                        "bounds": {"joint": config.max_joint_change, "translation_mm": 1000 * config.max_translation_change,
                                   "rotation": config.max_rotation_change}}
    run_filter(layout, "nearmiss", refined=True)
    report["repair"] = outcome(filtered_rows(layout, "nearmiss", ids_in), kinds, ids_in)
    acc = ds.read(sources=["nearmiss"])
    moved = {c: float(np.nanmax(acc.column(c).to_numpy(zero_copy_only=False))) if acc.num_rows else 0.0
             for c in ("refine_joint_change", "refine_translation_change", "refine_rotation_change")}
    report["accepted_largest_moves"] = moved
    report["accepted_within_bounds"] = (moved["refine_joint_change"] <= config.max_joint_change + 1e-5
                                        and moved["refine_translation_change"] <= config.max_translation_change + 1e-5
                                        and moved["refine_rotation_change"] <= config.max_rotation_change + 1e-5)

    # polish vs one seed-synthesis batch of the same size, on one object
    if not args.skip_polish:
        report["polish_vs_synthesis"] = polish_vs_synthesis(layout, cand)
    print(json.dumps(report, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


def polish_vs_synthesis(layout: Layout, cand: pa.Table, n: int = 64) -> dict:
    """CPU ms per grasp: the polish preset on n candidates of one object vs one seed-synthesis batch of n."""
    from dga_engine.objects.store import ObjectStore
    from dga_engine.refine import ObjectRefiner, RefineConfig
    from dga_engine.synthesize import SynthesisConfig, synthesize_object

    oid = cand.column("object_id")[0].as_py()
    rows = cand.filter(pc.equal(cand.column("object_id"), oid)).slice(0, n)
    a = pose_arrays(rows)
    refiner = ObjectRefiner(ObjectStore(layout).load(oid), float(a["object_scale"][0]), RefineConfig.preset("polish"))
    c0 = time.process_time()  # the SDF grid is built inside, as synthesis builds its own
    refiner.refine(a["translation"], a["rotation"], a["joints"])
    polish = (time.process_time() - c0) / rows.num_rows
    config = SynthesisConfig.preset("fast").replace(per_object=rows.num_rows, batch_size=rows.num_rows)
    c0 = time.process_time()
    synthesize_object(layout, oid, config, seed=0)
    synth = (time.process_time() - c0) / rows.num_rows
    return {"grasps": rows.num_rows, "polish_cpu_ms_per_grasp": 1000 * polish, "synthesis_cpu_ms_per_grasp": 1000 * synth,
            "ratio": synth / polish}


if __name__ == "__main__":
    main()
