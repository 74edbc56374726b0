"""Benchmark: the sharded dataset store (write throughput, size on disk, listing and one-object lookups).

    .venv/bin/python benchmarks/bench_store.py [--rows 1000000] [--big-rows 3400000] [--objects 15700]
                                               [--shards 340] [--out DIR] [--keep]

1. writes ``--rows`` synthetic accepted grasps (about 217 per object, in 20 keys) and prints rows/s and bytes/row;
2. builds a ``--big-rows`` dataset of ``--objects`` objects in ``--shards`` shards, then times
   ``shards ls`` (in process and as a CLI subprocess), one-object lookups (cold: a fresh ``Dataset``
   that reads every manifest; warm: manifests and footers cached), a DuckDB full-scan lookup for
   comparison, and ``verify`` with checksums.

Synthetic poses are random floats (joints uniform in a range, unit quaternions, normal translations),
which compress worse than real grasps: bytes/row is a pessimistic figure. Data goes to a temporary
folder (or ``--out``, e.g. benchmarks/out/, which is git-ignored) and is deleted unless ``--keep``.
Figures depend heavily on the machine and its load; say which one when you quote them.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import GRASP_SCHEMA, make_grasp_id
from dga_engine.dataset.store import Dataset
from dga_engine.layout import Layout

_f32 = pa.float32()


def synthetic(object_ids: list[str], per_object: int, round_: int, seed: int, source: str = "synthesis") -> pa.Table:
    """Accepted grasps (filter fields filled) for ``object_ids``, ``per_object`` each, rows interleaved."""
    rng = np.random.default_rng(seed)
    n = len(object_ids) * per_object
    oids = np.repeat(np.asarray(object_ids, dtype=object), per_object)[rng.permutation(n)]
    q = rng.normal(size=(n, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    rec = [f"{source}:{seed}:{i}" for i in range(n)]

    def fixed(a: np.ndarray, k: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float32).reshape(-1), _f32), k)

    cols = {
        "grasp_id": [make_grasp_id(o, source, r, round_) for o, r in zip(oids, rec)],
        "object_id": pa.array(oids.tolist(), pa.string()),
        "object_scale": pa.array(rng.uniform(0.8, 1.2, n).astype(np.float32)),
        "translation": fixed(rng.normal(scale=0.1, size=(n, 3)), 3),
        "rotation": fixed(q, 4),
        "joints": fixed(rng.uniform(-0.3, 1.5, size=(n, 24)), 24),
        "source": pa.array([source] * n),
        "source_record_id": rec,
        "round": pa.array(np.full(n, round_, np.int32)),
        "generator": pa.array(["bench 1"] * n),
        "generator_config_hash": pa.array(["0123abcd"] * n),
        "created_at": pa.array(np.full(n, np.datetime64("2025-06-01T12:00:00", "us")), pa.timestamp("us", tz="UTC")),
        "displacement": fixed(rng.uniform(0, 0.02, size=(n, 6)), 6),
        "suc1": pa.array(np.ones(n, bool)),
        "suc6": pa.array(rng.uniform(size=n) < 0.7),
        "pen_hand_object_mm": pa.array(rng.uniform(0, 8, n).astype(np.float32)),
        "pen_object_hand_mm": pa.array(rng.uniform(0, 0.8, n).astype(np.float32)),
        "contact_count": pa.array(rng.integers(2, 15, n).astype(np.int32)),
        "sim_backend": pa.array(["mujoco"] * n),
        "protocol_version": pa.array(["dga-1"] * n),
    }
    return pa.Table.from_pydict(cols, schema=GRASP_SCHEMA)


def _dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def bench_write(root: str, rows: int, keys: int = 20, per_object: int = 217) -> None:
    ds = Dataset(Layout.at(root), "write-bench")
    per_key = rows // keys
    objects_per_key = max(1, per_key // per_object)
    write_s = write_cpu = gen_s = 0.0
    written = 0
    for k in range(keys):
        t0 = time.perf_counter()
        table = synthetic([f"obj{k:03d}{i:05d}" for i in range(objects_per_key)], per_object, 0, seed=k)
        gen_s += time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        m = ds.write_shard(table, f"seed-{k:04d}")
        write_s += time.perf_counter() - t0
        write_cpu += time.process_time() - c0
        written += m.rows
    shard_bytes = sum(m.bytes for m in ds.shards())
    print(f"write: {written} rows in {keys} shards, {write_s:.1f} s -> {written / write_s:,.0f} rows/s wall, "
          f"{written / write_cpu:,.0f} rows per CPU-second (synthesis of the tables, not timed: {gen_s:.1f} s)")
    print(f"size: {shard_bytes / written:.1f} bytes/row in Parquet ({shard_bytes / 2**20:.1f} MiB), "
          f"{_dir_bytes(ds.path) / written:.1f} bytes/row with manifests and info.json")


def build_big(root: str, rows: int, objects: int, shards: int) -> Dataset:
    ds = Dataset(Layout.at(root), "lookup-bench")
    per_object = max(1, rows // objects)
    per_shard = -(-objects // shards)
    t0 = time.perf_counter()
    write_s = write_cpu = 0.0
    for s in range(shards):
        ids = [f"obj{i:06d}" for i in range(s * per_shard, min(objects, (s + 1) * per_shard))]
        if not ids:
            break
        table = synthetic(ids, per_object, round_=s % 3, seed=1000 + s)
        t1, c1 = time.perf_counter(), time.process_time()
        ds.write_shard(table, f"r{s % 3}-{s:05d}")
        write_s += time.perf_counter() - t1
        write_cpu += time.process_time() - c1
    total = sum(m.rows for m in ds.shards())
    print(f"built: {total} rows, {objects} objects, {len(ds.shards())} shards in {time.perf_counter() - t0:.1f} s "
          f"(writes {write_s:.1f} s -> {total / write_s:,.0f} rows/s wall, {total / write_cpu:,.0f} per CPU-second, "
          "incl. rebuilding info.json after each commit)")
    return ds


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(0.95 * len(xs)))]
    return f"median {statistics.median(xs) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (n={len(xs)})"


def bench_lookups(ds: Dataset, objects: int) -> None:
    layout, name = ds.layout, ds.name
    t, c = [], []
    for _ in range(5):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = [m.summary() for m in Dataset(layout, name).shards()]
        t.append(time.perf_counter() - t0)
        c.append(time.process_time() - c0)
    print(
        f"shards ls (in process, fresh Dataset, {len(rows)} manifests): {_ms(t)}; CPU median "
        f"{statistics.median(c) * 1000:.0f} ms"
    )
    cli = [
        sys.executable,
        "-m",
        "dga_engine.cli.main",
        "--root",
        layout.root,
        "shards",
        "ls",
        "--dataset",
        name,
        "--json",
    ]
    t = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run(cli, check=True, stdout=subprocess.DEVNULL)
        t.append(time.perf_counter() - t0)
    print(f"shards ls (CLI subprocess, incl. interpreter start and imports): {_ms(t)}")

    rnd = random.Random(0)
    ids = [f"obj{rnd.randrange(objects):06d}" for _ in range(220)]
    cold, cold_cpu, n_rows = [], [], []
    for oid in ids[:20]:
        t0, c0 = time.perf_counter(), time.process_time()
        n_rows.append(Dataset(layout, name).read_object(oid).num_rows)
        cold.append(time.perf_counter() - t0)
        cold_cpu.append(time.process_time() - c0)
    print(
        f"read_object cold (fresh Dataset: list + read all manifests, open one file, read one row group): {_ms(cold)}; "
        f"CPU median {statistics.median(cold_cpu) * 1000:.0f} ms"
    )
    warm_ds = Dataset(layout, name)
    warm_ds.shards()
    warm = []
    for oid in ids[20:]:
        t0 = time.perf_counter()
        n_rows.append(warm_ds.read_object(oid).num_rows)
        warm.append(time.perf_counter() - t0)
    print(f"read_object warm (same Dataset; manifests re-validated by stat): {_ms(warm)}; "
          f"{statistics.mean(n_rows):.0f} rows per object")
    t = []
    for oid in ids[:3]:
        t0 = time.perf_counter()
        ds.query(f"select count(*) from grasps where object_id = '{oid}'")
        t.append(time.perf_counter() - t0)
    print(f"for comparison, DuckDB over all shards (uses row-group statistics): {_ms(t)}")
    t0 = time.perf_counter()
    report = Dataset(layout, name).verify()
    print(f"verify with sha256 of every file: {time.perf_counter() - t0:.1f} s, ok={report.ok}, {report.rows} rows")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--big-rows", type=int, default=3_400_000)
    ap.add_argument("--objects", type=int, default=15_700)
    ap.add_argument("--shards", type=int, default=340)
    ap.add_argument("--out", default=None, help="folder for the generated data (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args()
    root = args.out or tempfile.mkdtemp(prefix="bench-store-")
    os.makedirs(root, exist_ok=True)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, python "
        f"{platform.python_version()}, "
        f"pyarrow {pa.__version__}; data under {root}"
    )
    t0 = time.perf_counter()
    try:
        bench_write(root, args.rows)
        ds = build_big(root, args.big_rows, args.objects, args.shards)
        bench_lookups(ds, args.objects)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
