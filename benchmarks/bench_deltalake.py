"""Benchmark: the dataset store against delta-rs (``deltalake``) on the engine's write pattern.

    .venv/bin/python benchmarks/bench_deltalake.py [--units 2000] [--per-unit 216] [--only store|delta]

The filter commits one small unit (one object's accepted grasps) at a time, and a rerun of a unit must
replace exactly that unit's rows. Both stores get the same units:

* store: ``Dataset.write_shard(table, key)`` per unit, then ``Dataset.compact()`` where the store has it;
* delta: ``write_deltalake(mode="append")`` per new unit (the table carries a ``shard_key`` column), a rerun
  is ``mode="overwrite", predicate="shard_key = 'K'"``; then ``optimize.compact()`` and a checkpoint.

It prints the commit cost (CPU ms, median of the first and of the last 100 commits), the cost of 50 reruns,
files after compaction, and one-object lookups (cold: a fresh handle; warm: the same handle). ``deltalake``
is not a dependency of the engine: ``pip install deltalake`` to run the delta half.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rehearse_store import unit_table  # noqa: E402


def _cpu(fn):
    t = time.process_time()
    out = fn()
    return (time.process_time() - t) * 1e3, out


def _files(path: str, suffix: str = ".parquet") -> int:
    return sum(f.endswith(suffix) for _, _, fs in os.walk(path) for f in fs)


def _report(name: str, commits: list[float], reruns: list[float], extra: dict) -> None:
    first, last = statistics.median(commits[:100]), statistics.median(commits[-100:])
    print(f"{name}: commit CPU ms median first 100 {first:.2f}, last 100 {last:.2f} (x{last / first:.2f}); "
          f"rerun (replace one unit) median {statistics.median(reruns):.2f} ms; "
          + ", ".join(f"{k} {v}" for k, v in extra.items()), flush=True)


def bench_store(root: str, units: int, per_unit: int) -> None:
    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import Layout

    ds = Dataset(Layout.at(root))
    commits = [
        _cpu(lambda: ds.write_shard(unit_table(u, per_unit), f"filter.s.k{u:05d}.o{u:05d}"))[0] for u in range(units)
    ]
    compact_ms = 0.0
    if hasattr(ds, "compact"):
        compact_ms, _ = _cpu(ds.compact)
    reruns = [_cpu(lambda: ds.write_shard(unit_table(u, per_unit, seed=1), f"filter.s.k{u:05d}.o{u:05d}"))[0]
              for u in range(0, units, max(1, units // 50))]
    if hasattr(ds, "compact"):
        ds.compact()
    oid = f"obj-{units // 2:05d}"
    t = time.perf_counter()
    n = Dataset(Layout.at(root)).read_object(oid).num_rows
    cold = (time.perf_counter() - t) * 1e3
    warm = []
    for _ in range(20):
        t = time.perf_counter()
        ds.read_object(oid)
        warm.append((time.perf_counter() - t) * 1e3)
    _report("store", commits, reruns, {"compact CPU ms": f"{compact_ms:.0f}", "data files": _files(ds.p("data")),
                                       "lookup cold ms": f"{cold:.1f}", "warm ms": f"{statistics.median(warm):.1f}",
                                       "rows": n})


def bench_delta(root: str, units: int, per_unit: int) -> None:
    from deltalake import DeltaTable, write_deltalake

    path = os.path.join(root, "delta")

    def with_key(t: pa.Table, key: str) -> pa.Table:
        # delta has no fixed-size lists: store them as lists (readers get lists back)
        cols = [c.cast(pa.list_(c.type.value_type)) if pa.types.is_fixed_size_list(c.type) else c for c in t.columns]
        t = pa.Table.from_arrays(cols, names=t.column_names)
        return t.append_column("shard_key", pa.array([key] * t.num_rows))

    commits = [_cpu(lambda: write_deltalake(path, with_key(unit_table(u, per_unit), f"k{u:05d}"), mode="append"))[0]
               for u in range(units)]
    dt = DeltaTable(path)
    compact_ms, _ = _cpu(lambda: (dt.optimize.compact(), dt.create_checkpoint()))
    reruns = [
        _cpu(
            lambda: write_deltalake(
                path,
                with_key(unit_table(u, per_unit, seed=1), f"k{u:05d}"),
                mode="overwrite",
                predicate=f"shard_key = 'k{u:05d}'",
            )
        )[0]
        for u in range(0, units, max(1, units // 50))
    ]
    oid = f"obj-{units // 2:05d}"
    t = time.perf_counter()
    fresh = DeltaTable(path)
    n = fresh.to_pyarrow_dataset().to_table(filter=pc.field("object_id") == oid).num_rows
    cold = (time.perf_counter() - t) * 1e3
    warm = []
    for _ in range(20):
        t = time.perf_counter()
        fresh.to_pyarrow_dataset().to_table(filter=pc.field("object_id") == oid)
        warm.append((time.perf_counter() - t) * 1e3)
    live = len(DeltaTable(path).file_uris())
    _report("delta", commits, reruns, {"optimize+checkpoint CPU ms": f"{compact_ms:.0f}", "live data files": live,
                                       "log files": _files(os.path.join(path, "_delta_log"), ".json"),
                                       "lookup cold ms": f"{cold:.1f}", "warm ms": f"{statistics.median(warm):.1f}",
                                       "rows": n})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", type=int, default=2000)
    ap.add_argument("--per-unit", type=int, default=216)
    ap.add_argument("--only", choices=["store", "delta"])
    args = ap.parse_args()
    for name, fn in (("store", bench_store), ("delta", bench_delta)):
        if args.only and args.only != name:
            continue
        root = tempfile.mkdtemp(prefix=f"bench-{name}-")
        try:
            fn(root, args.units, args.per_unit)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
