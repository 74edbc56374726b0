"""Benchmarks of the diffusion generator.

    python benchmarks/bench_generate.py speed    [--threads 1,2] [--device cpu|cuda] [--batch 256] [--steps 100]
    python benchmarks/bench_generate.py ablation [--root DIR] [--objects 8] [--held-out 3] [--epochs 150] ...

**speed**: grasps per second of the sampler at batch 256 and T=100 with the tiny preset on one built-in
object (weights random: the cost does not depend on them), unguided and physics-guided, with bf16
autocast on the network and fp32 physics. A machine baseline (a fixed fp32 matmul, GFLOP/s) is measured
before and after in the same run, because the benchmark machine may be shared: compare figures only
within one run.

**ablation**: the paper's Table 3 in small. Seed synthesis on the training objects (round 0), the
physics filter, then two generators trained on the accepted seeds (plain DDPM loss / physics-aware
loss), each sampled on held-out built-in objects (and, for reference, as many seen training objects)
with and without the physics-guided sampler; every sample set goes through the same filter. Reports
Suc.1 and Suc.6 over all generated grasps (penetration rejects count as failures), the filter's
acceptance, penetration (mm, hand into object) and diversity (rad, over Suc.6 grasps).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

# Idle OpenMP threads sleep instead of spinning (set before torch loads): on a shared machine spinning
# threads make 2-thread figures collapse; this changes nothing on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _baseline_gflops(seconds: float = 1.0) -> float:
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * 512**3 * n / (time.perf_counter() - t0) / 1e9


def _speed_sampler(device: str, layout):
    """A tiny-preset sampler with random weights and a plausible normaliser, on one built-in object."""
    import numpy as np

    from dga_engine.generate.checkpoint import Checkpoint
    from dga_engine.generate.config import tiny_config
    from dga_engine.generate.model import GraspDiffusionNet
    from dga_engine.generate.normalise import PoseNormaliser
    from dga_engine.generate.sample import GraspSampler
    from dga_engine.hand import default_hand

    cfg = tiny_config()
    hand = default_hand()
    lo = np.concatenate([[-0.10, -0.05, -0.40], hand.lower.numpy()])
    hi = np.concatenate([[0.10, 0.15, -0.20], hand.upper.numpy()])
    ck = Checkpoint(config=cfg, normaliser=PoseNormaliser(lo, hi), model=GraspDiffusionNet(cfg.model).eval(), meta={})
    return GraspSampler(ck, cfg.sample, device=device)


def _one_object(layout) -> str:
    """A built-in object when the ingest stage is available, else a 6 cm box (same cost per grasp)."""
    try:
        from dga_engine.objects.ingest import ingest_builtin

        report = ingest_builtin(layout, names=["mug"])
        ids = getattr(report, "object_ids", None) or (report.ingested + report.skipped)
        if ids:
            return sorted(ids)[0]
    except Exception as exc:  # noqa: BLE001 - fall back to a primitive
        print(f"(built-in objects unavailable: {exc}; using a box)", file=sys.stderr)
    import trimesh

    from dga_engine.objects.store import ObjectStore, write_simple_object

    return write_simple_object(ObjectStore(layout), trimesh.creation.box(extents=[0.06, 0.06, 0.10]), "box").object_id


def speed(args) -> dict:
    import torch

    from dga_engine.layout import Layout

    layout = Layout.at(args.root or tempfile.mkdtemp(prefix="bench-gen-"))
    object_id = _one_object(layout)
    results = {"device": args.device, "batch": args.batch, "steps": args.steps, "object": object_id, "runs": []}
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(0)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        sampler = _speed_sampler(args.device, layout)
        sampler.config.batch_size = args.batch
        sampler.diffusion = type(sampler.diffusion)(
            type(sampler.checkpoint.config.diffusion)(steps=args.steps), sampler.device
        )
        bank = sampler.bank(layout, [object_id])
        base_before = _baseline_gflops()
        row = {"threads": threads, "baseline_gflops_before": round(base_before, 1)}
        for name, guidance, autocast, through in (
            ("unguided_bf16", False, "bf16", True),
            ("guided_bf16", True, "bf16", True),
            ("guided_bf16_eps_fixed", True, "bf16", False),
            ("guided_fp32", True, "fp32", True),
        ):
            if args.quick and name == "guided_fp32":
                continue
            sampler.config.autocast = autocast
            sampler.config.grad_through_model = through
            sampler.sample(bank, [min(args.batch, 16)], [1], guidance=guidance)  # warm-up
            best = 0.0
            for r in range(args.repeats):
                out = sampler.sample(bank, [args.batch], [r], guidance=guidance)
                best = max(best, args.batch / out.seconds)
            row[name] = round(best, 2)
            print(f"threads={threads} {name}: {best:.2f} grasps/s", file=sys.stderr, flush=True)
        row["baseline_gflops_after"] = round(_baseline_gflops(), 1)
        results["runs"].append(row)
    return results


# ---- ablation --------------------------------------------------------------------------------------


def _rates(filtered) -> dict:
    """Suc.1 / Suc.6 over *all* generated grasps (a grasp rejected for penetration before the push test
    counts as a failure, as in an evaluation that simulates every grasp), and the filter's acceptance."""
    import numpy as np

    n = filtered.num_rows
    s1 = np.asarray([bool(v) for v in filtered.column("suc1").to_pylist()])
    s6 = np.asarray([bool(v) for v in filtered.column("suc6").to_pylist()])
    accepted = sum(r is None for r in filtered.column("reason").to_pylist())
    reasons: dict = {}
    for r in filtered.column("reason").to_pylist():
        if r is not None:
            reasons[r] = reasons.get(r, 0) + 1
    return {"suc1": round(float(s1.mean()), 3) if n else None, "suc6": round(float(s6.mean()), 3) if n else None,
            "accepted": round(accepted / n, 3) if n else None, "reasons": reasons}


