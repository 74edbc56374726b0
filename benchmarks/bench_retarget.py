"""Retargeting human hands to the ShadowHand (GRAB -> DexGRAB): accuracy, speed, memory, and what the filter keeps.

    .venv/bin/python benchmarks/bench_retarget.py [--sequences 24] [--grab-sequences 12] [--long-frames 2000] [--json out.json]

What it measures, all on data made here (the real GRAB and MANO are licensed and not available):

1. keypoints: ``--sequences`` human grasp motions at GRAB's 120 fps, posed by smplx on a MANO-format model
   with an adult hand's proportions (tests/retarget/mano_builders.py: wrist to middle fingertip 19 cm,
   typical segment lengths, the real file's keys and shapes), subjects' hands scaled 0.9-1.05, power and
   precision grasps closed on spheres of 2.5-4.5 cm (each finger curls until its skin touches), with a
   reach, a hold with drift, tremor and a few degrees of wobble, and a release. The frames where the hand
   is at least half closed are retargeted, once at 120 fps and once thinned as curate thins them (5 mm);
2. accuracy: fingertip error (mm, mean and 95th percentile, per finger) after retargeting, for the
   engine's settings and, as the baseline in the same run, dex-retargeting's defaults (ftol 1e-5, each
   frame starting from the last, no special first frame) and a small sweep of the stop tolerance and
   the temporal weight;
3. speed: frames/s of the retargeting step with 1 and 2 worker processes (warm pool; the pool's start-up
   is reported apart), and CPU ms per frame;
4. the synthetic GRAB download: ``--grab-sequences`` sequences in GRAB's layout, ``curate --source grab``
   then ``filter`` without refine: contact frames, frames kept after thinning, candidates, and the share
   of them the physics filter accepts, with the reject reasons;
5. memory: peak RSS of reading and curating one GRAB-size sequence of ``--long-frames`` frames (with the
   full T x 10475 body contact labels) in a child process.

The machine may be shared: the script prints the load average and CPU time beside wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dga_engine.retarget.engine import RetargetConfig, Retargeter, retarget_chunk  # noqa: E402
from tests.retarget.mano_builders import grasp_motion, mano_layer, pose_mano, synthetic_mano  # noqa: E402

LIBRARY_DEFAULTS = RetargetConfig(ftol_abs=1e-5, predict=0.0, first_frame_ftol_abs=1e-5, first_frame_passes=1)


def human_sequences(n: int, seed: int = 0) -> list[np.ndarray]:
    """Keypoints (T_i, 21, 3) of the at-least-half-closed frames of n grasp motions (object frame)."""
    model = synthetic_mano()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        scale = rng.uniform(0.9, 1.05)
        template = model.arrays["v_template"] * scale
        layer = mano_layer(model, template)
        kind = "power" if i % 2 == 0 else "precision"
        g = grasp_motion(model, rng, rng.uniform(0.025, 0.045), 360, kind, v_template=template, layer=layer)
        _, kp = pose_mano(layer, g.global_orient, g.hand_pca, g.transl)
        out.append(kp[g.closure >= 0.5])
    return out


def thinned(seqs: list[np.ndarray], min_change_mm: float = 5.0) -> list[tuple[np.ndarray, np.ndarray]]:
    from dga_engine.sources.grab import thin_frames

    out = []
    for kp in seqs:
        starts = np.zeros(len(kp), dtype=bool)
        keep = thin_frames(kp, starts, min_change_mm)
        out.append((kp[keep], np.arange(len(kp))[keep]))
    return out


def accuracy(seqs: list[tuple[np.ndarray, np.ndarray]], config: RetargetConfig) -> dict:
    errs, cpu, n = [], 0.0, 0
    for kp, frames in seqs:
        for i in range(0, len(kp), config.chunk_frames):
            part = retarget_chunk(kp[i: i + config.chunk_frames], config, frames[i: i + config.chunk_frames])
            errs.append(part["tip_error_mm"])
            cpu += float(part["cpu_seconds"])
            n += len(part["tip_error_mm"])
    e = np.concatenate(errs)
    return {"frames": n, "mean_mm": round(float(e.mean()), 2), "p95_mm": round(float(np.percentile(e, 95)), 2),
            "max_mm": round(float(e.max()), 1), "per_finger_mean_mm": dict(zip(("ff", "mf", "rf", "lf", "th"), e.mean(0).round(2).tolist())),
            "cpu_ms_per_frame": round(1000 * cpu / n, 2)}


def speed(seqs: list[np.ndarray], workers: int) -> dict:
    kp = np.concatenate(seqs)
    config = RetargetConfig(workers=workers)
    with Retargeter(config) as r:
        t0 = time.perf_counter()
        r.run(kp[: config.chunk_frames * workers])  # starts the pool and builds each worker's retargeter
        startup = time.perf_counter() - t0
        c0 = time.process_time()
        res = r.run(kp)
        parent_cpu = time.process_time() - c0
    return {"workers": workers, "frames": len(res), "frames_per_second": round(len(res) / res.wall_seconds, 1),
            "cpu_ms_per_frame": round(1000 * res.cpu_seconds / len(res), 2), "parent_cpu_s": round(parent_cpu, 2),
            "pool_startup_s": round(startup, 2)}


def grab_filter_share(n_sequences: int, seed: int = 0) -> dict:
    """Synthetic GRAB download -> curate --source grab -> filter without refine (the baseline), then repair +
    filter on the same candidates (what ``dga-engine filter --source grab`` does)."""
    from dga_engine.layout import Layout
    from dga_engine.refine import RefineConfig, run_refine
    from dga_engine.simulate.stage import run_filter
    from dga_engine.sources.curate import CurateConfig, curate
    from dga_engine.sources.grab import read_sequence, right_hand_contact
    from tests.retarget.mano_builders import write_chumpy_pickle
    from tests.sources.grab_builders import OBJECT_RADIUS, Sequence, write_grab

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = synthetic_mano()
        mano = write_chumpy_pickle(tmp / "MANO_RIGHT.pkl", model.arrays)
        objects = sorted(OBJECT_RADIUS)
        seqs = [Sequence(f"s{1 + i % 3}", objects[i % len(objects)], f"take{i}", n_frames=360,
                         kind="power" if i % 2 == 0 else "precision", hand_scale=(1.0, 0.93, 1.04)[i % 3]) for i in range(n_sequences)]
        write_grab(tmp / "GRAB", model, seqs, seed=seed)
        contact = sum(int(right_hand_contact(read_sequence(p, ("contact",))["contact"]["object"]).sum())
                      for p in sorted((tmp / "GRAB" / "grab").rglob("*.npz")))
        layout = Layout.at(tmp / "root")
        t0 = time.perf_counter()
        report = curate(layout, "grab", CurateConfig(path=str(tmp / "GRAB"), mano_model=str(mano)))
        t_curate = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = run_filter(layout, source="grab", workers=2)
        t_filter = time.perf_counter() - t0
        t0 = time.perf_counter()
        refined = run_refine(layout, "grab", RefineConfig.preset("repair"), workers=2)
        t_refine = time.perf_counter() - t0
        with_refine = run_filter(layout, source="grab", workers=2, refined=True)
    return {"sequences": n_sequences, "right_hand_contact_frames": contact, "candidates": report.grasps_written,
            "bad_records": report.bad_records, "accepted": summary.accepted, "rejected": summary.rejected,
            "accepted_share": round(summary.accepted / max(1, summary.total), 3), "reject_reasons": summary.reasons,
            "fk_residual_mm": report.fk_residual_mm, "curate_s": round(t_curate, 1), "filter_s": round(t_filter, 1),
            "metrics": summary.metrics,
            "with_refine": {"accepted": with_refine.accepted, "rejected": with_refine.rejected,
                            "accepted_share": round(with_refine.accepted / max(1, with_refine.total), 3),
                            "reject_reasons": with_refine.reasons, "refine": refined.statuses, "refine_cpu_s": round(refined.cpu_seconds, 1),
                            "refine_s": round(t_refine, 1), "metrics": with_refine.metrics}}


# Peak memory from /proc/self/status VmHWM: unlike ru_maxrss it is not inherited from the forking parent.
LONG_CHILD = r"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
def mb(field):
    return int(open("/proc/self/status").read().split(field + ":")[1].split()[0]) // 1024
from dga_engine.sources.grab import GrabLoader, read_sequence
root, mano = Path(sys.argv[2]), sys.argv[3]
unit = sorted(str(p.relative_to(root)) for p in (root / "grab").rglob("*.npz"))[0]
after_import = mb("VmHWM")
t0 = time.perf_counter(); seq = read_sequence(root / unit); t_read = time.perf_counter() - t0
body_mb = seq["contact"]["body"].nbytes // 2**20
peak_read = mb("VmHWM")
del seq
loader = GrabLoader(root, mano)
t0 = time.perf_counter(); res = loader.load_unit(unit); t_unit = time.perf_counter() - t0
loader.close()
print(json.dumps({"read_s": round(t_read, 2), "load_unit_s": round(t_unit, 2), "kept_frames": sum(len(b) for b in res.batches),
                  "body_labels_mb": body_mb, "rss_after_imports_mb": after_import, "peak_rss_reading_mb": peak_read,
                  "peak_rss_mb": mb("VmHWM")}))
"""


