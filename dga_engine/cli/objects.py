"""``dga-engine ingest ...`` (builtin, local, objaverse) and ``dga-engine objects ls|show``."""

from __future__ import annotations

import typer

from dga_engine.cli.common import JSON_OPTION, console, emit_json, fail, layout, progress, table

ingest_app = typer.Typer(
    help=(
        "Turn mesh sources into clean, metric, watertight, decomposed, sampled objects in the storage root. "
        "Re-ingesting the same mesh is a no-op (skipped); bad inputs are quarantined with a reason and the "
        "batch goes on."
    ),
    no_args_is_help=True,
)
objects_app = typer.Typer(help="List and inspect processed objects (and quarantined inputs).", no_args_is_help=True)

PROCESSES = typer.Option(1, "--processes", "-p", min=1, help="Worker processes (CoACD itself uses ~1.5 cores per run).")
SCALES = typer.Option(
    None, "--scales",
    help="Comma-separated grasp sizes in metres (e.g. 0.06,0.08,0.1): one object per size, ids end in -s<mm>. "
         "Default: keep metric meshes of graspable size, scale others to 8 cm.",
)
THRESHOLD = typer.Option(0.05, "--coacd-threshold", help="CoACD concavity threshold (lower = more, finer parts).")
MAX_PARTS = typer.Option(16, "--max-parts", help="Cap on convex parts per object.")
TIMEOUT = typer.Option(
    300.0, "--coacd-timeout", help="CoACD time limit per object in seconds; over it the object is quarantined."
)
MAX_FACES = typer.Option(500_000, "--max-faces", help="Inputs with more faces are quarantined.")


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    return out


def _config(scales: str | None, threshold: float, max_parts: int, timeout: float, max_faces: int):
    from dga_engine.objects.ingest import IngestConfig

    try:
        sizes = tuple(float(x) for x in _split([scales])) if scales else ()
        return IngestConfig(scales=sizes, coacd_threshold=threshold, coacd_max_parts=max_parts,
                            coacd_timeout_s=timeout, max_faces=max_faces)
    except ValueError as exc:
        raise fail(f"bad ingest option: {exc}") from None


