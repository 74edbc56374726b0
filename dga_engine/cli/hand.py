"""``dga-engine hand``: the hand model the engine uses."""

from __future__ import annotations

import typer

from dga_engine.cli.common import JSON_OPTION, emit_json, table

app = typer.Typer(help="The ShadowHand model: joints, limits, links and point sets.", no_args_is_help=True)


@app.command("info")
def info(as_json: bool = JSON_OPTION) -> None:
    """Print the 24 joints in order with their limits (radians), the links and the point-set sizes."""
    from dga_engine.hand import default_hand

    data = default_hand().info()
    if as_json:
        emit_json(data)
        return
    table("ShadowHand joints (radians)", ["#", "joint", "lower", "upper"],
          [(i, n, lo, up) for i, (n, lo, up) in enumerate(zip(data["joints"], data["lower"], data["upper"]))])
    table("Point sets", ["set", "size"], sorted(data["point_sets"].items()))
    typer.echo(f"links: {', '.join(data['links'])}")
    typer.echo(f"root frame: {data['root_frame']}")
