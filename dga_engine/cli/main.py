"""The ``dga-engine`` command line: one verb per stage, each usable alone, no server or cluster needed."""

from __future__ import annotations

import logging

import typer

from dga_engine import __version__
from dga_engine.cli.common import StorageErrorsGroup
from dga_engine.layout import ROOT_ENV

app = typer.Typer(
    name="dga-engine",
    help=(
        "Build and grow a DexGrasp-Anything-style dataset of ShadowHand grasps.\n\n"
        "Every command works on one storage root (--root, $DGA_ROOT, default ./storage): objects, caches, "
        "source datasets, the Parquet dataset, run records and model checkpoints all live under it. "
        "Commands that report results accept --json."
    ),
    no_args_is_help=True,
    cls=StorageErrorsGroup,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    root: str | None = typer.Option(
        None,
        "--root",
        envvar=ROOT_ENV,
        help="Storage root: a folder or an fsspec URL (s3://bucket/prefix; not memory://, which would "
        "vanish at exit). Default ./storage.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages to stderr."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.obj = {"root": root}


# Commands in the order of the DAG they run: the whole build, then each stage, then the dataset and the hand.
from dga_engine.cli import build as _build  # noqa: E402
from dga_engine.cli import generate as _generate  # noqa: E402
from dga_engine.cli import hand as _hand  # noqa: E402
from dga_engine.cli import objects as _objects  # noqa: E402
from dga_engine.cli import shards as _shards  # noqa: E402
from dga_engine.cli.curate import curate as _curate  # noqa: E402
from dga_engine.cli.describe import describe as _describe  # noqa: E402
from dga_engine.cli.export import export_command as _export  # noqa: E402
from dga_engine.cli.filter import filter_command as _filter  # noqa: E402
from dga_engine.cli.refine import refine as _refine  # noqa: E402
from dga_engine.cli.render import render_command as _render  # noqa: E402
from dga_engine.cli.retarget import retarget as _retarget  # noqa: E402
from dga_engine.cli.synthesize import synthesize as _synthesize  # noqa: E402
from dga_engine.cli.view import card_command as _card  # noqa: E402
from dga_engine.cli.view import view_command as _view  # noqa: E402

app.command("build")(_build.build)
app.add_typer(_build.rounds_app, name="rounds")
app.add_typer(_objects.ingest_app, name="ingest")
app.add_typer(_objects.objects_app, name="objects")
app.command("describe")(_describe)
app.command("curate")(_curate)
app.command("retarget")(_retarget)
app.command("synthesize")(_synthesize)
app.command("refine")(_refine)
app.command("filter")(_filter)
_generate.register(app)  # train, generate
app.add_typer(_shards.app, name="shards")
app.command("render")(_render)
app.command("view")(_view)
app.command("card")(_card)
app.command("export")(_export)
app.add_typer(_hand.app, name="hand")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
