"""Does the model in the loop pay for itself? Accepted grasps per CPU-second on objects the generator never saw.

    .venv/bin/python benchmarks/bench_loop.py [--seed-objects 12] [--per-object 32] [--unseen duck,bunny_hires,...]
                                              [--steps 20] [--variant preset|no-ema|...] [--arms abcde] [--polish 'anneal_steps=60;batch_size=256']
                                              [--json out.json]

One process, one run, every arm on the same unseen objects (real-ish meshes, ``benchmarks/realish.py``):

1. seed data (cached in ``benchmarks/out/loop``): seed synthesis on ``--seed-objects`` built-in shapes, repaired
   and filtered; the tiny generator trained on the accepted grasps (the demo build's preset);
2. arms, ``--per-object`` candidates on each unseen object, each arm in its own dataset:
   (a) seed synthesis + repair + filter (no generator at all);
   (b) the generator, unguided, + filter;
   (c) the generator, physics-guided, + filter;
   (d) guided + polish + filter (what the build does);
   (e) random initial poses (seed synthesis's initialisation) + the same polish + filter: what the polish
       alone makes of poses that carry no knowledge, so (d) - (e) is the generator's own contribution;
3. per arm: accepted share, Suc.1/Suc.6/Pen/Div, and accepted grasps per CPU-second of making the
   candidates + refining + filtering (CPU seconds of this process: everything runs in it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import realish  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "loop"
UNSEEN = ("duck", "bunny_hires", "mug_hires", "teddy", "lego")


def seed_root(n_seed: int, per_object: int, workers: int = 2):
    """The cached root: built-ins ingested and seeded (round 0), the real-ish objects linked, a round-1 generator."""
    from dga_engine.layout import Layout
    from dga_engine.objects.builtin import demo_subset
    from dga_engine.objects.ingest import ingest_builtin
    from dga_engine.refine import RefineConfig, run_refine
    from dga_engine.simulate import run_filter
    from dga_engine.synthesize import SynthesisConfig, run_synthesis

    root = OUT / f"root-{n_seed}x{per_object}"
    layout = Layout.at(str(root))
    ids = realish.object_ids()
    (root / "objects").mkdir(parents=True, exist_ok=True)
    for oid in ids.values():
        link = root / "objects" / oid
        if not link.exists():
            link.symlink_to(realish.ROOT / "objects" / oid)
    seed_ids = ingest_builtin(layout, names=demo_subset(n_seed), processes=workers).object_ids
    t0 = time.perf_counter()
    config = SynthesisConfig.preset("fast").replace(per_object=per_object)
    run_synthesis(layout, seed_ids, config, seed=0, workers=workers)
    run_refine(layout, "synthesis", RefineConfig.preset("repair"), workers=workers)
    run_filter(layout, "synthesis", workers=workers, refined=True)
    print(f"seed round ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return layout, seed_ids, ids


# Training variants (``--variant``): the tiny preset with one of its generalisation aids taken out, or all of them
# (``reference``: the reference code's recipe at the tiny preset's size). Each trains in its own root.
VARIANTS = {
    "preset": {},
    "epochs-150": {"epochs": 150},  # the tiny preset before 2026-12-02
    "no-ema": {"ema_decay": 0.0},
    "no-point-variants": {"point_variants": 0, "point_jitter": 0.0},
    "no-early-stop": {"val_fraction": 0.0, "patience": 0},
    "reference": {"ema_decay": 0.0, "point_variants": 0, "point_jitter": 0.0, "val_fraction": 0.0, "patience": 0,
                  "lr_schedule": "constant"},
}


def variant_root(seed_layout, name: str):
    """The seed root itself for the preset; else a root sharing its objects and datasets with its own models."""
    from dga_engine.layout import Layout

    if name == "preset":
        return seed_layout
    root = OUT / f"variant-{name}-{Path(seed_layout.root).name}"
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("objects", "datasets"):
        if not (root / sub).exists():
            (root / sub).symlink_to(Path(seed_layout.root) / sub)
    return Layout.at(str(root))


def train(layout, epochs: int | None, variant: str = "preset"):
    import dataclasses

    from dga_engine.generate import tiny_config
    from dga_engine.generate.train import train as run

    config = tiny_config()
    config.train = dataclasses.replace(config.train, **VARIANTS[variant])
    if epochs:
        config.train.epochs = epochs
    t0 = time.process_time()
    res = run(layout, 1, config)
    return {"epochs": res.epoch, "best_epoch": res.best_epoch, "stopped_early": res.stopped_early, "grasps": res.n_grasps,
            "split": res.split, "cpu_seconds_this_run": round(time.process_time() - t0, 1)}


def outcome(layout, dataset: str, source: str) -> dict:
    from dga_engine.dataset.store import Dataset
    from dga_engine.simulate.metrics import summarise

    verdicts = Dataset(layout, dataset).verdicts(sources=[source])
    acc, rej, both = verdicts.accepted, verdicts.rejected, verdicts.judged
    m = summarise(both) if both.num_rows else {}
    kept = summarise(acc) if acc.num_rows else {}
    reasons: dict[str, int] = {}
    for r in (rej.column("reason").to_pylist() if rej.num_rows else []):
        reasons[r] = reasons.get(r, 0) + 1
    return {"candidates": both.num_rows, "accepted": acc.num_rows, "share": acc.num_rows / max(1, both.num_rows),
            "suc1": m.get("suc1"), "suc6": m.get("suc6"), "pen_mm": m.get("pen_mm"), "div": m.get("div"),
            # the filter's own depths, mean over the accepted grasps
            "accepted_object_hand_mm": kept.get("pen_object_hand_mm"), "accepted_hand_object_mm": kept.get("pen_hand_object_mm"),
            "reasons": reasons}


def arm_root(seed_layout, name: str):
    """A fresh root for one arm: the seed root's objects and generator linked in, nothing else (so no
    completion record of another arm or run makes a stage skip its work)."""
    import tempfile

    from dga_engine.layout import Layout

    root = Path(tempfile.mkdtemp(prefix=f"loop-{name}-"))
    for sub in ("objects", "models"):
        (root / sub).symlink_to(Path(seed_layout.root) / sub)
    return Layout.at(str(root))


def arm(seed_layout, name: str, make, refine_preset: str | None, source: str, refine_fields: dict | None = None) -> dict:
    """Make the arm's candidates (``make(layout)``), refine them (or not) and filter, timing the CPU of each step."""
    from dga_engine.refine import RefineConfig, run_refine
    from dga_engine.simulate import run_filter

    layout = arm_root(seed_layout, name)
    dataset = "dga"
    cpu = {}
    c0 = time.process_time()
    make(layout)
    cpu["make"] = time.process_time() - c0
    if refine_preset:
        c0 = time.process_time()
        run_refine(layout, source, RefineConfig.preset(refine_preset).replace(**(refine_fields or {})), dataset=dataset)
        cpu["refine"] = time.process_time() - c0
    c0 = time.process_time()
    run_filter(layout, source, dataset=dataset, refined=refine_preset is not None)
    cpu["filter"] = time.process_time() - c0
    out = outcome(layout, dataset, source)
    total = sum(cpu.values())
    out.update(cpu_seconds={k: round(v, 1) for k, v in cpu.items()}, cpu_ms_per_candidate=1000 * total / max(1, out["candidates"]),
               accepted_per_cpu_second=out["accepted"] / total if total else None)
    print(name, json.dumps(out), file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed-objects", type=int, default=12)
    ap.add_argument("--seed-per-object", type=int, default=48)
    ap.add_argument("--per-object", type=int, default=32)
    ap.add_argument("--unseen", default=",".join(UNSEEN))
    ap.add_argument("--epochs", type=int, default=None, help="training epochs (default: the tiny preset's)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps (default: the tiny preset's)")
    ap.add_argument("--arms", default="abcde")
    ap.add_argument("--variant", default="preset", choices=sorted(VARIANTS),
                    help="train the generator with one of the tiny preset's generalisation aids taken out")
    ap.add_argument("--polish", default="",
                    help="polish variants, ';' between variants, ',' between a variant's RefineConfig fields "
                         "(anneal_steps=60;batch_size=256,anneal_steps=90): arm d again with each, against the preset's")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    import torch

    from dga_engine.dataset.schema import pose_table
    from dga_engine.dataset.store import Dataset
    from dga_engine.generate import SampleConfig
    from dga_engine.generate.stage import generate
    from dga_engine.hand import default_hand
    from dga_engine.hand.rotations import matrix_to_quat
    from dga_engine.objects.store import ObjectStore
    from dga_engine.synthesize import SynthesisConfig, run_synthesis
    from dga_engine.synthesize.initialize import initial_poses

    torch.set_num_threads(1)
    seed_layout, seed_ids, realish_ids = seed_root(args.seed_objects, args.seed_per_object)
    layout = variant_root(seed_layout, args.variant)
    report: dict = {"machine": os.uname().nodename, "date": time.strftime("%Y-%m-%d"), "load": os.getloadavg(),
                    "seed_objects": len(seed_ids), "variant": args.variant,
                    "training": train(layout, args.epochs, args.variant)}
    unseen = [realish_ids[n] for n in args.unseen.split(",")]
    n = args.per_object
    sample = SampleConfig.preset("tiny")
    if args.steps is not None:
        sample.steps = args.steps
    report["sample"] = {"steps": sample.steps, "weights": vars(sample.weights)}

    def synthesis(at):
        run_synthesis(at, unseen, SynthesisConfig.preset("fast").replace(per_object=n), seed=1, workers=1)

    def generated(guided):
        def make(at):
            cfg = SampleConfig(**{**vars(sample), "guidance": guided})
            generate(at, 1, n, unseen, sample=cfg)
        return make

    def random_poses(at):
        hand, store = default_hand(), ObjectStore(at)
        cfg = SynthesisConfig.preset("fast")
        for k, oid in enumerate(unseen):
            pose = initial_poses(hand, store.load(oid, with_parts=False).mesh, n, cfg, np.random.default_rng(k))
            with torch.no_grad():
                quat = matrix_to_quat(pose.matrix().double()).numpy()
            table = pose_table(oid, pose.t.numpy(), quat, hand.clamp_joints(pose.q).numpy(), source="random",
                               source_record_id=[f"{k}:{i}" for i in range(n)])
            Dataset(at).write_candidates(table, "random", oid)

    arms = {
        "a": lambda: arm(layout, "a-synthesis", synthesis, "repair", "synthesis"),
        "b": lambda: arm(layout, "b-unguided", generated(False), None, "generator"),
        "c": lambda: arm(layout, "c-guided", generated(True), None, "generator"),
        "d": lambda: arm(layout, "d-guided-polish", generated(True), "polish", "generator"),
        "e": lambda: arm(layout, "e-random-polish", random_poses, "polish", "random"),
    }
    for variant in filter(None, args.polish.split(";")):
        fields = {k.strip(): json.loads(v) for k, v in (item.split("=") for item in variant.split(","))}
        label = "-".join(f"{k}-{v}" for k, v in fields.items())
        arms[f"d@{label}"] = lambda fields=fields, label=label: arm(layout, f"d-polish-{label}", generated(True),
                                                                  "polish", "generator", fields)
    report["arms"] = {k: arms[k]() for k in [*args.arms, *(k for k in arms if k.startswith("d@"))]}
    a = report["arms"].get("a", {}).get("accepted_per_cpu_second")
    for k, v in report["arms"].items():
        v["vs_synthesis"] = (v["accepted_per_cpu_second"] / a) if a and v.get("accepted_per_cpu_second") else None
    print(json.dumps(report, indent=1, default=float))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