def _finish(report, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    t = report.timings
    console.print(
        f"ingested {len(report.ingested)}, skipped {len(report.skipped)} (already stored), "
        f"quarantined {len(report.quarantined)} in {t.get('wall', 0):.1f} s "
        f"({report.objects_per_minute():.1f} objects/min with {report.processes} process(es); "
        f"CoACD {t.get('decompose', 0):.1f} s)"
    )
    if report.quarantine:
        table("Quarantined (see dga-engine objects ls --quarantined)", ["input", "reason"],
              [(q["path"], q["reason"]) for q in report.quarantine])
    for note in report.notes:
        console.print(f"[yellow]note:[/] {note}")


@ingest_app.command("builtin")
def ingest_builtin_cmd(
    ctx: typer.Context,
    names: list[str] | None = typer.Option(
        None, "--names", help="Builtin names (comma-separated or repeated). Default: all."
    ),
    demo: int | None = typer.Option(None, "--demo", min=1, help="Only a varied, quick subset of this many shapes."),
    list_names: bool = typer.Option(False, "--list", help="Print the builtin names and labels and exit."),
    processes: int = PROCESSES,
    scales: str | None = SCALES,
    threshold: float = THRESHOLD,
    max_parts: int = MAX_PARTS,
    timeout: float = TIMEOUT,
    max_faces: int = MAX_FACES,
    as_json: bool = JSON_OPTION,
) -> None:
    """Ingest the embedded default set: procedurally generated everyday-sized shapes (deterministic ids)."""
    from dga_engine.objects.builtin import BUILTIN_NAMES, UnknownBuiltinError, builtin_label, builtin_shape, demo_subset
    from dga_engine.objects.ingest import ingest_builtin

    if list_names:
        if as_json:
            emit_json([{"name": n, "label": builtin_label(n)} for n in BUILTIN_NAMES])
        else:
            table("Builtin objects", ["name", "label"], [(n, builtin_label(n)) for n in BUILTIN_NAMES])
        return
    chosen = _split(names) or (demo_subset(demo) if demo else list(BUILTIN_NAMES))
    try:
        for n in chosen:
            builtin_shape(n)
    except UnknownBuiltinError as exc:
        raise fail(str(exc.args[0])) from None
    config = _config(scales, threshold, max_parts, timeout, max_faces)
    lay = layout(ctx)  # a bad root fails here, before the progress bar
    with progress("ingest builtin", len(chosen), enabled=not as_json) as advance:
        report = ingest_builtin(lay, chosen, processes, config, progress=advance)
    _finish(report, as_json)


@ingest_app.command("local")
def ingest_local_cmd(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(
        ..., help="Mesh files (obj, stl, ply, off, glb, gltf) or folders of them (recursive)."
    ),
    label: str | None = typer.Option(None, "--label", help="Label for every object (default: the file name)."),
    licence: str = typer.Option("unknown", "--licence", help="Licence recorded for these objects."),
    processes: int = PROCESSES,
    scales: str | None = SCALES,
    threshold: float = THRESHOLD,
    max_parts: int = MAX_PARTS,
    timeout: float = TIMEOUT,
    max_faces: int = MAX_FACES,
    as_json: bool = JSON_OPTION,
) -> None:
    """Ingest local mesh files and folders."""
    from dga_engine.objects.ingest import find_mesh_files, ingest_paths

    config = _config(scales, threshold, max_parts, timeout, max_faces)
    files = find_mesh_files(paths)
    if not files:
        raise fail(f"no mesh files found in {', '.join(paths)} (looking for obj, stl, ply, off, glb, gltf)")
    lay = layout(ctx)  # a bad root fails here, before the progress bar
    with progress("ingest local", len(files), enabled=not as_json) as advance:
        report = ingest_paths(lay, paths, processes, config, licence=licence, label=label, progress=advance)
    _finish(report, as_json)


@ingest_app.command("objaverse")
def ingest_objaverse_cmd(
    ctx: typer.Context,
    categories: str | None = typer.Option(
        None, "--categories", help="Comma-separated LVIS categories (e.g. mug,bottle)."
    ),
    preset: str | None = typer.Option(
        None, "--preset", help="'paper': the 18 graspable LVIS categories we chose for the paper's setup."
    ),
    per_category: int = typer.Option(
        10, "--per-category", "-n", min=1, help="Objects per category (even distribution)."
    ),
    cache_dir: str | None = typer.Option(
        None, "--cache-dir", help="Objaverse cache tree (hf-objaverse-v1 layout); default ~/.objaverse/hf-objaverse-v1."
    ),
    no_download: bool = typer.Option(
        False, "--no-download", help="Use only objects already in the cache tree (offline)."
    ),
    download_processes: int = typer.Option(1, "--download-processes", min=1, help="Parallel downloads."),
    processes: int = PROCESSES,
    scales: str | None = SCALES,
    threshold: float = THRESHOLD,
    max_parts: int = MAX_PARTS,
    timeout: float = TIMEOUT,
    max_faces: int = MAX_FACES,
    as_json: bool = JSON_OPTION,
) -> None:
    """Ingest an even number of Objaverse LVIS objects per category, chosen for broad tag coverage."""
    from dga_engine.objects.objaverse_source import PAPER_CATEGORIES, ObjaverseError, ingest_objaverse

    if preset not in (None, "paper"):
        raise fail(f"unknown preset {preset!r}: the only preset is 'paper'")
    cats = _split([categories]) if categories else list(PAPER_CATEGORIES)
    if categories and preset:
        raise fail("give either --categories or --preset, not both")
    config = _config(scales, threshold, max_parts, timeout, max_faces)
    lay = layout(ctx)  # a bad root fails here, before the progress bar
    try:
        with progress("ingest objaverse", None, enabled=not as_json) as advance:
            report = ingest_objaverse(lay, cats, per_category, processes, config, cache_dir=cache_dir,
                                      download=not no_download, download_processes=download_processes, progress=advance)
    except ObjaverseError as exc:
        raise fail(str(exc)) from None
    _finish(report, as_json)


@objects_app.command("ls")
def objects_ls(
    ctx: typer.Context,
    quarantined: bool = typer.Option(False, "--quarantined", help="List quarantined inputs and their reasons instead."),
    as_json: bool = JSON_OPTION,
) -> None:
    """List processed objects (id, label, source, size, parts) or quarantined inputs."""
    from dga_engine.objects.ingest import quarantine_records
    from dga_engine.objects.store import ObjectStore

    lay = layout(ctx, existing=True)
    if quarantined:
        records = quarantine_records(lay)
        if as_json:
            emit_json(records)
        else:
            table(f"Quarantined inputs ({len(records)})", ["key", "input", "stage", "reason"],
                  [(r.get("key"), r.get("path"), r.get("stage", ""), r.get("reason")) for r in records])
        return
    store = ObjectStore(lay)
    metas = []
    for oid in store.ids():
        try:
            metas.append(store.meta(oid))
        except ValueError as exc:  # an object from another schema version: show it, say why
            console.print(f"[yellow]skipping {oid}:[/] {exc}")
    if as_json:
        from dataclasses import asdict

        emit_json([asdict(m) for m in metas])
        return
    table(
        f"Objects ({len(metas)})",
        ["id", "label", "source", "source id", "size (cm)", "parts", "watertight"],
        [
            (
                m.object_id,
                m.label,
                m.source,
                m.source_id,
                " x ".join(f"{e * 100:.1f}" for e in m.extents),
                m.n_parts,
                m.watertight,
            )
            for m in metas
        ],
    )


@objects_app.command("show")
def objects_show(
    ctx: typer.Context,
    object_id: str = typer.Argument(..., help="Object id (see objects ls)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show one object's metadata, decomposition and files."""
    from dataclasses import asdict

    from dga_engine.layout import UnsafeNameError
    from dga_engine.objects.store import ObjectNotFound, ObjectStore

    store = ObjectStore(layout(ctx, existing=True))
    try:
        meta = store.meta(object_id)
    except (ObjectNotFound, UnsafeNameError) as exc:
        raise fail(str(exc.args[0])) from None
    data = asdict(meta)
    data["path"] = store.layout.object_dir(object_id)
    if as_json:
        emit_json(data)
        return
    table(f"Object {object_id}", ["field", "value"],
          [(k, v) for k, v in data.items() if k not in ("extra", "decomposition")]
          + [(f"decomposition.{k}", v) for k, v in meta.decomposition.items()]
          + [(f"extra.{k}", v) for k, v in meta.extra.items()])
