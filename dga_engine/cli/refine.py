"""``dga-engine refine``: bounded repairs of candidate grasps before the physics filter."""

from __future__ import annotations

from typing import Any

import typer

from dga_engine.cli.choices import RefinePreset
from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout, table

PRESET_HELP = ("repair (curated grasps: joints into their limits, penetration pushed out by at most 5 mm / 0.1 rad of "
               "root and 0.3 rad per joint, contacts held) | polish (generated grasps: the seed-synthesis energy "
               "annealed from each pose, 3 cm / 0.5 rad / 1 rad bounds). Default: polish for the generator's "
               "candidates, repair otherwise.")


def default_preset(source: str) -> str:
    from dga_engine.generate.stage import SOURCE as GENERATOR_SOURCE

    return "polish" if source == GENERATOR_SOURCE else "repair"


def load_refine_config(preset: str, config_file: str | None):
    """The preset, with the fields of a JSON file (``--refine-config``) overriding it."""
    import json

    from dga_engine.refine import RefineConfig

    try:
        config = RefineConfig.preset(preset)
        if config_file:
            with open(config_file) as fh:
                config = RefineConfig.from_dict({**config.to_dict(), **json.load(fh)})
    except (OSError, ValueError, TypeError) as exc:
        raise fail(f"bad refine settings ({preset}, {config_file or 'no file'}): {exc}")
    return config


def run_refine_with_progress(ctx: typer.Context, source: str, config, dataset: str, workers: int, filter_config,
                             quiet: bool):
    """The refine stage with a progress bar; a missing source becomes a one-line error."""
    from dga_engine.cli.common import progress_done_of
    from dga_engine.refine import run_refine

    try:
        with progress_done_of(f"refine {source} ({config.name})", enabled=not quiet) as update:
            return run_refine(
                layout(ctx),
                source,
                config,
                dataset=dataset,
                filter_config=filter_config,
                workers=workers,
                progress=update,
            )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc))


def refine_rows(summary) -> list[tuple[str, Any]]:
    s = summary.statuses
    return [
        ("grasps refined now", summary.total),
        ("  unchanged (passed the checks)", s.get("unchanged", 0)),
        ("  refined (moved within the bounds)", s.get("refined", 0)),
        ("  failed (kept as they were)", s.get("failed", 0)),
        ("largest joint change (rad)", summary.max_joint_change),
        ("largest root move (mm)", summary.max_translation_change * 1000),
        ("largest root turn (rad)", summary.max_rotation_change),
        ("CPU ms per grasp", 1000 * summary.cpu_seconds / max(1, summary.total)),
    ]


def refine(
    ctx: typer.Context,
    source: str = typer.Option(
        ..., "--source", help="Candidate source to refine (datasets/<dataset>/candidates/<source>/)."
    ),
    preset: RefinePreset | None = typer.Option(None, "--preset", help=PRESET_HELP),
    config_file: str | None = typer.Option(
        None, "--config", help="JSON file of RefineConfig fields overriding the preset."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes; results do not depend on it."),
    dataset: str = typer.Option("dga", "--dataset", help="Dataset whose candidates are refined."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Repair near-miss candidates before the physics filter: pull joints inside the hand's limits and push
    penetration out (both directions) with small, bounded moves that keep the grasp's contacts.

    Every candidate is written to datasets/<dataset>/candidates/<source>+refined/ with its refine fields:
    unchanged (it passed the filter's cheap checks), refined (a new pose within the preset's bounds that
    passes them; refined_from names the original), or failed (not fixable within the bounds: kept exactly
    as it was, so the filter gives its original verdict). Resumable per candidate file. `dga-engine filter`
    then judges the refined poses (it runs this stage itself unless --no-refine).
    """
    config = load_refine_config(preset or default_preset(source), config_file)
    summary = run_refine_with_progress(ctx, source, config, dataset, workers, None, as_json)
    if as_json:
        emit_json(summary.to_dict())
        return
    table(
        f"refine {source}: {config.tag}",
        ["what", "value"],
        refine_rows(summary)
        + [("files done earlier", summary.units_skipped), ("unreadable files", len(summary.skipped_files))],
    )
    for item in summary.skipped_files[:20]:
        typer.echo(f"skipped {item['key']}: {item['reason']}")
    typer.echo(f"next: dga-engine filter --source {source}")
