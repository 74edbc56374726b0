"""At-scale rehearsal of the dataset store: the paper's 3.4M grasps over 15.7k objects, written the way the filter
writes them (one ``write_shard`` per unit = one object), with the store's own compaction, then measured.

    .venv/bin/python benchmarks/rehearse_store.py [--objects 15700] [--per-object 216] [--writers 1|2]
                                                  [--s3] [--root DIR] [--keep]

Prints: data files, bytes per grasp, meta/info.json size, the commit cost (CPU ms per write_shard, median of the
first and of the last 500 commits, compactions counted apart), every compaction's cost, ``shards ls`` (in
process and as a CLI command), one-object lookups (cold: a new Dataset, nothing cached; warm: the same one),
``verify`` with checksums, HF ``datasets.load_dataset`` over the files, and peak memory (ru_maxrss) per phase.
``--writers 2`` runs two writer processes at once (two sources, half the objects each) and checks that no row
was lost or duplicated. ``--s3`` runs against a moto S3 server it starts on 127.0.0.1. Memory is bounded by
one unit's rows plus one object's rows during compaction: no phase holds the dataset in Python objects.
Poses are random floats, which compress worse than real grasps: bytes per grasp is pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import GRASP_SCHEMA, make_grasp_id, upgrade

_f32 = pa.float32()
_CREATED = np.datetime64("2025-06-01T12:00:00", "us")


def unit_table(unit: int, rows: int, seed: int = 0, source: str = "dexgraspnet", round_: int = 0) -> pa.Table:
    """One filter unit's accepted grasps: ``rows`` grasps of object ``obj-<unit>``, filter fields filled.

    Poses are random (unit quaternions, joints in a range), so they compress worse than real grasps.
    """
    rng = np.random.default_rng([unit, seed])
    oid = f"obj-{unit:05d}"
    rec = [f"{source}/core-{unit:05d}.npy:{i}" for i in range(rows)]
    q = rng.normal(size=(rows, 4)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1

    def fixed(a: np.ndarray, k: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float32).reshape(-1), _f32), k)

    cols = {
        "grasp_id": [make_grasp_id(oid, source, r, round_) for r in rec],
        "object_id": pa.array([oid] * rows, pa.string()),
        "object_scale": pa.array(rng.uniform(0.8, 1.2, rows).astype(np.float32)),
        "translation": fixed(rng.normal(scale=0.1, size=(rows, 3)), 3),
        "rotation": fixed(q, 4),
        "joints": fixed(rng.uniform(-0.3, 1.5, size=(rows, 24)), 24),
        "source": pa.array([source] * rows),
        "source_record_id": rec,
        "round": pa.array(np.full(rows, round_, np.int32)),
        "generator": pa.array(["curate 1"] * rows),
        "generator_config_hash": pa.array(["0123abcd"] * rows),
        "created_at": pa.array(np.full(rows, _CREATED), pa.timestamp("us", tz="UTC")),
        "displacement": fixed(rng.uniform(0, 0.02, size=(rows, 6)), 6),
        "suc1": pa.array(np.ones(rows, bool)),
        "suc6": pa.array(rng.uniform(size=rows) < 0.7),
        "pen_hand_object_mm": pa.array(rng.uniform(0, 8, rows).astype(np.float32)),
        "pen_object_hand_mm": pa.array(rng.uniform(0, 0.8, rows).astype(np.float32)),
        "contact_count": pa.array(rng.integers(2, 15, rows).astype(np.int32)),
        "sim_backend": pa.array(["mujoco"] * rows),
        "protocol_version": pa.array(["dga-1"] * rows),
    }
    v1 = pa.schema([f for f in GRASP_SCHEMA if f.name in cols], metadata=GRASP_SCHEMA.metadata)
    return upgrade(pa.Table.from_pydict(cols, schema=v1)).cast(GRASP_SCHEMA)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _key(unit: int, source: str) -> str:
    return f"filter.{source}.core-{unit:05d}.obj-{unit:05d}"


def write_units(root: str, units: list[int], per_object: int, source: str, report: str | None = None) -> dict:
    """Commit each unit as the filter does; returns the per-commit CPU costs and the compactions that ran."""
    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import Layout

    ds = Dataset(Layout.at(root))
    compactions = []
    real = ds.compact

    def timed_compact(*a, **k):
        t, w = time.process_time(), time.perf_counter()
        out = real(*a, **k)
        compactions.append({"cpu_s": time.process_time() - t, "wall_s": time.perf_counter() - w,
                            "rows": out.get("rows", 0), "files": out.get("files", 0)})
        return out

    ds.compact = timed_compact
    commits = []
    t_all = time.perf_counter()
    for n, u in enumerate(units):
        table = unit_table(u, per_object, source=source)
        before = len(compactions)
        t = time.process_time()
        ds.write_shard(table, _key(u, source))
        cpu = time.process_time() - t
        if len(compactions) > before:
            cpu -= compactions[-1]["cpu_s"]
        commits.append(cpu * 1e3)
        if report and (n + 1) % 2000 == 0:
            print(f"  [{source}] {n + 1}/{len(units)} units, {time.perf_counter() - t_all:.0f} s, "
                  f"maxrss {_maxrss_mb():.0f} MB", flush=True)
    out = {"commits_ms": commits, "compactions": compactions, "wall_s": time.perf_counter() - t_all,
           "maxrss_mb": _maxrss_mb()}
    if report:
        with open(report, "w") as fh:
            json.dump(out, fh)
    return out


def _moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(200):
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    return proc, endpoint


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"p50 {xs[len(xs) // 2]:.1f} ms, p95 {xs[int(len(xs) * 0.95)]:.1f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=15_700)
    ap.add_argument("--per-object", type=int, default=216)
    ap.add_argument("--writers", type=int, default=1, choices=[1, 2])
    ap.add_argument("--s3", action="store_true", help="write to a moto S3 server on 127.0.0.1 instead of a folder")
    ap.add_argument("--root", help="local storage root (default: a temporary folder, deleted afterwards)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    moto = None
    tmp = tempfile.mkdtemp(prefix="dga-rehearsal-")
    if args.s3:
        moto, endpoint = _moto()
        os.environ.update(
            {
                "FSSPEC_S3_ENDPOINT_URL": endpoint,
                "FSSPEC_S3_KEY": "testing",
                "FSSPEC_S3_SECRET": "testing",
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
            }
        )
        import fsspec

        fsspec.config.conf["s3"] = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
        bucket = f"dga-{uuid.uuid4().hex[:8]}"
        fsspec.filesystem("s3").mkdir(bucket)
        root = f"s3://{bucket}/root"
    else:
        root = args.root or os.path.join(tmp, "root")
    print(f"rehearsal: {args.objects} objects x {args.per_object} grasps = {args.objects * args.per_object} grasps, "
          f"{args.writers} writer(s), root {root}", flush=True)
    print(f"load: {os.getloadavg()}", flush=True)
    try:
        from dga_engine.dataset.store import Dataset
        from dga_engine.layout import Layout

        units = list(range(args.objects))
        random.Random(0).shuffle(units)  # objects arrive in no particular order, as candidate files do
        t0 = time.perf_counter()
        if args.writers == 1:
            results = [write_units(root, units, args.per_object, "dexgraspnet", report=None)]
        else:
            halves = [units[0::2], units[1::2]]
            procs = []
            for i, (half, source) in enumerate(zip(halves, ("dexgraspnet", "unidexgrasp"))):
                rep = os.path.join(tmp, f"writer{i}.json")
                code = (
                    "import sys, json; sys.path.insert(0, sys.argv[1]); import rehearse_store as r; "
                    "r.write_units(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])"
                )
                procs.append((subprocess.Popen([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)),
                                                root, json.dumps(half), str(args.per_object), source, rep],
                                               env=dict(os.environ)), rep))
            for p, _ in procs:
                assert p.wait() == 0, "a writer failed"
            results = [json.load(open(rep)) for _, rep in procs]
        write_wall = time.perf_counter() - t0
        ds = Dataset(Layout.at(root))
        t = time.process_time()
        ds.compact()
        final_cpu = time.process_time() - t
        commits = [c for r in results for c in r["commits_ms"]]
        comps = [c for r in results for c in r["compactions"]]
        n_rows = args.objects * args.per_object
        print(f"write: {write_wall:.0f} s wall for {len(commits)} commits and {len(comps)} compactions "
              f"({n_rows / write_wall:.0f} grasps/s); writers' maxrss {[round(r['maxrss_mb']) for r in results]} MB")
        first, last = statistics.median(commits[:500]), statistics.median(commits[-500:])
        print(
            f"commit CPU (write_shard without the compactions it triggered): median first 500 {first:.2f} ms, "
            f"last 500 {last:.2f} ms (x{last / first:.2f}); p95 overall "
            f"{sorted(commits)[int(len(commits) * 0.95)]:.2f} ms"
        )
        if comps:
            cf, cl = comps[0], comps[-1]
            print(
                f"compaction CPU: first {cf['cpu_s']:.2f} s, last {cl['cpu_s']:.2f} s, mean "
                f"{statistics.mean(c['cpu_s'] for c in comps):.2f} s "
                f"(each folds <= 256 units into a new file; small files are merged {8} at a time); "
                f"amortised per commit {sum(c['cpu_s'] for c in comps) / len(commits) * 1e3:.2f} ms; final "
                f"{final_cpu:.2f} s"
            )

        # --- what is on disk
        from dga_engine import fs as fsio

        files = ds.files()
        data_bytes = sum(f.bytes for f in ds._state().snapshot.files)
        info_bytes = len(fsio.read_bytes(ds.p("meta/info.json")))
        snap_bytes = len(fsio.read_bytes(ds.p("meta/snapshot.json")))
        snap = ds._state().snapshot
        index_bytes = len(fsio.read_bytes(ds.p(snap.index)))
        print(f"files: {len(files)} data files (target <= 100), {data_bytes / n_rows:.1f} bytes/grasp (target <= 200), "
              f"info.json {info_bytes / 1024:.1f} KiB (target <= 100), snapshot.json {snap_bytes / 1024:.1f} KiB, "
              f"index {index_bytes / 1024:.0f} KiB ({snap.index_rows} entries); manifests pending "
              f"{len(fsio.listdir(ds.p('manifests')))}")
        info = ds.info()
        assert info.rows == n_rows and info.objects == args.objects, (info.rows, info.objects)

        # --- listing and lookups
        t = time.perf_counter()
        listed = Dataset(Layout.at(root)).shards()
        ls_ms = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        cli = subprocess.run(
            [os.path.join(os.path.dirname(sys.executable), "dga-engine"), "--root", root, "shards", "ls", "--json"],
            capture_output=True,
            env=dict(os.environ),
        )
        ls_cli = time.perf_counter() - t
        assert cli.returncode == 0, cli.stderr[-2000:]
        print(
            f"shards ls: {len(listed)} shards in {ls_ms:.0f} ms in process; CLI (--json, with interpreter start) "
            f"{ls_cli:.1f} s"
        )
        print(f"maxrss so far (writes in this process, compaction, ls): {_maxrss_mb():.0f} MB", flush=True)
        rng = random.Random(1)
        probe = [f"obj-{rng.randrange(args.objects):05d}" for _ in range(40)]
        cold = []
        for oid in probe[:10]:
            fresh = Dataset(Layout.at(root))
            t = time.perf_counter()
            got = fresh.read_object(oid)
            cold.append((time.perf_counter() - t) * 1e3)
            assert got.num_rows == args.per_object
        warm_ds = Dataset(Layout.at(root))
        warm_ds.read_object(probe[0])
        warm = []
        for oid in probe:
            warm_ds.read_object(oid)  # footers of that file cached by the first read
            t = time.perf_counter()
            warm_ds.read_object(oid)
            warm.append((time.perf_counter() - t) * 1e3)
        print(f"one-object lookup: cold {_ms(cold)} (target <= 150), warm {_ms(warm)} (target <= 20)")

        t, c = time.perf_counter(), time.process_time()
        report = Dataset(Layout.at(root)).verify()
        print(f"verify (sha256 of every file, index, unique ids): {time.perf_counter() - t:.1f} s wall, "
              f"{time.process_time() - c:.1f} s CPU (target <= 10 s); ok={report.ok}, {report.rows} rows, "
              f"{len(report.bad)} problems")
        assert report.ok and report.rows == n_rows
        print(f"maxrss after verify: {_maxrss_mb():.0f} MB", flush=True)
        q = ds.query("SELECT count(*) AS n, count(DISTINCT grasp_id) AS d FROM grasps").to_pylist()[0]
        print(f"query: {q['n']} rows, {q['d']} distinct ids (lost {n_rows - q['d']}, duplicated {q['n'] - q['d']}); "
              f"maxrss after the DuckDB query: {_maxrss_mb():.0f} MB", flush=True)
        if not args.s3:
            import datasets

            t = time.perf_counter()
            hf = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=os.path.join(tmp, "hf"))
            print(
                f"HF datasets.load_dataset over the {len(files)} files: {time.perf_counter() - t:.1f} s, {hf.num_rows} "
                f"rows"
            )
        print(f"peak memory of this process (ru_maxrss): {_maxrss_mb():.0f} MB")
    finally:
        if moto is not None:
            os.killpg(moto.pid, signal.SIGTERM)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
