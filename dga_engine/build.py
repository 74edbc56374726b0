"""The build: what each step of the ``build-dga`` DAG does, as plain functions over a storage root.

The Prefect flow (``flows/build_dga.py``) only chains these; each can also be called alone. Every step is
resumable on its own terms: the stages it calls skip the units of work that have completion records, so
re-running a step after a crash redoes only what was not finished, and never writes a grasp twice
(grasp ids and shard keys are deterministic).

Profiles (``BuildConfig.for_profile``):

- ``demo``: a few built-in objects, one generation round, a tiny generator; about 10-15 minutes on 2 CPU cores.
- ``full``: every built-in object (or the objects and sources you name), three rounds, the paper-sized
  generator; meant for a GPU machine or a cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.progress import track
from dga_engine.rounds import Ledger
from dga_engine.units import cpu_seconds

log = logging.getLogger(__name__)

PROFILES = ("demo", "full")
SEED_SOURCE = "synthesis"
GENERATOR_SOURCE = "generator"


@dataclass
class BuildConfig:
    """Parameters of one build. Everything has a profile default; the flow's parameters override them."""

    profile: str = "demo"
    # Objects to grasp: "builtin" (the built-in set, or its demo subset of n_objects), or object ids already in
    # the store, comma separated, or "all" (every object in the store).
    objects: str = "builtin"
    n_objects: int | None = 6  # size of the built-in subset (None = every built-in shape)
    # Source datasets under <root>/sources/<name> to curate into round 0; empty = seed synthesis instead.
    sources: list[str] = field(default_factory=list)
    rounds: int = 1  # generation rounds after round 0
    seed_per_object: int = 48  # seed synthesis candidates per object (round 0, when no sources)
    generate_per_object: int = 48  # generator samples per object per round
    backend: str = "mujoco"  # physics filter backend: mujoco | mujoco-warp | isaacgym
    workers: int = 2  # filter processes; on Ray also the generation actors (CPU) and at least that many batches
    ray_address: str | None = None  # None: generate in-process; "local": start a local Ray; else a cluster address
    dataset: str = DEFAULT_DATASET
    seed: int = 0  # one seed for the whole build; every stage derives its own from it
    describe: bool | None = None  # None: describe only when an LLM endpoint is configured
    generator_preset: str = "tiny"  # generator model/training preset (see dga_engine.generate.config)
    synthesis_preset: str = "fast"  # seed-synthesis preset (see dga_engine.synthesize.config)
    refine: bool = True  # refine before every filter: repair (round 0: curated or seed grasps), polish (generated)
    # What rounds >= 1 generate for: "" the seed objects; "builtin" the next n_expand built-in shapes after the
    # seed subset (ingested by the build); "all" every object in the store without accepted grasps when the round
    # starts (e.g. an Objaverse selection ingested before); or comma-separated object ids.
    expand_objects: str = "builtin"
    n_expand: int | None = 4  # how many built-ins "builtin" expansion takes (None = every other built-in)
    top_up_below: int = 0  # seed objects with fewer accepted grasps than this are generated for too (0 = never)

    @classmethod
    def for_profile(cls, profile: str, **overrides: Any) -> "BuildConfig":
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}: choose one of {', '.join(PROFILES)}")
        base: dict[str, Any] = {"profile": profile}
        if profile == "full":
            base.update(n_objects=None, rounds=3, seed_per_object=256, generate_per_object=256,
                        generator_preset="paper", synthesis_preset="default", expand_objects="all", n_expand=None)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def _llm_configured() -> bool:
    return bool(os.environ.get("DGA_LLM_BASE_URL"))


# ---- steps ---------------------------------------------------------------------------------------


def ingest_objects(layout: Layout, cfg: BuildConfig) -> list[str]:
    """Ingest (or find) the build's objects; returns their ids in a stable order."""
    from dga_engine.objects.ingest import ingest_builtin
    from dga_engine.objects.store import ObjectStore

    store = ObjectStore(layout)
    if cfg.objects == "builtin":
        from dga_engine.objects.builtin import BUILTIN_NAMES, demo_subset

        names = list(BUILTIN_NAMES) if cfg.n_objects is None else demo_subset(cfg.n_objects)
        with track("ingest", len(names), "objects") as bar:
            report = ingest_builtin(layout, names=names, processes=max(1, cfg.workers), progress=bar.advance)
        ids = report.object_ids
        if report.quarantined:
            log.warning("quarantined %d built-in objects: %s", len(report.quarantined), report.quarantine)
        return sorted(ids)
    if cfg.objects == "all":
        return store.ids()
    ids = [x.strip() for x in cfg.objects.split(",") if x.strip()]
    missing = [i for i in ids if not store.exists(i)]
    if missing:
        raise ValueError(f"objects not in the store: {missing}; ingest them first (dga-engine ingest ...)")
    return ids