def _evaluate(layout, checkpoint, sample_cfg, objects, group, label, suffix, guidance, filter_cfg, args) -> dict:
    """Sample ``per_object`` grasps per object with one setting and run them through the filter."""
    from dga_engine.dataset.schema import pose_table
    from dga_engine.generate.sample import GraspSampler, object_seed
    from dga_engine.generate.stage import SOURCE
    from dga_engine.simulate import filter_table
    from dga_engine.simulate.metrics import summarise

    sampler = GraspSampler(checkpoint, sample_cfg, device="cpu")
    bank = sampler.bank(layout, objects)
    out = sampler.sample(
        bank, [args.per_object] * len(objects), [object_seed(0, 99, o) for o in objects], guidance=guidance
    )
    ids = [objects[i] for i in out.obj]
    table = pose_table(ids, out.translation, out.rotation, out.joints, source=SOURCE,
                       source_record_id=[f"bench:{label}:{guidance}:{i}" for i in range(len(ids))], round_=99)
    t0 = time.perf_counter()
    filtered = filter_table(layout, table, filter_cfg, args.workers)
    m = summarise(filtered)
    trained = "physics-aware training" if label == "physics" else "plain DDPM"
    name = f"{trained}{' + guided sampling' + suffix if guidance else ''}"
    row = {
        "objects": group,
        "setting": name,
        "grasps": table.num_rows,
        "sampling_grasps_per_s": round(table.num_rows / out.seconds, 2),
        "filter_s": round(time.perf_counter() - t0, 1),
        **_rates(filtered),
        "pen_mm": round(m["pen_mm"], 2) if m.get("pen_mm") is not None else None,
        "pen_object_hand_mm": round(m["pen_object_hand_mm"], 2) if m.get("pen_object_hand_mm") is not None else None,
        "div": round(m["div"], 3) if m.get("div") is not None else None,
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def ablation(args) -> dict:
    import torch

    from dga_engine.dataset.store import Dataset
    from dga_engine.generate import checkpoint as ckpt
    from dga_engine.generate.config import PhysicsWeights, tiny_config
    from dga_engine.generate.train import TrainingDataChanged, train
    from dga_engine.layout import Layout
    from dga_engine.objects.builtin import demo_subset
    from dga_engine.objects.ingest import ingest_builtin
    from dga_engine.simulate import FilterConfig, run_filter
    from dga_engine.synthesize import SOURCE as SYNTHESIS
    from dga_engine.synthesize import SynthesisConfig, run_synthesis

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    layout = Layout.at(args.root or tempfile.mkdtemp(prefix="bench-gen-ablation-"))
    names = demo_subset(args.objects)  # varied shapes; the last ``held_out`` of them are never trained on
    ids = []
    for name in names:  # one at a time, so the id of each name is known
        r = ingest_builtin(layout, names=[name], processes=1)
        ids.append((r.ingested + r.skipped)[0])
    held_out = ids[-args.held_out:]
    train_ids = ids[: -args.held_out]
    timings = {}

    # round 0: seed synthesis on the training objects, filtered into shards
    t0 = time.perf_counter()
    ds = Dataset(layout)
    if not ds.read(rounds=[0]).num_rows:
        syn = SynthesisConfig.preset(args.synthesis_preset).replace(per_object=args.seed_per_object)
        if run_synthesis(layout, train_ids, syn, seed=0).candidates:
            run_filter(layout, source=SYNTHESIS)
    seeds = ds.read(rounds=[0])
    timings["seed_s"] = time.perf_counter() - t0
    print(f"seed round: {seeds.num_rows} accepted grasps on {len(train_ids)} objects", file=sys.stderr, flush=True)

    # two generators on the same seeds: plain DDPM and physics-aware training
    models = {}
    for label, physics_aware, round_ in (("plain", False, 1), ("physics", True, 2)):
        cfg = tiny_config()
        cfg.train.physics_aware = physics_aware
        cfg.train.epochs = args.epochs
        t0 = time.perf_counter()
        try:
            result = train(layout, round_, cfg, table=seeds, device="cpu")
        except TrainingDataChanged:  # a rerun on an old root after the preset changed
            result = train(layout, round_, cfg, table=seeds, device="cpu", restart=True)
        timings[f"train_{label}_s"] = time.perf_counter() - t0
        models[label] = round_
        print(f"trained {label}: {result.epoch} epochs, final {result.final}", file=sys.stderr, flush=True)

    # paper protocol: every grasp is simulated (penetrating ones too), so Suc.1/Suc.6 cover all grasps;
    # "accepted" is what the dataset filter would keep (penetration limits + Suc.6)
    filter_cfg = FilterConfig(simulate_penetrating=True)
    groups = {"held-out": held_out, "seen": train_ids[: args.held_out]}  # seen: as many training objects
    # guided settings run with the preset's guidance weights and with the reference's (SPF 1, ERF 0.3, SRF 1)
    preset_sample = tiny_config().sample
    reference = tiny_config().sample
    reference.weights, reference.sdf_resolution = PhysicsWeights(spf=1.0, erf=0.3, srf=1.0), 64
    settings = [("", preset_sample, False), ("", preset_sample, True)]
    if reference != preset_sample:
        settings.append((" (reference weights)", reference, True))
    rows = []
    for label, round_ in models.items():
        checkpoint = ckpt.load(layout, round_, device="cpu")
        for group, objects in groups.items():
            for suffix, sample_cfg, guidance in settings:
                rows.append(
                    _evaluate(layout, checkpoint, sample_cfg, objects, group, label, suffix, guidance, filter_cfg, args)
                )

    return {
        "objects_train": names[: -args.held_out],
        "objects_held_out": names[-args.held_out :],
        "seed_grasps": seeds.num_rows,
        "epochs": args.epochs,
        "per_object": args.per_object,
        "rows": rows,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.perf_counter() - t_start, 1),
        "root": layout.root,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--threads", default="1,2")
    s.add_argument("--device", default="cpu")
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--repeats", type=int, default=1)
    s.add_argument("--quick", action="store_true", help="skip the fp32 guided run")
    s.add_argument("--root", default=None)
    a = sub.add_parser("ablation")
    a.add_argument("--root", default=None)
    a.add_argument("--objects", type=int, default=8, help="built-in objects to use (the demo order)")
    a.add_argument("--held-out", type=int, default=3)
    a.add_argument("--seed-per-object", type=int, default=64)
    a.add_argument("--synthesis-preset", default="fast")
    a.add_argument("--epochs", type=int, default=150)
    a.add_argument("--per-object", type=int, default=64)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--threads", type=int, default=1)
    for q in (s, a):
        q.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    result = speed(args) if args.cmd == "speed" else ablation(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
