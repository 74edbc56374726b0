"""``dga-engine build`` and ``dga-engine rounds``: the whole DAG in-process, and its round ledger."""

from __future__ import annotations

import os
from typing import Any, Optional

import typer

from dga_engine.cli.common import JSON_OPTION, console, emit_json, fail, layout, table

rounds_app = typer.Typer(help="The round ledger: what each round did; resume an interrupted build.", no_args_is_help=True)


def _print_summary(result: dict[str, Any]) -> None:
    def share(a: int, n: int) -> str:
        return f"{a / n:.1%}" if n else "-"

    rows = []
    for r in result["rounds"]:
        unseen = (r.get("by_object") or {}).get("unseen") or {}
        rows.append((r["round"], r["status"], r.get("objects", "-"), r["generated"], r["accepted"], r["rejected"],
                     share(r["accepted"], r["accepted"] + r["rejected"]),
                     share(unseen.get("accepted", 0), unseen.get("candidates", 0)) if unseen else "-",
                     *(r.get(k) if r.get(k) is not None else "-" for k in ("suc1", "suc6", "pen_mm", "div")),
                     r.get("cpu_seconds", "-")))
    table(f"build-dga: {result['objects']} seed objects, {result['grasps']} grasps in the dataset",
          ["round", "status", "objects", "generated", "accepted", "rejected", "acceptance", "unseen objects", "Suc.1",
           "Suc.6", "pen (mm)", "div (rad)", "CPU s"], rows)
    typer.echo("acceptance: accepted / filtered; unseen objects: acceptance on objects the round's generator was not "
               "trained on. Suc.1/Suc.6: share of simulated grasps that held in at least one / all six push "
               "directions; pen: mean deepest hand point inside the object (the reference's Pen); div: per-joint "
               "spread of the Suc.6 grasps per object (rad).")
    typer.echo(f"storage root: {result['root']}  (dga-engine shards ls / shards verify / rounds status)")


def _run_flow(params: dict[str, Any]) -> dict[str, Any]:
    from dga_engine.layout import Layout
    from dga_engine.rounds import BuildRunning, running_build

    holder = running_build(Layout.at(params["root"]))
    if holder is not None:  # before Prefect starts: no failed flow run for a build that never began
        raise fail(str(BuildRunning(params["root"], holder)))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.build_dga import build_dga

    try:
        return build_dga(**params)
    except BuildRunning as exc:  # lost the race to another build starting at the same moment
        raise fail(str(exc))


def build(
    ctx: typer.Context,
    profile: str = typer.Option("demo", help="demo: a few built-in objects, 1 round, tiny generator (~15 min on 2 cores); full: everything, 3 rounds."),
    objects: Optional[str] = typer.Option(None, help="'builtin' (default), 'all' objects in the store, or comma-separated object ids."),
    n_objects: Optional[int] = typer.Option(None, "--n-objects", help="How many built-in objects (default: profile)."),
    sources: Optional[str] = typer.Option(None, help="Comma-separated source datasets under <root>/sources to curate instead of seed synthesis."),
    rounds: Optional[int] = typer.Option(None, help="Generation rounds after round 0 (default: profile)."),
    per_object: Optional[int] = typer.Option(None, "--per-object", help="Candidates per object per round (seed and generated)."),
    backend: Optional[str] = typer.Option(None, help="Physics filter backend: mujoco (default), mujoco-warp, isaacgym."),
    workers: Optional[int] = typer.Option(None, help="Filter worker processes (default 2)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", envvar="DGA_RAY_ADDRESS", help="Run generation on Ray: 'local' or a cluster address."),
    seed: Optional[int] = typer.Option(None, help="Seed of the whole build (default 0)."),
    refine: Optional[bool] = typer.Option(None, "--refine/--no-refine", help="Refine before every filter: repair "
                                          "round 0's grasps, polish generated ones (default on)."),
    expand_objects: Optional[str] = typer.Option(None, "--expand-objects", help="What rounds >= 1 generate for: "
                                                 "'builtin' (default: built-ins beyond the seed subset), 'all' objects "
                                                 "without accepted grasps, comma-separated ids, or '' for the seed objects."),
    n_expand: Optional[int] = typer.Option(None, "--n-expand", help="How many built-ins --expand-objects builtin takes (default 4)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Run the build-dga flow in-process: ingest, seed, refine, filter, then train -> generate -> refine -> filter per round.

    Uses Prefect's temporary local API and the storage root (default ./storage). Stopping it at any point
    is safe: run it again, or `dga-engine rounds resume`, and it continues where it stopped.
    """
    params = {
        "root": layout(ctx).root, "profile": profile, "objects": objects, "n_objects": n_objects,
        "sources": [s for s in sources.split(",") if s] if sources else None, "rounds": rounds,
        "seed_per_object": per_object, "generate_per_object": per_object, "backend": backend,
        "workers": workers, "ray_address": ray_address, "seed": seed, "refine": refine,
        "expand_objects": expand_objects, "n_expand": n_expand,
    }
    result = _run_flow(params)
    if as_json:
        emit_json(result)
    else:
        _print_summary(result)


@rounds_app.command("status")
def rounds_status(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Show each round: its stages, objects, checkpoint, generated and accepted counts, metrics."""
    from dga_engine.rounds import Ledger

    status = Ledger(layout(ctx)).status()
    if as_json:
        emit_json(status)
        return
    if status["running"]:
        from dga_engine.lock import describe

        typer.echo(f"running: {describe(status['running'])}")
    if not status["rounds"]:
        if not status["running"]:
            typer.echo("no build has started under this storage root (dga-engine build)")
        return
    table(
        "rounds",
        ["round", "status", "stages", "objects", "generated", "accepted", "checkpoint"],
        [(r["round"], r["status"], " ".join(f"{k}:{v}" for k, v in r["stages"].items()), len(r["objects"]),
          r["generated"], r["accepted"], r["checkpoint"] or "-") for r in status["rounds"]],
    )
    if not status["running"]:
        typer.echo("complete" if status["complete"] else "incomplete: dga-engine rounds resume")


@rounds_app.command("resume")
def rounds_resume(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Continue the interrupted build with its saved parameters, exactly where it stopped."""
    from dga_engine.rounds import Ledger

    lay = layout(ctx)
    saved = Ledger(lay).build_params()
    if saved is None:
        raise fail(f"no build to resume under {lay.root}: start one with `dga-engine build`")
    params = {
        "root": lay.root, "profile": saved["profile"], "objects": saved["objects"], "n_objects": saved["n_objects"],
        "sources": saved["sources"], "rounds": saved["rounds"], "seed_per_object": saved["seed_per_object"],
        "generate_per_object": saved["generate_per_object"], "backend": saved["backend"], "workers": saved["workers"],
        "ray_address": saved["ray_address"], "dataset": saved["dataset"], "seed": saved["seed"],
        **{k: saved[k] for k in ("refine", "expand_objects", "n_expand", "top_up_below") if k in saved},
    }
    console.print(f"resuming the {saved['profile']} build under {lay.root}")
    result = _run_flow(params)
    if as_json:
        emit_json(result)
    else:
        _print_summary(result)