def describe_objects(layout: Layout, cfg: BuildConfig, object_ids: list[str]) -> dict[str, Any]:
    """LLM descriptions and semantic features, when an endpoint is configured; otherwise a no-op."""
    enabled = cfg.describe if cfg.describe is not None else _llm_configured()
    if not enabled:
        return {"disabled": True, "requested": 0, "cached": 0, "failed": 0}
    from dga_engine.describe import describe_objects as run

    return run(layout, object_ids).to_dict()


def seed_round(layout: Layout, cfg: BuildConfig, object_ids: list[str]) -> dict[str, int]:
    """Round 0 candidates: curate the configured sources, or synthesise seeds when there are none."""
    if cfg.sources:
        from dga_engine.sources.curate import curate

        counts: dict[str, int] = {}
        for source in cfg.sources:
            with track(f"curate {source}", None, "units") as bar:
                counts[source] = curate(layout, source, advance=bar.advance).grasps_written
        return counts
    from dga_engine.synthesize import SynthesisConfig, run_synthesis

    config = SynthesisConfig.preset(cfg.synthesis_preset).replace(per_object=cfg.seed_per_object)
    with track("seed synthesis", len(object_ids) * cfg.seed_per_object, "grasps") as bar:
        report = run_synthesis(
            layout, object_ids, config, seed=cfg.seed, dataset=cfg.dataset, workers=max(1, cfg.workers),
            progress=bar.advance,
        )
    return {SEED_SOURCE: report.candidates}


def refine_source(layout: Layout, cfg: BuildConfig, source: str, preset: str) -> dict[str, Any]:
    """Refine every candidate of ``source`` (``repair`` or ``polish``) before it is filtered; the refine summary."""
    from dga_engine.refine import RefineConfig, run_refine

    with track(f"refine ({preset}) {source}", None, "grasps") as bar:
        return run_refine(layout, source, RefineConfig.preset(preset), dataset=cfg.dataset, workers=cfg.workers,
                          progress=bar.update).to_dict()


def filter_source(layout: Layout, cfg: BuildConfig, source: str) -> dict[str, Any]:
    """Filter every unfiltered candidate of ``source`` (refined ones when ``cfg.refine``); the filter summary."""
    from dga_engine.simulate import run_filter

    from dga_engine.dataset.store import Dataset

    with track(f"filter {source}", None, "grasps") as bar:
        summary = run_filter(layout, source=source, backend=cfg.backend, workers=cfg.workers, dataset=cfg.dataset,
                             refined=cfg.refine, progress=bar.update)
    Dataset(layout, cfg.dataset).compact()  # the stage's many small shards become a few large files
    return summary.to_dict()


def train_generator(layout: Layout, cfg: BuildConfig, round_: int) -> str:
    """Train (or resume training) the round's generator on every accepted grasp of earlier rounds.

    ``train_round`` with a progress bar: a checkpoint trained on other data is replaced (the build moved on).
    """
    from dga_engine.generate import preset
    from dga_engine.generate.train import TrainingDataChanged, train

    config = preset(cfg.generator_preset)
    config.train.seed = int(cfg.seed)
    with track(f"train round {round_}", config.train.epochs, "epochs") as bar:
        def on_epoch(stats: dict[str, float]) -> None:
            bar.update(int(stats["epoch"]))

        try:
            result = train(layout, round_, config, dataset=cfg.dataset, on_epoch=on_epoch)
        except TrainingDataChanged as exc:
            log.warning("%s; retraining round %d from scratch", exc, round_)
            result = train(layout, round_, config, dataset=cfg.dataset, on_epoch=on_epoch, restart=True)
    return str(result.checkpoint)


