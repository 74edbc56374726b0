"""``dga-engine filter``: the physics filter stage (push test + penetration) over candidate grasps."""

from __future__ import annotations

from typing import Optional

import typer

from dga_engine.cli.common import JSON_OPTION, console, emit_json, fail, layout, table


def filter_command(
    ctx: typer.Context,
    source: str = typer.Option(..., "--source", help="Candidate source to filter (datasets/<dataset>/candidates/<source>/), "
                               "or the source name recorded for --path input."),
    path: Optional[str] = typer.Option(None, "--path", help="Filter this Parquet file or folder (GRASP_SCHEMA) instead of the candidates."),
    backend: str = typer.Option("mujoco", "--backend", help="mujoco (CPU, default) | mujoco-warp (GPU) | isaacgym (GPU, Isaac Gym Preview 4)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (mujoco backend); results do not depend on it."),
    dataset: str = typer.Option("dga", "--dataset", help="Dataset that receives accepted shards and rejects."),
    config_file: Optional[str] = typer.Option(None, "--config", help="JSON file of FilterConfig fields overriding the defaults."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Simulate every candidate grasp (close the fingers, push the object along +-x, +-y, +-z of its frame),
    check penetration, and write accepted grasps as shards and the rest as rejects with their reason.
    Resumable: units (candidate file x object) already filtered under the same protocol are skipped.
    """
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from dga_engine.simulate.backends import BackendUnavailable
    from dga_engine.simulate.config import FilterConfig
    from dga_engine.simulate.metrics import rows as metric_rows
    from dga_engine.simulate.stage import run_filter

    try:
        config = FilterConfig()
        if config_file:
            with open(config_file) as fh:
                config = FilterConfig.from_dict({**config.to_dict(), **json.load(fh)})
    except (OSError, ValueError, TypeError) as exc:
        raise fail(f"bad --config {config_file}: {exc}")

    lay = layout(ctx)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=console, disable=as_json)
    task = bar.add_task(f"filter {source}", total=None)

    def advance(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    try:
        with bar:
            summary = run_filter(lay, source=source, path=path, backend=backend, workers=workers, dataset=dataset,
                                 config=config, progress=advance)
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
            "metrics": {"suc1": m.get("suc1"), "suc6": m.get("suc6"), "pen_mm": m.get("pen_mm"), "div": m.get("div"),
                        "object_success": m.get("object_success"), "n_simulated": m.get("n_simulated")},
            "units_done": summary.units_done,
            "units_skipped": summary.units_skipped,
            "backend": summary.backend,
            "protocol_version": summary.protocol_version,
            "seconds": round(summary.seconds, 3),
        })
        return
    typer.echo(f"filter {source}: {summary.total} grasps in {summary.units_done} units; "
               f"{summary.units_skipped} units already done")
    table("outcome", ["outcome", "grasps"],
          [("accepted", summary.accepted), ("rejected", summary.rejected)] + [(f"  {k}", v) for k, v in summary.reasons.items()])
    if summary.total:
        table("metrics", ["metric", "value"], metric_rows(m))
    typer.echo(f"protocol {summary.protocol_version}, backend {summary.backend}, {summary.seconds:.1f} s")
