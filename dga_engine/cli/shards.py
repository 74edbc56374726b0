"""``dga-engine shards``: list, inspect, verify and query the dataset's Parquet shards."""

from __future__ import annotations

import math
from typing import Any

import typer

from dga_engine.cli.common import JSON_OPTION, console, emit_json, fail, labelled, layout, object_labels, table
from dga_engine.layout import DEFAULT_DATASET

app = typer.Typer(
    help="The sharded grasp dataset: list, inspect, verify and query its Parquet shards.", no_args_is_help=True
)

DATASET_OPTION = typer.Option(DEFAULT_DATASET, "--dataset", "-d", help="Dataset name under <root>/datasets/.")


def _dataset(ctx: typer.Context, name: str):
    from dga_engine.dataset.store import Dataset

    try:
        return Dataset(layout(ctx, existing=True), name)
    except ValueError as exc:  # unsafe dataset name
        raise fail(str(exc))


def _guard(fn, *args, **kwargs):
    """Run a store call, turning the store's known failures into clean CLI errors."""
    from dga_engine.dataset.manifest import SchemaVersionError
    from dga_engine.dataset.store import CorruptShardError, ManifestError
    from dga_engine.lock import LockHeld

    try:
        return fn(*args, **kwargs)
    except (SchemaVersionError, ManifestError, CorruptShardError, LockHeld) as exc:
        raise fail(str(exc))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} ({v})" for k, v in d.items())


@app.command("ls")
def ls(
    ctx: typer.Context,
    dataset: str = DATASET_OPTION,
    as_json: bool = JSON_OPTION,
    max_rows: int = typer.Option(
        50, "--max-rows", help="At most this many shards are printed as a table (JSON lists all)."
    ),
    empty: bool = typer.Option(False, "--empty", help="Also list empty shards (filter units that accepted no grasp)."),
) -> None:
    """List the committed shards: rows, objects (with their labels), rounds, sources, size (a compacted shard's
    share of its files). Empty shards are counted but not listed unless --empty."""
    ds = _dataset(ctx, dataset)
    shards = _guard(ds.shards)
    rows = [m.summary() for m in shards]
    files = sorted({p.path for m in shards for p in m.parts})
    if as_json:
        emit_json({"dataset": ds.name, "path": ds.path, "shards": rows, "rows": sum(r["rows"] for r in rows),
                   "bytes": sum(r["bytes"] for r in rows), "files": len(files)})
        return
    shown = [(m, r) for m, r in zip(shards, rows) if empty or r["rows"]][:max_rows]
    labels = object_labels(ds.layout, sorted({o for m, _ in shown for o in m.object_ids}))
    table(f"Shards of {ds.name} ({ds.path})", ["shard", "rows", "objects", "rounds", "sources", "size", "parts"],
          [(r["shard"], r["rows"], labelled(m.object_ids, labels), _counts(r["rounds"]), _counts(r["sources"]),
            _size(r["bytes"]), len(r["parts"])) for m, r in shown])
    hidden = sum(1 for r in rows if not r["rows"]) if not empty else 0
    listed = len(rows) - hidden
    if listed > max_rows:
        typer.echo(f"... {listed - max_rows} more shards (use --json or --max-rows)")
    typer.echo(f"{len(rows)} shards, {sum(r['rows'] for r in rows)} rows, {_size(sum(r['bytes'] for r in rows))} "
               f"in {len(files)} data files" + (f"; {hidden} empty shards not listed (--empty)" if hidden else ""))


@app.command("show")
def show(ctx: typer.Context, shard: str = typer.Argument(..., help="Shard key (or part name such as KEY-001)."),
         dataset: str = DATASET_OPTION, as_json: bool = JSON_OPTION) -> None:
    """Print one shard's manifest: parts, checksums, objects and column statistics."""
    ds = _dataset(ctx, dataset)
    try:
        m = _guard(ds.shard, shard)
    except KeyError as exc:
        raise fail(exc.args[0])
    stats = m.stats
    if not stats and m.rows:  # a compacted shard: its statistics are computed from its rows
        from dga_engine.dataset.manifest import column_stats

        stats = column_stats(_guard(ds.read_shard, m.key))
    if as_json:
        emit_json(m.to_json())
        return
    typer.echo(f"shard {m.key}  write {m.write_id}  committed {m.created_at}  schema v{m.schema_version}"
               f"{'  split ' + m.split if m.split else ''}")
    typer.echo(f"rows {m.rows}  objects {len(m.object_ids)}  rounds {_counts(m.rounds)}  sources {_counts(m.sources)}")
    labels = object_labels(ds.layout, m.object_ids)
    table("Objects", ["object", "label"], [(o, labels[o]) for o in m.object_ids])
    table("Parts", ["part", "file", "rows", "row groups", "size", "sha256"],
          [(p.name, p.path, p.rows, p.row_groups, _size(p.bytes), p.sha256[:16] + "...") for p in m.parts])
    stat_rows = []
    for col, s in sorted(stats.items()):
        if "true" in s:
            stat_rows.append((col, s["count"], s["nulls"], "", "", s["mean"]))
        elif "std" in s:
            lo, hi, mean = s["min"], s["max"], s["mean"]
            if isinstance(lo, list):  # per component: print the range over components (--json has them all)
                col = f"{col}[{len(lo)}]"
                lo = min((v for v in lo if v is not None), default=None)
                hi = max((v for v in hi if v is not None), default=None)
                mean = "per component"
            stat_rows.append((col, s["count"], s["nulls"], lo, hi, mean))
    table("Column statistics", ["column", "count", "nulls", "min", "max", "mean"], stat_rows)


