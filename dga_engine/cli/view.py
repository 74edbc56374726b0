"""``dga-engine view`` (browse grasps in a browser) and ``dga-engine card`` (the dataset card for the Hub)."""

from __future__ import annotations

import typer

from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout
from dga_engine.layout import DEFAULT_DATASET


def view_command(
    ctx: typer.Context,
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Dataset to open first (default: the first one)."),
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="Port on 127.0.0.1."),
) -> None:
    """Browse the grasps in a local web app (viser) on http://127.0.0.1:PORT.

    Pick dataset -> accepted / rejects / candidates -> source, round, reject reason -> object -> grasp; step through
    the grasps; see the six push displacements, both penetrations and the contact count; tick "compare raw" to see
    a refined grasp beside the raw candidate it came from. The hand is posed by the engine's forward kinematics.
    Stop with Ctrl-C.
    """
    import time

    from dga_engine.viz.viewer import serve

    try:
        viewer = serve(layout(ctx, existing=True), dataset, port=port)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise fail(str(exc))
    typer.echo(f"viewer on http://127.0.0.1:{port}  (Ctrl-C stops it)")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        viewer.stop()


def card_command(
    ctx: typer.Context,
    dataset: str = typer.Option(DEFAULT_DATASET, "--dataset", "-d", help="Dataset name under <root>/datasets/."),
    render: bool = typer.Option(
        True,
        "--render/--no-render",
        help="Include a grid of rendered grasps (needs an offscreen GL backend, see `render`).",
    ),
    grid: int = typer.Option(
        8, "--grid", min=1, max=64, help="Grasps in the rendered grid (one per object, most-grasped objects first)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Write datasets/<name>/README.md, the dataset card the Hugging Face Hub and `datasets.load_dataset(<folder>)`
    read.

    Its YAML `configs:` make accepted grasps the default config and rejects and candidates their own configs
    (file globs, valid however shards are rewritten). The card states the conventions, the filter protocol and
    version, the hand model and its hash, counts per source/round/reason, licences by source (a CC BY-NC source
    makes the whole dataset non-commercial) and figures (PNG in figures/).
    """
    from dga_engine.dataset.store import Dataset
    from dga_engine.viz.card import write_card
    from dga_engine.viz.gl import RenderBackendError

    ds = Dataset(layout(ctx, existing=True), dataset)
    if not ds.exists():
        raise fail(f"dataset {dataset!r} does not exist under {ds.path}")
    try:
        report = write_card(ds, render=render, grid_count=grid)
    except RenderBackendError as exc:
        raise fail(f"{exc} (or pass --no-render)")
    if as_json:
        emit_json(report.to_dict())
    else:
        typer.echo(f"wrote {report.path}: {report.accepted} accepted, {report.rejected} rejected, {report.candidates} "
                   f"candidates; licence {report.licence}{' (non-commercial)' if report.non_commercial else ''}; "
                   f"{len(report.figures)} figures")
