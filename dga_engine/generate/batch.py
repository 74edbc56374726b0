"""One unit of generation work and its body: the same in-process and on a Ray actor.

:class:`BatchJob` names the objects of one object batch and the key its candidates are written under;
:func:`run_batch` samples them with a loaded :class:`~dga_engine.generate.sample.GraspSampler` and returns a
:class:`BatchResult` (the caller writes it: :mod:`dga_engine.generate.stage`); :func:`plan_jobs` splits the
objects into batches with deterministic keys. :mod:`.stage` and :mod:`.workers` both use this module.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dga_engine.dataset.schema import pose_table
from dga_engine.generate.data import ObjectBank
from dga_engine.generate.sample import GraspSampler, object_seed
from dga_engine.layout import Layout
from dga_engine.objects.store import ObjectStore

SOURCE = "generator"  # the candidates' source


@dataclass(frozen=True)
class BatchJob:
    """One unit of generation work: these objects, ``per_object`` grasps each, written under ``key``."""

    key: str
    object_ids: tuple[str, ...]
    per_object: int
    round: int
    config_hash: str


@dataclass
class BatchResult:
    """What one batch produced. table: GRASP_SCHEMA candidates (None when every object failed)."""

    key: str
    table: pa.Table | None
    grasps: int
    objects: int
    errors: list[dict[str, str]] = field(default_factory=list)
    sampling_seconds: float = 0.0
    seconds: float = 0.0
    worker: dict[str, str] = field(default_factory=dict)  # where it ran (Ray: node id, host, pid); kept in its record


def plan_jobs(
    object_ids: Iterable[str], per_object: int, round_: int, config_hash: str, objects_per_batch: int
) -> list[BatchJob]:
    ids = sorted(set(object_ids))
    size = max(1, int(objects_per_batch))
    jobs = []
    for i in range(0, len(ids), size):
        chunk = tuple(ids[i : i + size])
        digest = hashlib.sha256("\x1f".join(chunk).encode()).hexdigest()[:12]
        jobs.append(BatchJob(f"round-{round_:03d}-{config_hash[:10]}-{digest}", chunk, per_object, round_, config_hash))
    return jobs


def run_batch(sampler: GraspSampler, layout: Layout, job: BatchJob, generator: str) -> BatchResult:
    """Sample one object batch (the body of both the in-process and the Ray path)."""
    t0 = time.perf_counter()
    store = ObjectStore(layout)
    errors: list[dict[str, str]] = []
    assets = {}
    for object_id in job.object_ids:
        try:
            assets[object_id] = store.load(object_id, with_parts=False)
        except Exception as exc:  # a missing or damaged object: report it, keep the batch going
            errors.append({"object_id": object_id, "error": f"{type(exc).__name__}: {exc}"})
    good = [o for o in job.object_ids if o in assets]
    if not good:
        return BatchResult(job.key, None, 0, 0, errors, 0.0, time.perf_counter() - t0)
    scale = float(sampler.config.object_scale)
    try:
        bank = ObjectBank.build(layout, [(o, scale) for o in good], sampler.checkpoint.config.model, assets=assets)
    except Exception as exc:
        bad = [{"object_id": o, "error": f"{type(exc).__name__}: {exc}"} for o in good]
        return BatchResult(job.key, None, 0, 0, errors + bad, 0.0, time.perf_counter() - t0)
    seeds = [object_seed(sampler.config.seed, job.round, o) for o in good]
    samples = sampler.sample(bank, [job.per_object] * len(good), seeds)
    ids = [good[i] for i in samples.obj]
    counter: dict[str, int] = {}
    rec = []
    for o in ids:
        k = counter.get(o, 0)
        counter[o] = k + 1
        rec.append(f"{job.config_hash}:{o}:{k}")
    finite = (
        np.isfinite(samples.translation).all(1)
        & np.isfinite(samples.joints).all(1)
        & np.isfinite(samples.rotation).all(1)
    )
    if not finite.all():
        errors.append(
            {"object_id": "*", "error": f"{int((~finite).sum())} sampled grasps were not finite and were dropped"}
        )
    keep = np.flatnonzero(finite)
    table = pose_table(
        [ids[i] for i in keep], samples.translation[keep], samples.rotation[keep], samples.joints[keep],
        source=SOURCE, source_record_id=[rec[i] for i in keep], round_=job.round, generator=generator,
        generator_config_hash=job.config_hash, object_scale=scale,
    )
    return BatchResult(job.key, table, table.num_rows, len(good), errors, samples.seconds, time.perf_counter() - t0)