@app.command("compact")
def compact(
    ctx: typer.Context,
    dataset: str = DATASET_OPTION,
    as_json: bool = JSON_OPTION,
    force: bool = typer.Option(False, "--force", help="Also rewrite a lone under-full compacted file."),
) -> None:
    """Merge the shards committed since the last compaction into large object-sorted files and a new object index.

    Safe while other writers run (they wait on the dataset's commit lock) and at any interruption (the old or
    the new layout stays, both verify). Old datasets (one file per shard) are compacted in place.
    """
    ds = _dataset(ctx, dataset)
    done = _guard(ds.compact, force=force)
    if as_json:
        emit_json(done)
        return
    if not done["compacted"]:
        typer.echo("nothing to compact")
        return
    typer.echo(f"compacted {done['keys']} shards into {done['files_written']} new file(s) ({done['rows']} rows); "
               f"{done['files_removed']} file(s) retired; {done['files']} data files in the snapshot; "
               f"{done['seconds']:.1f} s")


@app.command("repair")
def repair(ctx: typer.Context, dataset: str = DATASET_OPTION, as_json: bool = JSON_OPTION,
           dry_run: bool = typer.Option(False, "--dry-run", help="Only say which units would run again.")) -> None:
    """Rebuild damaged shards: verify, retire each damaged shard and clear the completion records of the units
    that wrote it (found by their ``key`` field), so the next run of that stage redoes exactly those units."""
    from dga_engine.dataset.repair import rerun_damaged

    ds = _dataset(ctx, dataset)
    done = _guard(rerun_damaged, ds, dry_run=dry_run)
    if as_json:
        emit_json(done)
        return
    if not done["actions"] and not done["manual"]:
        typer.echo("nothing to repair: verify found no damaged shard")
        return
    if done["actions"]:
        table("Damaged shards", ["shard", "action", "units"],
              [(a["key"], a["action"], ", ".join(a["units"]) or "-") for a in done["actions"]])
    for m in done["manual"]:
        typer.echo(f"cannot rerun {m['shard']}: {m['problem']}")
    if done["sources"]:
        verb = "would need" if dry_run else "now redo"
        typer.echo(f"the next runs of {', '.join(done['stages'])} {verb} these units: "
                   + "; ".join(f"dga-engine filter --source {s}" for s in done["sources"]))


@app.command("verify")
def verify(
    ctx: typer.Context,
    dataset: str = DATASET_OPTION,
    as_json: bool = JSON_OPTION,
    repair: bool = typer.Option(
        False, "--repair", help="First rebuild meta/info.json and delete unreferenced files older than --min-age."
    ),
    min_age: float = typer.Option(
        3600.0, "--min-age", help="Seconds: younger unreferenced files may belong to a write in progress and are kept."
    ),
    no_checksums: bool = typer.Option(
        False,
        "--no-checksums",
        help="Skip the sha256 of each file (faster; sizes, footers and counts are still checked).",
    ),
) -> None:
    """Check every shard against its manifest (checksum, schema, rows, row groups) and the summary; exit 1 on errors."""
    ds = _dataset(ctx, dataset)
    from dga_engine import fs

    if not fs.exists(ds.path):
        raise fail(f"no dataset {dataset!r} under {layout(ctx).root}: check --root / $DGA_ROOT (nothing to verify)")
    if repair:
        done = _guard(ds.repair, min_age_s=min_age)
        if done.get("refused"):
            console.print(f"repair: {done['refused']}")
        else:
            console.print(
                f"repair: rebuilt meta/info.json; removed {len(done['removed'])} file(s)"
                + (f"; kept {len(done['kept_young'])} younger than {min_age:g} s" if done["kept_young"] else "")
            )
    report = ds.verify(checksums=not no_checksums)
    if as_json:
        emit_json(report.to_dict())
    else:
        if report.bad:
            table(
                "Problems", ["level", "shard", "problem"], [(b["level"], b["shard"], b["problem"]) for b in report.bad]
            )
        typer.echo(f"{'ok' if report.ok else 'FAILED'}: {report.shards} shards, {report.rows} rows, "
                   f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    if not report.ok:
        raise fail(f"bad shards: {', '.join(report.bad_shards())}")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


@app.command("query")
def query(
    ctx: typer.Context,
    sql: str = typer.Argument(..., help="DuckDB SQL over the views grasps, rejects and shards."),
    dataset: str = DATASET_OPTION,
    as_json: bool = JSON_OPTION,
    max_rows: int = typer.Option(
        200, "--max-rows", help="At most this many rows are printed as a table (JSON prints all)."
    ),
) -> None:
    """Run SQL over the committed shards (view ``grasps``), the rejects (``rejects``) and the part list (``shards``)."""
    import duckdb

    from dga_engine.dataset.query import QueryRefused, query_warnings

    ds = _dataset(ctx, dataset)
    try:
        result = _guard(ds.query, sql)
    except duckdb.Error as exc:
        raise fail(f"query failed: {exc}")
    except QueryRefused as exc:
        raise fail(str(exc))
    for w in query_warnings(result):
        console.print(f"warning: {w}")
    rows = result.to_pylist()
    if as_json:
        emit_json({"columns": result.column_names, "rows": [_jsonable(r) for r in rows]})
        return
    table(
        f"{result.num_rows} rows", result.column_names, [[r[c] for c in result.column_names] for r in rows[:max_rows]]
    )
    if result.num_rows > max_rows:
        typer.echo(f"... {result.num_rows - max_rows} more rows (use --json or a LIMIT)")
