"""``dga-engine filter``: a source's grasps through curate (raw sources), refine and the physics filter."""

from __future__ import annotations

import typer

from dga_engine.cli.choices import Backend, Protocol, RefinePreset
from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout, progress_done_of, table
from dga_engine.cli.refine import PRESET_HELP, default_preset, load_refine_config, refine_rows, run_refine_with_progress


def filter_command(
    ctx: typer.Context,
    source: str = typer.Option(
        ...,
        "--source",
        help="The source to filter: a source dataset (dexgraspnet, unidexgrasp, "
        "multidex, realdex, dga), or a candidate source such as synthesis or generator.",
    ),
    path: str | None = typer.Option(
        None,
        "--path",
        help="A source dataset's folder as downloaded (default "
        "<root>/sources/<source>); for other sources, a Parquet file or folder (GRASP_SCHEMA) "
        "filtered as it is.",
    ),
    refine: bool = typer.Option(
        True,
        "--refine/--no-refine",
        help="Refine near misses first (default); --no-refine gives the raw verdict of every candidate.",
    ),
    refine_preset: RefinePreset | None = typer.Option(None, "--refine-preset", help=PRESET_HELP),
    refine_config: str | None = typer.Option(None, "--refine-config", help="JSON file of RefineConfig fields."),
    mesh_dir: list[str] | None = typer.Option(
        None, "--mesh-dir", help="Source datasets: extra folder searched for meshes."
    ),
    backend: Backend = typer.Option(
        "mujoco", "--backend", help="mujoco (CPU, default) | mujoco-warp (GPU) | isaacgym (GPU, Isaac Gym Preview 4)."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Worker processes (mujoco backend); results do not depend on it."
    ),
    dataset: str = typer.Option("dga", "--dataset", help="Dataset that receives accepted shards and rejects."),
    protocol: Protocol = typer.Option(
        "dga-engine",
        "--protocol",
        help="Preset: dga-engine (default, tuned for MuJoCo) | "
        "dga-reference (DGA's Isaac Gym evaluator emulated; see docs/filter.md).",
    ),
    config_file: str | None = typer.Option(
        None, "--config", help="JSON file of FilterConfig fields overriding the preset's."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Put a source's grasps through the physics filter and into the dataset: for a source dataset, curate
    what is not yet curated (from --path or <root>/sources/<source>), refine near misses (joints past the
    hand's limits, a millimetre or two of penetration, fixed by bounded moves; see `dga-engine refine`),
    then simulate every grasp (close the fingers, push the object along +-x, +-y, +-z of its frame) and
    check penetration. Accepted grasps become shards, the rest rejects with their reason.

    Resumable: every step skips the work it already did for the same input and settings.
    """
    import json

    from dga_engine.simulate.backends import BackendUnavailable, check_backend
    from dga_engine.simulate.config import FilterConfig
    from dga_engine.simulate.metrics import LEGEND
    from dga_engine.simulate.metrics import rows as metric_rows
    from dga_engine.simulate.stage import run_filter
    from dga_engine.sources.curate import SOURCES

    try:
        config = FilterConfig.preset(protocol)
    except ValueError as exc:
        raise fail(f"bad --protocol: {exc}")
    try:
        if config_file:
            with open(config_file) as fh:
                config = FilterConfig.from_dict({**config.to_dict(), **json.load(fh)})
    except (OSError, ValueError, TypeError) as exc:
        raise fail(f"bad --config {config_file}: {exc}")
    refine_settings = load_refine_config(refine_preset or default_preset(source), refine_config) if refine else None
    try:
        check_backend(backend)  # before any curating or refining
    except (BackendUnavailable, ValueError) as exc:
        raise fail(str(exc))

    lay = layout(ctx)
    curated = None
    parquet_path = path
    if source in SOURCES:
        curated = _curate_raw_source(lay, source, path, dataset, mesh_dir, as_json)
        parquet_path = None
    elif refine and path is not None:
        raise fail("--path with Parquet files is filtered as it is: add --no-refine (or write the rows as candidates "
                   "of a source and refine that)")

    refined = None
    if refine_settings is not None:
        refined = run_refine_with_progress(ctx, source, refine_settings, dataset, workers, config, as_json)

    try:
        with progress_done_of(f"filter {source}", enabled=not as_json) as update:
            summary = run_filter(
                lay,
                source=source,
                path=parquet_path,
                backend=backend,
                workers=workers,
                dataset=dataset,
                config=config,
                refined=refined is not None,
                progress=update,
            )
    except BackendUnavailable as exc:
        raise fail(str(exc))
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc))
    from dga_engine.dataset.store import Dataset

    Dataset(lay, dataset).compact()  # the run's many small shards become a few large files

    m = summary.metrics
    if as_json:
        emit_json({
            "total": summary.total,
            "accepted": summary.accepted,
            "rejected": summary.rejected,
            "reasons": summary.reasons,
            "metrics": {k: m.get(k) for k in ("suc1", "suc6", "pen_mm", "pen_succ_mm", "pen_hand_object_mm",
                                              "pen_object_hand_mm", "pen_object_hand_sum_mm", "div", "div_ddof1",
                                              "object_success", "n_simulated")},
            "units_done": summary.units_done,
            "units_skipped": summary.units_skipped,
            "skipped_files": summary.skipped_files,
            "backend": summary.backend,
            "protocol_version": summary.protocol_version,
            "seconds": round(summary.seconds, 3),
            "curate": curated.to_dict() if curated is not None else None,
            "refine": refined.to_dict() if refined is not None else None,
        })
        return
    if curated is not None and curated.units_done:
        typer.echo(f"curate {source}: {curated.grasps_written} grasps from {curated.units_done} files "
                   f"({curated.units_resumed} done earlier)")
    if refined is not None:
        table(f"refine {source}: {refined.preset}", ["what", "value"], refine_rows(refined))
    typer.echo(f"filter {source}: {summary.total} grasps in {summary.units_done} units; "
               f"{summary.units_skipped} units already done")
    table(
        "outcome",
        ["outcome", "grasps"],
        [("accepted", summary.accepted), ("rejected", summary.rejected)]
        + [(f"  {k}", v) for k, v in summary.reasons.items()],
    )
    if summary.total:
        table("metrics", ["metric", "value", "meaning"], [(k, v, LEGEND.get(k, "")) for k, v in metric_rows(m)])
    for item in summary.skipped_files[:20]:
        typer.echo(f"skipped unreadable candidates {item['key']}: {item['reason']}")
    typer.echo(f"protocol {summary.protocol_version}, backend {summary.backend}, {summary.seconds:.1f} s")


def _curate_raw_source(lay, source: str, path: str | None, dataset: str, mesh_dir, quiet: bool):
    """Curate what is not yet curated of a source dataset; None when there is no raw folder (candidates may exist)."""
    from dga_engine import fs
    from dga_engine.cli.common import progress
    from dga_engine.sources.curate import CurateConfig, CurateError, curate

    if path is None and not fs.exists(lay.source(source)):
        return None
    config = CurateConfig(path=path, dataset=dataset, mesh_dirs=tuple(mesh_dir or ()))
    try:
        with progress(f"curate {source}", total=None, enabled=not quiet) as advance:
            return curate(lay, source, config, advance=advance)
    except (CurateError, ValueError) as exc:
        raise fail(str(exc))
