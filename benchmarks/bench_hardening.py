"""Benchmark: what the hardening costs on source files shaped like the real releases.

    .venv/bin/python benchmarks/bench_hardening.py [--grasps 5000] [--objects 300] [--records 20000] [--poses 1000000]

Each figure is CPU seconds (``time.process_time``, best of 3) against a baseline measured in the same run:

1. a DexGraspNet ``dataset/<code>.npy`` (object array of ``--grasps`` qpos dicts, numpy scalars):
   ``safeload.load_npy`` vs numpy's own ``np.load(allow_pickle=True)`` (the unsafe baseline);
2. a DGA ``object_pcds_nors.pkl`` (``--objects`` x (10240, 6) float32): ``safeload.load_pickle`` vs ``pickle.loads``;
3. a DGA release ``.pt`` (``--records`` dicts of tensors): ``safeload.load_torch`` vs ``torch.load(weights_only=True)``;
4. the per-record pose check of curate (``base.pose_check``) over ``--poses`` records, vs converting them
   (``PoseConverter.convert``), the work curate does for every record anyway;
5. one describe request's client (a fresh client per attempt, for the total deadline), vs nothing.

Peak memory: run it under ``/usr/bin/time -v``. Figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import tempfile
import time

import numpy as np
import torch


def best(fn, repeat: int = 3) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        out.append(time.process_time() - t0)
    return min(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grasps", type=int, default=5000)
    ap.add_argument("--objects", type=int, default=300)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--poses", type=int, default=1_000_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from dga_engine.describe.config import LLMConfig
    from dga_engine.describe.llm import make_client
    from dga_engine.sources import base, safeload
    from dga_engine.sources.kinematics import converter, source_hand

    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="dga-bench-hardening-") as tmp:
        # 1. DexGraspNet object array
        keys = source_hand("dexgraspnet_mjcf").joint_order + ["WRJTx", "WRJTy", "WRJTz", "WRJRx", "WRJRy", "WRJRz"]
        arr = np.empty(args.grasps, dtype=object)
        for i in range(args.grasps):
            arr[i] = {"qpos": {k: float(v) for k, v in zip(keys, rng.normal(size=len(keys)))}, "scale": np.float64(0.1)}
        npy = os.path.join(tmp, "core-mug-0.npy")
        np.save(npy, arr, allow_pickle=True)
        rows.append((f"DexGraspNet .npy, {args.grasps} grasps ({os.path.getsize(npy) / 1e6:.1f} MB)",
                     best(lambda: safeload.load_npy(npy)), best(lambda: np.load(npy, allow_pickle=True))))
        # 2. point clouds
        pcs = {f"obj{i}": rng.normal(size=(10240, 6)).astype(np.float32) for i in range(args.objects)}
        pkl = os.path.join(tmp, "object_pcds_nors.pkl")
        with open(pkl, "wb") as fh:
            pickle.dump(pcs, fh, protocol=4)
        def plain_pickle():
            with open(pkl, "rb") as fh:
                return pickle.loads(fh.read())

        rows.append((f"object_pcds_nors.pkl, {args.objects} x (10240, 6) ({os.path.getsize(pkl) / 1e6:.0f} MB)",
                     best(lambda: safeload.load_pickle(pkl)), best(plain_pickle)))
        # 3. a release .pt
        meta = [{"rotations": torch.eye(3), "translations": torch.zeros(3), "joint_positions": torch.zeros(24),
                 "object_name": f"core-cup-{i % 50}", "scale": 0.1} for i in range(args.records)]
        pt = os.path.join(tmp, "dexgraspnet_shadowhand.pt")
        torch.save({"info": {}, "metadata": meta}, pt)
        rows.append((f"release .pt, {args.records} records ({os.path.getsize(pt) / 1e6:.0f} MB)",
                     best(lambda: safeload.load_torch(pt), 1), best(lambda: torch.load(pt, weights_only=True), 1)))
        # 4. per-record pose checks vs the conversion every record gets
        from scipy.spatial.transform import Rotation

        r = Rotation.random(args.poses, random_state=0).as_matrix()
        t = rng.normal(size=(args.poses, 3)) * 0.1
        q = rng.normal(size=(args.poses, 24)) * 0.3
        conv = converter("sr_grasp_description")
        rows.append((f"pose_check, {args.poses:,} records", best(lambda: base.pose_check(r, t, q), 1),
                     best(lambda: conv.convert(r, t, q), 1)))
        # 5. a describe request's own client
        cfg = LLMConfig(base_url="http://127.0.0.1:9/v1", model="m")
        make_client(cfg).close()
        rows.append(
            (
                "describe: a client per request attempt (x100)",
                best(lambda: [make_client(cfg).close() for _ in range(100)]),
                0.0,
            )
        )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load {os.getloadavg()}")
    print(f"{'measure':64s} {'hardened s':>11s} {'baseline s':>11s} {'ratio':>7s}")
    for name, ours, baseline in rows:
        ratio = f"{ours / baseline:.2f}x" if baseline > 0 else "-"
        print(f"{name:64s} {ours:11.3f} {baseline:11.3f} {ratio:>7s}")


if __name__ == "__main__":
    main()
