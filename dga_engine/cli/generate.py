"""``dga-engine train`` and ``dga-engine generate``: the physics-aware diffusion generator (paper Sec. 3.3-3.5)."""

from __future__ import annotations

import typer

from dga_engine.cli.choices import GeneratorPreset
from dga_engine.cli.common import JSON_OPTION, emit_json, fail, layout, progress, table


def train(
    ctx: typer.Context,
    round_: int = typer.Option(
        ..., "--round", min=1, help="Round K: trains on the accepted grasps of rounds 0..K-1, writes models/round-KKK."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=0, help="Total epochs to reach (default: the preset's)."),
    preset: GeneratorPreset | None = typer.Option(
        None,
        "--preset",
        help="Model size for a new checkpoint: tiny (CPU demo, default) or paper (reference sizes, GPU).",
    ),
    restart: bool = typer.Option(False, "--restart", help="Discard the round's checkpoint and train from scratch."),
    physics: bool | None = typer.Option(
        None, "--physics/--no-physics", help="Physics-aware training (SPF/ERF/SRF on h0_hat); default on."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available)."),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Train round K's generator; resumes from its checkpoint when the data and configuration match."""
    from dga_engine.generate import checkpoint as ckpt
    from dga_engine.generate.config import GeneratorConfig
    from dga_engine.generate.config import preset as make_preset
    from dga_engine.generate.train import TrainingDataChanged
    from dga_engine.generate.train import train as run_train

    lay = layout(ctx)
    config = None
    try:
        if preset is not None:
            config = make_preset(preset)
        elif ckpt.exists(lay, round_) and not restart:
            config = GeneratorConfig.from_dict(ckpt.read_meta(lay, round_)["config"])
        else:
            config = make_preset("tiny")
    except ValueError as exc:
        raise fail(str(exc))
    if physics is not None:
        config.train.physics_aware = physics
    if threads:
        config.train.threads = threads
    total = epochs if epochs is not None else config.train.epochs
    if ckpt.exists(lay, round_) and not restart:  # a resumed run only has the remaining epochs to go
        total = max(0, total - int(ckpt.read_meta(lay, round_).get("epoch", 0)))
    with progress(f"train round {round_}", total=total, enabled=not as_json) as advance:
        try:
            result = run_train(
                lay, round_, config, epochs=epochs, restart=restart, device=device, on_epoch=lambda s: advance()
            )
        except (TrainingDataChanged, ValueError, FileNotFoundError) as exc:
            raise fail(str(exc))
    if as_json:
        emit_json(result.to_dict())
        return
    final = result.final
    table(
        f"generator round {round_}",
        ["epochs", "run now", "grasps", "objects", "loss (simple)", "loss (physics)", "seconds", "checkpoint"],
        [(result.epoch, result.epochs_run, result.n_grasps, result.n_objects, final.get("simple", float("nan")),
          final.get("physics", float("nan")), result.seconds, result.checkpoint)],
    )


def generate(
    ctx: typer.Context,
    round_: int = typer.Option(
        ..., "--round", min=1, help="Round K: samples with models/round-KKK, writes round-K candidates."
    ),
    per_object: int = typer.Option(..., "--per-object", min=1, help="Grasps to sample per object."),
    objects: str = typer.Option(
        "all", "--objects", help="Comma-separated object ids, or 'all' (every object in the store)."
    ),
    guidance: bool | None = typer.Option(
        None, "--guidance/--no-guidance", help="Physics-guided sampling (default: on)."
    ),
    batch_size: int | None = typer.Option(None, "--batch-size", min=1, help="Grasps sampled together (default 256)."),
    objects_per_batch: int | None = typer.Option(
        None, "--objects-per-batch", min=1, help="Objects per unit of work (resume granularity)."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Base seed (default 0); each object's noise is seeded from it."
    ),
    use_ray: bool = typer.Option(
        False, "--ray/--no-ray", help="Run batches on Ray actors (local Ray unless --ray-address)."
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        envvar="DGA_RAY_ADDRESS",
        help="Ray cluster address (implies --ray); default $DGA_RAY_ADDRESS.",
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help="Ray actors (default: one per GPU, else 1)."),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda or cuda:N (default: cuda when available)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Sample candidate grasps for the objects with round K's generator; the filter stage then checks them.

    Writes datasets/<name>/candidates/generator/<key>.parquet per object batch and a completion record per
    batch; a rerun skips finished batches. Exit code 1 when some objects failed (the rest are written).
    """
    from dataclasses import replace

    from dga_engine.generate import checkpoint as ckpt
    from dga_engine.generate.config import GeneratorConfig
    from dga_engine.generate.stage import generate as run_generate
    from dga_engine.objects.store import ObjectStore

    lay = layout(ctx)
    try:
        sample = GeneratorConfig.from_dict(ckpt.read_meta(lay, round_)["config"]).sample
    except (FileNotFoundError, ValueError) as exc:
        raise fail(str(exc))
    sample = replace(sample)
    if batch_size is not None:
        sample.batch_size = batch_size
    if seed is not None:
        sample.seed = seed
    ids = (
        ObjectStore(lay).ids()
        if objects.strip().lower() == "all"
        else [s.strip() for s in objects.split(",") if s.strip()]
    )
    n_batches = None
    with progress(f"generate round {round_}", total=n_batches, enabled=not as_json) as advance:
        try:
            report = run_generate(
                lay, round_, per_object, ids, sample=sample, guidance=guidance, objects_per_batch=objects_per_batch,
                device=device, use_ray=use_ray, ray_address=ray_address, workers=workers, on_batch=lambda r: advance(),
            )
        except (FileNotFoundError, ValueError) as exc:
            raise fail(str(exc))
    if as_json:
        emit_json(report.to_dict())
    else:
        table(
            f"generated round {round_}",
            ["objects", "batches", "skipped", "grasps", "guidance", "grasps/s", "backend", "errors"],
            [(report.objects, report.batches, report.batches_skipped, report.grasps_written, report.guidance,
              report.grasps_per_second, report.backend, len(report.errors))],
        )
        if report.errors:
            table("Objects that failed", ["object", "error"], [(e["object_id"], e["error"]) for e in report.errors])
    if report.errors:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("generate")(generate)
