"""Benchmark: hand FK + point sets, the physics objectives (exact vs SDF grid), penetration metrics.

    .venv/bin/python benchmarks/bench_hand.py [--device cuda] [--fk-batch 1024] [--batch 256] [--repeat 5] [--threads 1]

Prints milliseconds per call (median of ``--repeat`` runs after one warm-up). Figures depend heavily on
the machine; say which one when you quote them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import trimesh

from dga_engine.hand import HandModel, rotations
from dga_engine.physics import (
    ExactField,
    GridField,
    ObjectCloud,
    PhysicsObjectives,
    hand_into_object_mm,
    object_into_hand_mm,
)


def _timeit(fn, repeat: int, device: torch.device) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) * 1000

    once()  # warm-up (allocations, lazy copies, kernels)
    return statistics.median(once() for _ in range(repeat))


def _poses(hand: HandModel, b: int, device, dtype, seed: int = 0):
    """Random joints and rotations, translated so the palm centre sits near the object's surface."""
    g = torch.Generator().manual_seed(seed)
    q = hand.lower.cpu() + (hand.upper - hand.lower).cpu() * torch.rand(b, 24, generator=g, dtype=hand.lower.dtype)
    rot = rotations.random_rotations(b, g, hand.lower.dtype)
    fk = hand.forward_kinematics(
        torch.zeros(b, 3, dtype=rot.dtype).to(hand.lower.device), rot.to(hand.lower.device), q.to(hand.lower.device)
    )
    palm = hand.link_names.index("palm")
    offset = torch.tensor([0.0, -0.06, 0.04], dtype=rot.dtype, device=hand.lower.device)
    t = -(fk.pos[:, palm] + fk.rot[:, palm] @ offset)
    return (x.to(device=device, dtype=dtype) for x in (t, rot, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fk-batch", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--object-points", type=int, default=2048, help="object points of the exact field")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        # On an oversubscribed machine, OpenMP threads spinning against other processes can make small
        # kernels 10-50x slower; one thread gives the more stable figure there.
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = torch.float32
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device "
          f"{device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else ""))  # fmt: skip

    hand = HandModel(device=device, dtype=dtype)
    rows = []

    # ---- FK + point sets ----------------------------------------------------------------------
    b = args.fk_batch
    t, rot, q = _poses(hand, b, device, dtype)

    def fk_all():
        fk = hand.forward_kinematics(t, rot, q)
        return hand.surface_points(fk), hand.inner_points(fk), hand.keypoints(fk), hand.fingertips(fk)

    def fk_all_backward():
        tt, qq = t.clone().requires_grad_(True), q.clone().requires_grad_(True)
        fk = hand.forward_kinematics(tt, rot, qq)
        out = hand.surface_points(fk).sum() + hand.inner_points(fk).sum() + hand.keypoints(fk).sum()
        out.backward()

    with torch.no_grad():
        rows.append((f"FK + all point sets, B={b}, forward (no grad)", _timeit(fk_all, args.repeat, device)))
    rows.append(
        (f"FK + surface/inner/keypoints, B={b}, forward+backward", _timeit(fk_all_backward, args.repeat, device))
    )

    # ---- objectives ---------------------------------------------------------------------------
    mesh = trimesh.creation.box(extents=[0.05, 0.05, 0.10])
    pts, face = trimesh.sample.sample_surface(mesh, args.object_points, seed=0)
    nrm = mesh.face_normals[face]
    t0 = time.perf_counter()
    grid = GridField.from_mesh(mesh, [mesh])
    build_mesh = (time.perf_counter() - t0) * 1000
    dense, dface = trimesh.sample.sample_surface(mesh, 10240, seed=1)
    t0 = time.perf_counter()
    GridField.from_points(dense, mesh.face_normals[dface])
    build_points = (time.perf_counter() - t0) * 1000
    exact = ExactField(pts, nrm)
    objectives = PhysicsObjectives(hand)
    b = args.batch
    t, rot, q = _poses(hand, b, device, dtype, seed=1)

    for name, field in ((f"exact NN ({args.object_points} pts)", exact), ("SDF grid 64^3", grid)):

        def forward(field=field):
            with torch.no_grad():
                objectives(t, rot, q, field)

        def forward_backward(field=field):
            tt, qq = t.clone().requires_grad_(True), q.clone().requires_grad_(True)
            objectives.guidance_loss(tt, rot, qq, field).backward()

        rows.append((f"SPF+ERF+SRF via FK, B={b}, {name}, forward", _timeit(forward, args.repeat, device)))
        rows.append(
            (f"SPF+ERF+SRF via FK, B={b}, {name}, forward+backward", _timeit(forward_backward, args.repeat, device))
        )
    rows.append(("GridField.from_mesh (box, 64^3), once per object", build_mesh))
    rows.append(("GridField.from_points (10240 pts, 64^3), once per object", build_points))

    # ---- penetration metrics (CPU, numpy) -----------------------------------------------------
    with torch.no_grad():
        fk = hand.forward_kinematics(t, rot, q)
        surface = hand.surface_points(fk).cpu()
        fk_cpu = (fk.rot.cpu(), fk.pos.cpu())
    cloud = ObjectCloud(dense, mesh.face_normals[dface])
    per = 1.0 / b
    rows.append(
        (
            f"hand_into_object_mm, per grasp (B={b}, 10240 obj pts)",
            _timeit(lambda: hand_into_object_mm(surface, cloud), args.repeat, torch.device("cpu")) * per,
        )
    )
    rows.append(
        (
            f"object_into_hand_mm, per grasp (B={b}, 10240 obj pts)",
            _timeit(lambda: object_into_hand_mm(cloud, fk_cpu), args.repeat, torch.device("cpu")) * per,
        )
    )

    width = max(len(r[0]) for r in rows)
    for name, ms in rows:
        print(f"{name:<{width}}  {ms:9.2f} ms")


if __name__ == "__main__":
    main()
