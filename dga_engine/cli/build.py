"""``dga-engine build`` and ``dga-engine rounds``: the whole DAG in-process, and its round ledger."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import typer

from dga_engine.cli.choices import Backend, Profile
from dga_engine.cli.common import JSON_OPTION, console, emit_json, fail, labelled, layout, object_labels, table
from dga_engine.progress import Tracker, clock, listen

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
    table(f"build-dga: {result['objects']} objects (seed and expansion), {result['grasps']} grasps in the dataset",
          ["round", "status", "objects", "generated", "accepted", "rejected", "acceptance", "unseen objects", "Suc.1",
           "Suc.6", "pen (mm)", "div (rad)", "CPU s"], rows)
    typer.echo("acceptance: accepted / filtered; unseen objects: acceptance on objects the round's generator was not "
               "trained on. Suc.1/Suc.6: share of simulated grasps that held in at least one / all six push "
               "directions; pen: mean deepest hand point inside the object (the reference's Pen); div: per-joint "
               "spread of the Suc.6 grasps per object (rad).")
    from dga_engine.layout import Layout
    from dga_engine.rounds import Ledger

    lay = Layout.at(result["root"])
    rounds = Ledger(lay).rounds()
    labels = object_labels(lay, sorted({o for r in rounds for o in r.objects}))
    for r in rounds:
        typer.echo(f"round {r.round} objects: {labelled(r.objects, labels, at_most=12)}")
    typer.echo(f"storage root: {result['root']}  (dga-engine shards ls / shards verify / rounds status)")


# Without a terminal (a log file, CI), a stage prints a line this often, and one when it ends.
LINE_INTERVAL_S = 30.0


class _LineTracker(Tracker):
    """A stage shown as lines: ``<stage>: 96/288 grasps (33%), 1:20 elapsed, about 2:40 left``."""

    interval_s = LINE_INTERVAL_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._printed = self.started

    def line(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        return (f"{self.description}: {self.done}{of} {self.unit}{share}, {clock(self.elapsed)} elapsed, "
                f"about {clock(self.remaining())} left")

    def changed(self) -> None:
        if self._clock() - self._printed >= self.interval_s:
            self._printed = self._clock()
            console.print(self.line(), highlight=False)


@contextmanager
def _stage_display(enabled: bool) -> Iterator[None]:
    """Show every stage the build tracks (dga_engine.progress): a bar with the time left on a terminal, else
    a line every LINE_INTERVAL_S and one when the stage ends. The flow's log lines print above the bars."""
    if not enabled:
        yield
        return
    if not console.is_terminal:
        @contextmanager
        def lines(description: str, total: int | None, unit: str) -> Iterator[Tracker]:
            tracker = _LineTracker(description, total, unit)
            yield tracker
            console.print(f"{description}: {tracker.done} {unit} in {clock(tracker.elapsed)}", highlight=False)

        with listen(lines):
            yield
        return

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                    console=console, redirect_stderr=True)

    @contextmanager
    def bar(description: str, total: int | None, unit: str) -> Iterator[Tracker]:
        task = bars.add_task(description, total=total, unit=unit, left="")
        tracker = Tracker(description, total, unit)
        tracker.changed = lambda: bars.update(  # type: ignore[method-assign]
            task, completed=tracker.done, total=tracker.total, left=f"about {clock(tracker.remaining())} left")
        yield tracker
        bars.update(task, completed=tracker.done, total=tracker.done or tracker.total, left="done")
        bars.stop_task(task)

    # Log handlers hold the real stderr; while the bars are live they write through rich's proxy, above the bars.
    stderr = sys.stderr
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler) and h.stream is stderr]
    with bars:
        for h in handlers:
            h.setStream(sys.stderr)
        try:
            with listen(bar):
                yield
        finally:
            for h in handlers:
                h.setStream(stderr)


def _run_flow(params: dict[str, Any], show_progress: bool = True) -> dict[str, Any]:
    from dga_engine.layout import Layout
    from dga_engine.rounds import BuildRunning, running_build

    holder = running_build(Layout.at(params["root"]))
    if holder is not None:  # before Prefect starts: no failed flow run for a build that never began
        raise fail(str(BuildRunning(params["root"], holder)))
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:  # no usage data unless the user asks for it
        os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side half of the same
    from flows.build_dga import build_dga
    from flows.local_api import LocalAPIError, ensure_local_api

    try:
        ensure_local_api()
    except LocalAPIError as exc:
        raise fail(str(exc)) from None
    # Each task's "Finished in state Completed()" says nothing the flow's own lines and the bars do not.
    logging.getLogger("prefect.task_runs").setLevel(logging.WARNING)
    try:
        with _stage_display(show_progress):
            return build_dga(**params)
    except BuildRunning as exc:  # lost the race to another build starting at the same moment
        raise fail(str(exc))


def build(
    ctx: typer.Context,
    profile: Profile = typer.Option("demo", help="demo: 6 built-in objects, round 0 + 1 round, tiny generator (about 3 min on 2 idle cores, up to ~20 when they are busy; see the README); full: everything, 3 rounds."),
    objects: Optional[str] = typer.Option(None, help="'builtin' (default), 'all' objects in the store, or comma-separated object ids."),
    n_objects: Optional[int] = typer.Option(None, "--n-objects", help="How many built-in objects (default: profile)."),
    sources: Optional[str] = typer.Option(None, help="Comma-separated source datasets under <root>/sources to curate instead of seed synthesis."),
    rounds: Optional[int] = typer.Option(None, help="Generation rounds after round 0 (default: profile)."),
    per_object: Optional[int] = typer.Option(None, "--per-object", help="Candidates per object per round (seed and generated)."),
    backend: Optional[Backend] = typer.Option(None, help="Physics filter backend: mujoco (default), mujoco-warp, isaacgym."),
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
    result = _run_flow(params, show_progress=not as_json)
    if as_json:
        emit_json(result)
    else:
        _print_summary(result)


@rounds_app.command("status")
def rounds_status(ctx: typer.Context, as_json: bool = JSON_OPTION) -> None:
    """Show each round: its stages, objects, checkpoint, generated and accepted counts, metrics."""
    from dga_engine.rounds import Ledger

    status = Ledger(layout(ctx, existing=True)).status()
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

    lay = layout(ctx, existing=True)
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
    result = _run_flow(params, show_progress=not as_json)
    if as_json:
        emit_json(result)
    else:
        _print_summary(result)
