"""``dga-engine curate``: import a downloaded source dataset's objects and grasps as filter candidates."""

from __future__ import annotations

import inspect

import typer

from dga_engine.cli.choices import CurateSource
from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout, progress, table

_LAYOUTS = """Expected layouts under the source folder (default <root>/sources/<source>):

dexgraspnet  dataset/<code>.npy, meshdata/<code>/coacd/decomposed.obj [, splits.json]
unidexgrasp  [DFCData/]splits/<src>.json, poses/<src>/<Category-id>/NNNNN.npz,
             meshes/<src>/<Category-id>/coacd/decomposed.obj
multidex     [MultiDex/]shadowhand/shadowhand.pt, [data/]object/{contactdb,ycb}/<name>/<name>.stl
realdex      realdex_shadowhand.pt + grasp.json + object_pcds_nors.pkl (DGA's Realdex.zip), and/or raw <object>/*.npz;
             meshes as meshes/<name>.obj (or --mesh-dir)
dga          any *_shadowhand*.pt of the DexGrasp-Anything release with its grasp.json and object_pcds_nors.pkl;
             meshes (not in the release) under meshes/, meshdata/, object/ next to it, the source folder or --mesh-dir
grab         GRAB as unzipped: grab/s1..s10/<object>_<intent>[_n].npz, tools/object_meshes/contact_meshes/<object>.ply,
             tools/subject_meshes/*/s<k>_rhand.ply; needs the licensed MANO_RIGHT.pkl (--mano-model or $DGA_MANO_MODEL).
             Right-hand contact frames are retargeted to the ShadowHand (see `dga-engine retarget --help`)
"""


def curate(
    ctx: typer.Context,
    source: CurateSource = typer.Option(
        ..., "--source", help="dexgraspnet | unidexgrasp | multidex | realdex | dga | grab"
    ),
    path: str | None = typer.Option(
        None, "--path", help="Source folder as downloaded (default <root>/sources/<source>)."
    ),
    mesh_dir: list[str] | None = typer.Option(
        None, "--mesh-dir", help="Extra folder searched for object meshes (repeatable)."
    ),
    dataset: str = typer.Option("dga", "--dataset", help="Dataset whose candidates area receives the grasps."),
    scale_mode: str = typer.Option(
        "auto",
        "--scale-mode",
        help="dga: what a release file's 'scale' means: auto (from the file name) | multiply | divide.",
    ),
    verify: int = typer.Option(64, "--verify", min=0, help="Grasps per object and file checked by forward kinematics."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip files curated by an earlier run."),
    max_units: int | None = typer.Option(
        None, "--max-units", min=1, help="Stop after this many files/folders (trial runs)."
    ),
    mano_model: str | None = typer.Option(
        None,
        "--mano-model",
        envvar="DGA_MANO_MODEL",
        help="grab: your MANO_RIGHT.pkl (licensed; register at mano.is.tue.mpg.de).",
    ),
    frame_stride: int = typer.Option(
        1, "--frame-stride", min=1, help="grab, raw realdex: consider every n-th frame of a sequence."
    ),
    min_change_mm: float = typer.Option(
        5.0,
        "--min-change-mm",
        min=0.0,
        help="grab: keep a contact frame only when a hand keypoint moved this far since the last kept one.",
    ),
    tolerance_mm: float | None = typer.Option(
        None,
        "--tolerance-mm",
        min=0.0,
        help="Largest fingertip disagreement with the source's hand model (grab: with the "
        "MANO hand after retargeting; default 25); worse grasps are skipped.",
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Read a source dataset exactly as it ships, convert every grasp to the engine's convention (checked by
    forward kinematics against the source's own hand model), ingest its objects and write the grasps,
    unfiltered and with provenance, as candidates. Then run `dga-engine filter --source <source>`.

    Unreadable or unsafe files (pickles naming anything but numpy/torch containers) are skipped and listed;
    objects whose mesh is missing are listed with their grasp counts. Exit code 1 when nothing was written.
    """
    from dga_engine.sources.curate import SOURCES, CurateConfig, CurateError
    from dga_engine.sources.curate import curate as run

    if source not in SOURCES:
        raise fail(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    config = CurateConfig(path=path, dataset=dataset, mesh_dirs=tuple(mesh_dir or ()), scale_mode=scale_mode,
                          verify_samples=verify, resume=resume, max_units=max_units, mano_model=mano_model,
                          frame_stride=frame_stride, min_change_mm=min_change_mm, tolerance_mm=tolerance_mm)
    lay = layout(ctx)
    try:
        with progress(f"curate {source}", total=None, enabled=not as_json) as advance:
            report = run(lay, source, config, advance=advance)
    except (CurateError, ValueError) as exc:
        raise fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
    else:
        table(
            f"curate {source}",
            ["what", "count"],
            [
                ("files/folders", report.units_total),
                ("processed now", report.units_done),
                ("done earlier", report.units_resumed),
                ("objects ingested", len(report.objects)),
                ("objects without mesh", len(report.missing_objects)),
                ("grasps written", report.grasps_written),
                ("of which outside joint limits", report.grasps_out_of_limits),
                ("grasps skipped (no object)", report.grasps_missing_object),
                ("malformed records", report.bad_records),
                ("unreadable files", len(report.skipped_files)),
            ],
        )
        typer.echo("FK fingertip residual vs the source model (mm, max): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in report.fk_residual_mm.items()))
        for f, why in report.skipped_files[:20]:
            typer.echo(f"skipped {f}: {why}")
        for key, why in list(report.missing_objects.items())[:20]:
            typer.echo(f"object {key} not ingested: {why}")
        for w in report.warnings[:20]:
            typer.echo(f"warning: {w}")
        if report.grasps_written:
            typer.echo(f"next: dga-engine filter --source {source}")
    if report.grasps_written == 0 and report.units_done > 0:
        raise typer.Exit(1)


curate.__doc__ = inspect.cleandoc(curate.__doc__ or "") + "\n\n" + _LAYOUTS