def expansion_objects(layout: Layout, cfg: BuildConfig, seed_ids: list[str]) -> list[str]:
    """The objects a generation round grasps (see ``BuildConfig.expand_objects``), sorted; plus, with
    ``top_up_below``, the seed objects that have fewer accepted grasps than that."""
    from dga_engine.dataset.store import Dataset
    from dga_engine.objects.store import ObjectStore

    store = ObjectStore(layout)
    how = cfg.expand_objects.strip()
    counts: dict[str, int] = {}
    if how == "all" or cfg.top_up_below > 0:
        ds = Dataset(layout, cfg.dataset)
        for oid in ds.read(columns=["object_id"]).column("object_id").to_pylist() if ds.exists() else []:
            counts[oid] = counts.get(oid, 0) + 1
    if how == "":
        targets = list(seed_ids)
    elif how == "builtin":
        from dga_engine.objects.builtin import BUILTIN_NAMES, demo_subset
        from dga_engine.objects.ingest import ingest_builtin

        n_seed = len(BUILTIN_NAMES) if cfg.n_objects is None else cfg.n_objects
        extra = n_seed + (cfg.n_expand if cfg.n_expand is not None else len(BUILTIN_NAMES))
        names = demo_subset(extra)[n_seed:]
        report = ingest_builtin(layout, names=names, processes=max(1, cfg.workers)) if names else None
        targets = [] if report is None else list(report.object_ids)
    elif how == "all":
        targets = [o for o in store.ids() if counts.get(o, 0) == 0]
    else:
        targets = [x.strip() for x in how.split(",") if x.strip()]
        missing = [i for i in targets if not store.exists(i)]
        if missing:
            raise ValueError(f"expansion objects not in the store: {missing}; ingest them first (dga-engine ingest ...)")
    if cfg.top_up_below > 0:
        targets += [o for o in seed_ids if counts.get(o, 0) < cfg.top_up_below]
    return sorted(set(targets))


def generate_candidates(layout: Layout, cfg: BuildConfig, round_: int, object_ids: list[str]) -> int:
    """Sample the round's candidates with the physics-guided sampler (on Ray when configured).

    ``generate_round`` with a progress bar (grasps of the batches still to do)."""
    from dga_engine.generate import SampleConfig, generate

    config = dataclasses.replace(SampleConfig.preset(cfg.generator_preset), seed=int(cfg.seed))
    with track(f"generate round {round_}", len(object_ids) * cfg.generate_per_object, "grasps") as bar:
        report = generate(layout, round_, cfg.generate_per_object, object_ids, sample=config, dataset=cfg.dataset,
                          ray_address=cfg.ray_address, use_ray=cfg.ray_address is not None, workers=cfg.workers,
                          on_batch=lambda res: bar.advance(res.grasps))
    return int(report.candidates)


def round_outcome(layout: Layout, cfg: BuildConfig, round_: int, seen: list[str] | None = None) -> dict[str, Any]:
    """Accepted/rejected counts and filter metrics of one round, read back from the dataset itself.

    Counting from the shards (not from what this process happened to filter) keeps the ledger right after
    a resume, when part of the round was filtered by an earlier, interrupted process. With ``seen`` (the
    objects the round's generator was trained on), ``by_object`` splits the counts into seen and unseen.
    """
    from dga_engine.dataset.store import Dataset
    from dga_engine.simulate.metrics import summarise

    verdicts = Dataset(layout, cfg.dataset).verdicts(rounds=[round_])
    accepted, rejects, judged = verdicts.accepted, verdicts.rejected, verdicts.judged
    metrics = summarise(judged) if judged.num_rows else {}
    out = {"accepted": accepted.num_rows, "rejected": rejects.num_rows, "metrics": metrics}
    if seen is not None:
        known = set(seen)
        split = {"seen": {"candidates": 0, "accepted": 0}, "unseen": {"candidates": 0, "accepted": 0}}
        for table, key in ((accepted, "accepted"), (rejects, None)):
            if not table.num_rows:
                continue
            for oid in table.column("object_id").to_pylist():
                part = split["seen" if oid in known else "unseen"]
                part["candidates"] += 1
                if key:
                    part[key] += 1
        out["by_object"] = split
    return out


def training_objects(layout: Layout, cfg: BuildConfig, round_: int) -> list[str]:
    """Objects with accepted grasps in rounds before ``round_``: what that round's generator has seen."""
    from dga_engine.dataset.store import Dataset

    table = Dataset(layout, cfg.dataset).read(rounds=list(range(round_)), columns=["object_id"])
    return sorted(set(table.column("object_id").to_pylist()))


def summary(layout: Layout, cfg: BuildConfig, object_ids: list[str]) -> dict[str, Any]:
    """The build's outcome: objects, grasps in the dataset, and each round's counts and metrics."""
    from dga_engine.dataset.store import Dataset

    ds = Dataset(layout, cfg.dataset)
    rounds = Ledger(layout).rounds()
    return {
        "objects": len(set(object_ids).union(*(r.objects for r in rounds))),  # seed and expansion objects
        "grasps": int(sum(m.rows for m in ds.shards())),
        "rounds": [
            {"round": r.round, "generated": r.generated, "accepted": r.accepted, "rejected": r.rejected,
             "status": r.status, **{k: r.metrics.get(k) for k in ("suc1", "suc6", "pen_mm", "div")},
             "objects": len(r.objects), "refine": r.refine, "by_object": r.by_object,
             "cpu_seconds": round(sum(r.cost.values()), 1)}
            for r in rounds
        ],
        "dataset": ds.path,
        "root": layout.root,
    }
