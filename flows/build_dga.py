"""The ``build-dga`` flow: the whole engine as one DAG.

    ingest -> describe -> round 0: curate sources | synthesise seeds -> refine (repair) -> filter
           -> rounds 1..K: train -> generate (expansion objects) -> refine (polish) -> filter

Tasks are thin typed wrappers over :mod:`dga_engine.build`; only the I/O-bound ingest task retries. Prefect
runs the DAG; the storage root's completion records decide what is already done, so a re-run (or
``dga-engine rounds resume``) continues exactly where a stopped build left off. The round ledger under
``<root>/runs/ledger`` records each round's stages and counts.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from prefect import flow, get_run_logger, task

from dga_engine import build
from dga_engine.build import GENERATOR_SOURCE, SEED_SOURCE, BuildConfig
from dga_engine.layout import Layout
from dga_engine.rounds import Ledger, exclusive_build
from dga_engine.units import cpu_seconds


@task(name="ingest", retries=2, retry_delay_seconds=5)
def ingest_task(root: str, cfg: BuildConfig) -> list[str]:
    return build.ingest_objects(Layout.at(root), cfg)


@task(name="describe")
def describe_task(root: str, cfg: BuildConfig, object_ids: list[str]) -> dict[str, Any]:
    return build.describe_objects(Layout.at(root), cfg, object_ids)


@task(name="seed")
def seed_task(root: str, cfg: BuildConfig, object_ids: list[str]) -> dict[str, Any]:
    return _costed(lambda *a: {"candidates": build.seed_round(*a)}, Layout.at(root), cfg, object_ids)


@task(name="refine")
def refine_task(root: str, cfg: BuildConfig, source: str, preset: str) -> dict[str, Any]:
    return _costed(build.refine_source, Layout.at(root), cfg, source, preset)


@task(name="filter")
def filter_task(root: str, cfg: BuildConfig, source: str) -> dict[str, Any]:
    return _costed(build.filter_source, Layout.at(root), cfg, source)


@task(name="train")
def train_task(root: str, cfg: BuildConfig, round_: int) -> dict[str, Any]:
    return _costed(lambda *a: {"checkpoint": build.train_generator(*a)}, Layout.at(root), cfg, round_)


@task(name="expansion")
def expansion_task(root: str, cfg: BuildConfig, seed_ids: list[str]) -> list[str]:
    return build.expansion_objects(Layout.at(root), cfg, seed_ids)


@task(name="generate")
def generate_task(root: str, cfg: BuildConfig, round_: int, object_ids: list[str]) -> dict[str, Any]:
    return _costed(lambda *a: {"candidates": build.generate_candidates(*a)}, Layout.at(root), cfg, round_, object_ids)


def _costed(step, *args) -> dict[str, Any]:
    """Run a build step and add the CPU seconds it cost (this process and its finished workers)."""
    c0 = cpu_seconds()
    out = step(*args)
    out["cpu_seconds"] = round(cpu_seconds() - c0, 3)
    return out


def _deployment_safe_root(root: Optional[str]) -> Optional[str]:
    """The root to use; refuses a relative one in a deployment run, whose worker runs each flow in a
    temporary folder that is deleted afterwards (the dataset would be written there and lost)."""
    from prefect.runtime import deployment

    value = root or os.environ.get("DGA_ROOT")
    if deployment.id and (value is None or ("://" not in value and not os.path.isabs(value))):
        raise ValueError(
            f"storage root {value or './storage (default)'!r} is relative, and this deployment run works in a "
            "temporary folder that the worker deletes: pass an absolute path or a URL (root=/data/dga, "
            "root=s3://bucket/prefix) or set DGA_ROOT in the worker's environment"
        )
    return value


@flow(name="build-dga", log_prints=True)
@exclusive_build  # one build per storage root: a second one says who runs it and since when
def build_dga(
    root: Optional[str] = None,
    profile: str = "demo",
    objects: Optional[str] = None,
    n_objects: Optional[int] = None,
    sources: Optional[list[str]] = None,
    rounds: Optional[int] = None,
    seed_per_object: Optional[int] = None,
    generate_per_object: Optional[int] = None,
    backend: Optional[str] = None,
    workers: Optional[int] = None,
    ray_address: Optional[str] = None,
    dataset: Optional[str] = None,
    seed: Optional[int] = None,
    refine: Optional[bool] = None,
    expand_objects: Optional[str] = None,
    n_expand: Optional[int] = None,
    top_up_below: Optional[int] = None,
) -> dict[str, Any]:
    """Build (or resume building) a DGA-style dataset under ``root``; returns the build summary."""
    logger = get_run_logger()
    layout = Layout.at(_deployment_safe_root(root))
    ray_address = ray_address or os.environ.get("DGA_RAY_ADDRESS") or None
    cfg = BuildConfig.for_profile(
        profile, objects=objects, n_objects=n_objects, sources=sources, rounds=rounds,
        seed_per_object=seed_per_object, generate_per_object=generate_per_object, backend=backend,
        workers=workers, ray_address=ray_address, dataset=dataset, seed=seed, refine=refine,
        expand_objects=expand_objects, n_expand=n_expand, top_up_below=top_up_below,
    )
    ledger = Ledger(layout)
    ledger.save_build(cfg.to_dict())
    logger.info("build-dga: profile %s, %d round(s), storage root %s", cfg.profile, cfg.rounds, layout.root)

    logger.info("[round 0] ingest: starting")
    ledger.set_stage(0, "ingest", "running")
    object_ids = ingest_task(layout.root, cfg)
    ledger.set_stage(0, "ingest", "done", objects=object_ids)
    logger.info("[round 0] ingest: %d objects ready", len(object_ids))

    ledger.set_stage(0, "describe", "running")
    described = describe_task(layout.root, cfg, object_ids)
    ledger.set_stage(0, "describe", "done")
    logger.info("[round 0] describe: %s", "disabled (no LLM endpoint)" if described.get("disabled")
                else f"{described.get('requested', 0)} requested, {described.get('failed', 0)} failed")

    ledger.set_stage(0, "seed", "running")
    seeded = seed_task(layout.root, cfg, object_ids)
    generated = seeded["candidates"]
    cost = {"seed": seeded["cpu_seconds"]}
    ledger.set_stage(0, "seed", "done", generated=int(sum(generated.values())), cost=cost)
    logger.info("[round 0] seed candidates: %s", ", ".join(f"{k} {v}" for k, v in generated.items()))

    seed_sources = cfg.sources or [SEED_SOURCE]
    _refine_and_filter(ledger, layout, cfg, 0, seed_sources, "repair", cost, logger)

    for k in range(1, cfg.rounds + 1):
        record = ledger.get(k)
        ledger.set_stage(k, "train", "running")
        trained = train_task(layout.root, cfg, k)
        cost = dict(record.cost, train=trained["cpu_seconds"])
        ledger.set_stage(k, "train", "done", checkpoint=trained["checkpoint"], cost=cost)
        logger.info("[round %d] train: checkpoint %s", k, trained["checkpoint"])

        # The round's objects are fixed the first time it gets here, so a resumed round grasps the same ones.
        targets = record.objects or expansion_task(layout.root, cfg, object_ids)
        ledger.set_stage(k, "generate", "running", objects=targets)
        made = generate_task(layout.root, cfg, k, targets)
        cost["generate"] = made["cpu_seconds"]
        ledger.set_stage(k, "generate", "done", generated=made["candidates"], cost=cost)
        logger.info("[round %d] generate: %d candidates for %d objects", k, made["candidates"], len(targets))

        _refine_and_filter(ledger, layout, cfg, k, [GENERATOR_SOURCE], "polish", cost, logger)

    result = build.summary(layout, cfg, object_ids)
    logger.info("build-dga finished: %d objects, %d grasps", result["objects"], result["grasps"])
    return result


def _refine_and_filter(ledger: Ledger, layout: Layout, cfg: BuildConfig, k: int, sources: list[str], preset: str,
                       cost: dict[str, float], logger) -> None:
    """The round's refine (unless ``cfg.refine`` is off) and filter stages, with their counts and cost in the ledger."""
    if cfg.refine:
        ledger.set_stage(k, "refine", "running")
        statuses: dict[str, int] = {}
        cost["refine"] = 0.0
        for source in sources:
            refined = refine_task(layout.root, cfg, source, preset)
            cost["refine"] += refined["cpu_seconds"]
            for name, n in refined["statuses"].items():
                statuses[name] = statuses.get(name, 0) + n
        ledger.set_stage(k, "refine", "done", refine=statuses, cost=cost)
        logger.info("[round %d] refine (%s): %s", k, preset, ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())))
    ledger.set_stage(k, "filter", "running")
    cost["filter"] = sum(filter_task(layout.root, cfg, source)["cpu_seconds"] for source in sources)
    seen = build.training_objects(layout, cfg, k) if k > 0 else None
    outcome = ledger.set_stage(k, "filter", "done", cost=cost, **build.round_outcome(layout, cfg, k, seen))
    logger.info("[round %d] filter: %d accepted, %d rejected", k, outcome.accepted, outcome.rejected)


if __name__ == "__main__":
    build_dga()