def long_sequence_memory(n_frames: int) -> dict:
    from tests.retarget.mano_builders import write_chumpy_pickle
    from tests.sources.grab_builders import Sequence, write_grab

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = synthetic_mano()
        mano = write_chumpy_pickle(tmp / "MANO_RIGHT.pkl", model.arrays)
        write_grab(tmp / "GRAB", model, [Sequence("s1", "apple", "long", n_frames=n_frames)])
        size = next((tmp / "GRAB" / "grab").rglob("*.npz")).stat().st_size
        out = subprocess.run([sys.executable, "-c", LONG_CHILD, str(Path(__file__).resolve().parents[1]), str(tmp / "GRAB"), str(mano)],
                             capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
    return {"frames": n_frames, "file_mb": round(size / 2**20, 1), **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sequences", type=int, default=24)
    ap.add_argument("--grab-sequences", type=int, default=12)
    ap.add_argument("--long-frames", type=int, default=2000)
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--parts", default="accuracy,speed,grab,long", help="comma-separated subset of accuracy,speed,grab,long")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    out: dict = {"load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    print(f"load {out['load_average']}", flush=True)
    if parts & {"accuracy", "speed"}:
        seqs = human_sequences(args.sequences)
        full = [(kp, np.arange(len(kp))) for kp in seqs]
        thin = thinned(seqs)
        out["keypoint_frames"] = {"120fps": sum(len(k) for k, _ in full), "thinned_5mm": sum(len(k) for k, _ in thin)}
        print(f"keypoint frames {out['keypoint_frames']}", flush=True)
    if "accuracy" in parts:
        acc = {}
        for name, cfg in (("engine", RetargetConfig()), ("library_defaults", LIBRARY_DEFAULTS),
                          ("ftol_1e-6", RetargetConfig(ftol_abs=1e-6)), ("ftol_1e-8", RetargetConfig(ftol_abs=1e-8)),
                          ("temporal_4e-4", RetargetConfig(temporal_weight=4e-4)), ("no_prediction", RetargetConfig(predict=0.0))):
            acc[name] = {"120fps": accuracy(full, cfg), "thinned": accuracy(thin, cfg)}
            print(name, json.dumps(acc[name]), flush=True)
        out["accuracy"] = acc
    if "speed" in parts:
        out["speed"] = [speed([k for k, _ in full], w) for w in (1, 2)]
        print("speed", json.dumps(out["speed"]), flush=True)
    if "grab" in parts:
        out["grab_filter"] = grab_filter_share(args.grab_sequences)
        print("grab", json.dumps(out["grab_filter"]), flush=True)
    if "long" in parts:
        out["long_sequence"] = long_sequence_memory(args.long_frames)
        print("long", json.dumps(out["long_sequence"]), flush=True)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    out["peak_rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    out["load_average_end"] = os.getloadavg()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps({k: out[k] for k in ("peak_rss_mb", "peak_rss_children_mb", "load_average_end")}))


if __name__ == "__main__":
    main()
