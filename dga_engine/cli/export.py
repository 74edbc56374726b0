"""``dga-engine export``: the accepted grasps in the layouts other projects read, checked by forward kinematics."""

from __future__ import annotations

import typer

from dga_engine.cli.choices import ExportFormat
from dga_engine.cli.common import JSON_OPTION, console, emit_json, fail, layout, progress, table
from dga_engine.layout import DEFAULT_DATASET


def export_command(
    ctx: typer.Context,
    fmt: ExportFormat = typer.Option(..., "--format", "-f", help="dexgraspnet | dga | bodex | mjcf-keyframes."),
    out: str = typer.Option(..., "--out", "-o", help="Output folder (created; files of the same names are replaced)."),
    where: str | None = typer.Option(None, "--filter", help="SQL condition on the grasps view, e.g. "
                                        "\"suc6 AND pen_hand_object_mm < 2\" or \"source = 'synthesis'\"."),
    dataset: str = typer.Option(DEFAULT_DATASET, "--dataset", "-d", help="Dataset name under <root>/datasets/."),
    open_fraction: float = typer.Option(0.2, "--open-fraction", help="bodex only: the pre-grasp opens every joint by "
                                        "this fraction toward zero; squeeze = 2 grasp - pregrasp."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write the dataset's accepted grasps (or those matching --filter) as another project's files, then verify them.

    \b
    dexgraspnet     dataset/<object>.npy qpos dicts (DexGraspNet's joint names, euler 'sxyz' palm root) + meshdata/
    dga             dga_engine_shadowhand.pt metadata list (sr_grasp_description URDF) + object_pcds_nors.pkl +
    grasp.json
    bodex           DexGraspBench graspdata/<object>/<k>.npy with 29-D pregrasp/grasp/squeeze qpos + objects/
    mjcf-keyframes  <object>-s<scale>.xml: the filter's MuJoCo scene with one keyframe per grasp

    Every file is read back with our loader for its layout and the fingertips must land within 0.1 mm of the
    exported grasp's (exit code 1 otherwise). The fingertip gap between that format's hand model and ours is
    reported too (model differences, not export errors).
    """
    from dga_engine.export.stage import ExportError, export_dataset

    options = {"open_fraction": open_fraction} if fmt == "bodex" else {}
    try:
        with progress(f"export {fmt}", None, enabled=not as_json) as advance:
            report = export_dataset(
                layout(ctx, existing=True), fmt, out, dataset=dataset, where=where, progress=advance, **options
            )
    except (ExportError, ValueError) as exc:
        raise fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
    else:
        table(f"export {fmt} -> {report.out}", ["grasps", "objects", "files", "round trip (mm)", "tolerance (mm)",
                                                   "model gap ff/mf/rf/lf/th (mm)", "verified"],
              [(report.grasps, report.objects, report.files, f"{report.roundtrip_max_mm:.2e}", report.tolerance_mm,
                " / ".join(f"{x:.2f}" for x in report.model_residual_max_mm), report.verified)])
        typer.echo(f"hand model of the files: {report.hand_model}")
        for oid, why in report.skipped_objects.items():
            console.print(f"[yellow]skipped[/] {oid}: {why}")
    if not report.verified:
        raise fail(
            f"round trip {report.roundtrip_max_mm:.4f} mm exceeds {report.tolerance_mm} mm: the export is not faithful"
        )
