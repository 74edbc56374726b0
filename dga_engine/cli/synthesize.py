"""``dga-engine synthesize``: seed grasps for stored objects by DexGraspNet-style optimisation, then the filter."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import typer

from dga_engine.cli.choices import SynthesisPreset
from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout, progress, table

if TYPE_CHECKING:
    from dga_engine.layout import Layout
    from dga_engine.synthesize import SynthesisReport

log = logging.getLogger(__name__)


def _fmt_rate(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _filter_candidates(lay: Layout, report: SynthesisReport, dataset: str, workers: int) -> None:
    """The filter stage on the synthesis candidates, then each object's verdict into ``report``. A failure is
    recorded in ``report.filter_error``, not raised: the candidates stay written for a later
    ``dga-engine filter --source synthesis``."""
    from dga_engine.simulate import run_filter
    from dga_engine.synthesize import SOURCE, read_verdicts

    t0 = time.perf_counter()
    try:
        run_filter(lay, source=SOURCE, workers=workers, dataset=dataset)
        read_verdicts(lay, report, dataset)
    except Exception as exc:  # noqa: BLE001 - the candidates are safe; say why and exit 1
        log.warning("filter failed after synthesis: %s", exc)
        report.filter_error = f"{type(exc).__name__}: {exc}"
    report.filter_seconds = time.perf_counter() - t0


def synthesize(
    ctx: typer.Context,
    objects: str = typer.Option(
        "all", "--objects", help="Comma-separated object ids, or 'all' (every object in the store)."
    ),
    per_object: int | None = typer.Option(
        None, "--per-object", min=1, help="Candidates per object (default: the preset's)."
    ),
    seed: int = typer.Option(0, "--seed", help="Run seed: the same seed, config and objects give the same grasps."),
    preset: SynthesisPreset = typer.Option(
        "fast", "--preset", help="fast (about a minute per object on 2 cores) | default (more steps)."
    ),
    iterations: int | None = typer.Option(
        None, "--iterations", min=0, help="Optimisation steps per batch (default: the preset's)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Grasps optimised together (default: the preset's)."
    ),
    dataset: str = typer.Option(
        "dga", "--dataset", help="Dataset whose candidates area (and, after filtering, shards) receive the grasps."
    ),
    no_filter: bool = typer.Option(
        False, "--no-filter", help="Only write candidates; filter later with `dga-engine filter --source synthesis`."
    ),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Worker processes: objects synthesised at once, and the filter's workers."
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Skip objects synthesised by an earlier run with the same seed and config."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Synthesise grasps with no data at all: per object, a batch of hands is initialised around the object and
    optimised (contact distance, penetration, self-penetration, joint limits, force closure; annealed with
    Metropolis accept/reject and restarts), then closed onto the surface and cleaned of penetration. The
    candidates go to the dataset (source 'synthesis'); unless --no-filter the physics filter then decides
    which are kept. Reports per object and overall: candidates, accepted, Suc.1/Suc.6, penetration, diversity,
    grasps/s. Exit code 1 when an object failed, nothing was synthesised or the filter failed.
    """
    from dga_engine.objects.store import ObjectStore
    from dga_engine.synthesize import SynthesisConfig, run_synthesis

    lay = layout(ctx)
    try:
        config = SynthesisConfig.preset(preset)
        changes = {
            k: v
            for k, v in (("per_object", per_object), ("n_iter", iterations), ("batch_size", batch_size))
            if v is not None
        }
        config = config.replace(**changes)  # validated in SynthesisConfig.__post_init__
    except ValueError as exc:
        raise fail(str(exc))
    store = ObjectStore(lay)
    if objects.strip() == "all":
        ids = store.ids()
        if not ids:
            raise fail(
                f"no objects in {lay.objects()}: ingest some first (dga-engine ingest builtin, or ingest paths ...)"
            )
    else:
        ids = [o.strip() for o in objects.split(",") if o.strip()]
        missing = [o for o in ids if not store.exists(o)] if ids else []
        if not ids:
            raise fail("--objects is empty: give object ids separated by commas, or 'all'")
        if missing:
            raise fail(f"not in the object store: {', '.join(missing)} (see `dga-engine objects ls`)")
    total = len(ids) * config.per_object * len(config.object_scales)
    with progress("synthesize", total=total, enabled=not as_json) as advance:
        report = run_synthesis(lay, ids, config, seed, dataset=dataset, workers=workers, resume=resume,
                               progress=advance)  # fmt: skip
    if not no_filter and report.candidates:
        _filter_candidates(lay, report, dataset, workers)
    if as_json:
        emit_json(report.to_dict())
    else:
        rows = []
        for o in report.objects:
            status = "error" if o.error else ("resumed" if o.skipped else "done")
            rows.append((o.object_id, status, o.candidates, "-" if o.accepted is None else o.accepted,
                         _fmt_rate(o.suc1), _fmt_rate(o.suc6), "-" if o.pen_mm is None else f"{o.pen_mm:.2f}",
                         "-" if o.div is None else f"{o.div:.3f}", f"{o.seconds:.1f}"))  # fmt: skip
        table(f"synthesize (seed {report.seed}, config {report.config_hash})",
              ["object", "status", "candidates", "accepted", "Suc.1", "Suc.6", "pen mm", "div rad", "seconds"], rows)
        acc = "-" if report.accepted is None else f"{report.accepted} ({_fmt_rate(report.acceptance)})"
        typer.echo(f"candidates {report.candidates}, accepted {acc}, {report.grasps_per_second:.2f} grasps/s "
                   f"synthesis ({report.seconds:.1f} s), filter {report.filter_seconds:.1f} s")
        for o in report.objects:
            if o.error:
                typer.echo(f"error {o.object_id}: {o.error}")
        if report.filter_error:
            typer.echo(
                f"filter failed: {report.filter_error}; the candidates are kept: dga-engine filter --source synthesis"
            )
        if no_filter and report.candidates:
            typer.echo(f"next: dga-engine filter --source synthesis --dataset {dataset}")
    if report.failed or report.candidates == 0 or report.filter_error:
        raise typer.Exit(1)
