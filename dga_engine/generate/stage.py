"""The generation stage: round K's generator samples candidate grasps for every object.

``generate(layout, K, per_object)`` loads ``models/round-KKK``, splits the objects (sorted) into object
batches, and for each batch samples ``per_object`` grasps per object and writes them as candidates
(``Dataset.write_candidates(table, "generator", key)``), then the completion record
``runs/stages/generate/<key>.json``. The key is derived from the round, the checkpoint, the sampling
configuration and the batch's object ids, so a rerun with the same inputs skips finished batches and
rewrites an interrupted one (same key, same file, same grasp ids); the filter stage then reads the
candidates. Batches run in-process or on Ray actors (:mod:`dga_engine.generate.workers`).

An object that cannot be loaded is reported and skipped; the rest of its batch is written, and the
batch gets no completion record, so a rerun (after fixing the object) retries it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from dga_engine import runs
from dga_engine.generate import checkpoint as ckpt
from dga_engine.generate.batch import SOURCE, BatchResult, plan_jobs, run_batch
from dga_engine.generate.config import GeneratorConfig, SampleConfig
from dga_engine.generate.device import default_device
from dga_engine.generate.sample import GraspSampler
from dga_engine.generate.workers import run_on_ray
from dga_engine.layout import DEFAULT_DATASET, Layout
from dga_engine.objects.store import ObjectStore

log = logging.getLogger(__name__)

STAGE = "generate"


@dataclass
class GenerateReport:
    """Summary of a generation run (JSON-ready through :meth:`to_dict`)."""

    round: int
    checkpoint: str  # checkpoint id (round, epoch, weights hash)
    generator: str
    config_hash: str
    per_object: int
    guidance: bool
    objects: int
    batches: int
    batches_skipped: int  # already done by an earlier run
    batches_run: int
    grasps_written: int
    errors: list[dict[str, str]]
    backend: str  # local | ray
    seconds: float
    sampling_seconds: float
    grasps_per_second: float  # written grasps / sampling seconds summed over batches
    keys: list[str]

    @property
    def candidates(self) -> int:
        """Candidates this run wrote (the build flow's count)."""
        return self.grasps_written

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sampling_config_hash(checkpoint_id: str, sample: SampleConfig, per_object: int) -> str:
    """Hash of what determines the generated grasps: the weights and the sampler's settings."""
    payload = f"{checkpoint_id}|{sorted(asdict(sample).items())}|{per_object}"
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def generate(
    layout: Layout,
    round_: int,
    per_object: int,
    object_ids: Iterable[str] | None = None,
    *,
    sample: SampleConfig | None = None,
    guidance: bool | None = None,
    objects_per_batch: int | None = None,
    device: str | None = None,
    use_ray: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    on_batch: Callable[[BatchResult], None] | None = None,
    dataset: str = DEFAULT_DATASET,
) -> GenerateReport:
    """Generate ``per_object`` candidates for each object (default: every object in the store).

    sample: sampler settings (default: the checkpoint's); guidance overrides its on/off switch.
    objects_per_batch: objects per unit of work (default: enough to fill one sampling batch, but at least
    ``workers`` batches, so that every Ray actor gets work; the same plan in-process, so both give the same keys).
    use_ray / ray_address: run batches on Ray actors (a local Ray, or the cluster at the address;
    "local" starts a local Ray). dataset: the dataset whose candidates folder receives the grasps.
    """
    t0 = time.perf_counter()
    if per_object < 1:
        raise ValueError("per_object must be >= 1")
    meta = ckpt.read_meta(layout, round_)
    cfg = replace(sample) if sample is not None else GeneratorConfig.from_dict(meta["config"]).sample
    if guidance is not None:
        cfg.guidance = bool(guidance)
    checkpoint_id = f"r{round_:03d}-e{int(meta['epoch']):06d}-{meta['weights_sha256'][:12]}"
    config_hash = sampling_config_hash(checkpoint_id, cfg, per_object)
    ids = list(object_ids) if object_ids is not None else ObjectStore(layout).ids()
    if not ids:
        raise ValueError("no objects to generate for: ingest objects first (dga-engine ingest ...)")
    if objects_per_batch is None:
        objects_per_batch = max(1, cfg.batch_size // per_object)
        if workers:
            objects_per_batch = min(objects_per_batch, -(-len(set(ids)) // int(workers)))
    jobs = plan_jobs(ids, per_object, round_, config_hash, objects_per_batch)
    stage = runs.dataset_stage(STAGE, dataset)
    todo = [j for j in jobs if not runs.is_done(layout, stage, j.key)]
    generator = meta.get("generator") or ckpt.generator_name()
    from dga_engine.dataset.store import Dataset

    store = Dataset(layout, dataset)
    written = 0
    errors: list[dict[str, str]] = []
    sampling = 0.0

    def finish(res: BatchResult) -> None:
        nonlocal written, sampling
        if res.table is not None and res.table.num_rows:
            store.write_candidates(res.table, SOURCE, res.key)
        if not res.errors:  # a batch with failed objects stays open: a rerun retries it (same key, same grasps)
            runs.mark_done(layout, stage, res.key, {
                "grasps": res.grasps, "objects": res.objects, "round": round_,
                "sampling_seconds": res.sampling_seconds, "seconds": res.seconds,
            }, config_hash=config_hash, checkpoint=checkpoint_id, worker=res.worker)
        written += res.grasps
        sampling += res.sampling_seconds
        errors.extend(res.errors)
        if on_batch:
            on_batch(res)

    if use_ray or ray_address:
        address = None if ray_address in (None, "", "local") else ray_address
        run_on_ray(layout, round_, cfg, todo, generator, finish, address=address, workers=workers, device=device)
        backend = "ray"
    else:
        if todo:
            sampler = GraspSampler(ckpt.load(layout, round_, device=device or default_device()), cfg, device=device)
            for job in todo:
                finish(run_batch(sampler, layout, job, generator))
        backend = "local"
    return GenerateReport(
        round=round_, checkpoint=checkpoint_id, generator=generator, config_hash=config_hash, per_object=per_object,
        guidance=cfg.guidance, objects=len(set(ids)), batches=len(jobs), batches_skipped=len(jobs) - len(todo),
        batches_run=len(todo), grasps_written=written, errors=errors, backend=backend,
        seconds=time.perf_counter() - t0, sampling_seconds=sampling,
        grasps_per_second=(written / sampling) if sampling > 0 else 0.0, keys=[j.key for j in jobs],
    )


def generate_round(
    layout: Layout,
    round_: int,
    object_ids: Iterable[str] | None,
    *,
    per_object: int,
    config: SampleConfig | None = None,
    dataset: str = DEFAULT_DATASET,
    seed: int | None = None,
    ray_address: str | None = None,
    workers: int | None = None,
) -> GenerateReport:
    """The build flow's entry point: :func:`generate` with a sampler config and an optional Ray address
    (None: in-process; "local": a local Ray; else a cluster address)."""
    sample = replace(config) if config is not None else None
    if sample is not None and seed is not None:
        sample.seed = int(seed)
    return generate(layout, round_, per_object, object_ids, sample=sample, dataset=dataset,
                    ray_address=ray_address, use_ray=ray_address is not None, workers=workers)
