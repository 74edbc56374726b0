"""``dga-engine render``: pictures of grasps (MuJoCo's offscreen renderer, headless) to PNG."""

from __future__ import annotations

import typer

from dga_engine.cli.choices import GraspKind
from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout, progress
from dga_engine.layout import DEFAULT_DATASET


def render_command(
    ctx: typer.Context,
    out: str = typer.Option(..., "--out", "-o", help="PNG file to write."),
    object_id: str | None = typer.Option(
        None, "--object", help="Object id (default: the first object that has grasps of --kind)."
    ),
    grasp_id: list[str] | None = typer.Option(None, "--grasp", help="Only these grasp ids (repeatable)."),
    kind: GraspKind = typer.Option("accepted", "--kind", help="accepted | rejects | candidates."),
    reason: str | None = typer.Option(None, "--reason", help="Rejects only: this reject reason (e.g. unstable)."),
    source: str | None = typer.Option(None, "--source", help="Only grasps of this source."),
    round_: int | None = typer.Option(None, "--round", help="Only grasps of this round."),
    n: int = typer.Option(
        1, "-n", "--count", min=1, max=400, help="How many grasps: 1 draws one picture, more a grid."
    ),
    columns: int | None = typer.Option(None, "--columns", min=1, help="Grid columns (default: about square)."),
    verdict: bool = typer.Option(
        False,
        "--colour-by-verdict",
        help="Tint each hand by its verdict (accepted / reject reason / candidate) and label the tiles.",
    ),
    size: int = typer.Option(480, "--size", min=64, max=2048, help="Tile width and height in pixels."),
    azimuth: float = typer.Option(150.0, "--azimuth", help="Camera azimuth, degrees, in the hand's forearm frame."),
    elevation: float = typer.Option(-25.0, "--elevation", help="Camera elevation, degrees."),
    collision: bool = typer.Option(
        False,
        "--collision",
        help="Draw what the filter simulates (collision capsules, convex parts) instead of the visual meshes.",
    ),
    dataset: str = typer.Option(DEFAULT_DATASET, "--dataset", "-d", help="Dataset name under <root>/datasets/."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Draw one grasp, or a grid of grasps of one object, with MuJoCo's own renderer in the filter's scene.

    Headless: the GL backend is $MUJOCO_GL (osmesa by default, CPU only, needs Debian's libosmesa6; or egl).
    The hand is the ShadowHand's visual meshes from the installed gymnasium-robotics; the object is its stored mesh.
    """
    from dga_engine.dataset.store import Dataset
    from dga_engine.objects.store import ObjectNotFound
    from dga_engine.viz.gl import RenderBackendError
    from dga_engine.viz.render import View, object_loader, render_grid, save_png
    from dga_engine.viz.select import load_grasps

    lay = layout(ctx, existing=True)
    try:
        ds = Dataset(lay, dataset)
        table = load_grasps(
            ds, kind, object_id=object_id, source=source, round_=round_, reason=reason, grasp_ids=grasp_id
        )
    except ValueError as exc:
        raise fail(str(exc))
    if table.num_rows == 0:
        raise fail(f"no {kind} grasps match in dataset {dataset!r} (see `dga-engine shards ls`)")
    if object_id is None:
        first = table.column("object_id")[0].as_py()
        table = table.filter(table.column("object_id").to_numpy(zero_copy_only=False) == first)
        object_id = first
    table = table.slice(0, n)
    try:
        view = View(width=size, height=size, azimuth=azimuth, elevation=elevation, collision=collision)
        with progress("render", table.num_rows, enabled=not as_json and table.num_rows > 1) as advance:
            image = render_grid(
                table, object_loader(lay), view, columns=columns, colour_by_verdict=verdict, progress=advance
            )
        save_png(image, out)
    except (RenderBackendError, ObjectNotFound, ValueError) as exc:
        raise fail(str(exc.args[0] if isinstance(exc, ObjectNotFound) else exc))
    result = {"out": out, "object_id": object_id, "grasps": table.column("grasp_id").to_pylist(),
              "width": int(image.shape[1]), "height": int(image.shape[0])}
    if as_json:
        emit_json(result)
    else:
        typer.echo(f"wrote {out} ({result['width']}x{result['height']}, {table.num_rows} grasp(s) of {object_id})")
