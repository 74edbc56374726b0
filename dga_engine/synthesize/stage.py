"""Seed synthesis for objects in the store: the library API behind ``dga-engine synthesize``.

- :func:`synthesize_object` - candidates for one object (GRASP_SCHEMA table, filter fields null);
- :func:`run_synthesis` - the stage: per object, synthesise, write the candidates to the dataset's
  candidates area (``candidates/synthesis/<key>.parquet``) with a completion record;
- :func:`read_verdicts` - after the filter stage ran on them (``run_filter(source="synthesis")``, composed
  by the CLI and ``dga_engine.build``), what it decided about each object's candidates.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from dga_engine import runs
from dga_engine.dataset.schema import pose_table
from dga_engine.hand import default_hand
from dga_engine.hand.rotations import matrix_to_quat
from dga_engine.layout import Layout, safe_name
from dga_engine.synthesize.config import FAST, GENERATOR_NAME, GENERATOR_VERSION, SOURCE, SynthesisConfig
from dga_engine.synthesize.energy import GraspEnergy
from dga_engine.synthesize.hand_sdf import default_hand_sdf, default_hand_spheres
from dga_engine.synthesize.initialize import initial_poses
from dga_engine.synthesize.optimize import anneal, clean_up
from dga_engine.threads import compute_threads

log = logging.getLogger(__name__)
STAGE = "synthesize"


@dataclass
class BatchStats:
    """Diagnostics of one optimised batch (means over its grasps unless stated)."""

    scale: float
    grasps: int
    seconds: float
    accept_rate: float  # Metropolis acceptance over the annealing
    restarted: int  # grasps re-initialised
    energy: float  # final total energy after annealing
    terms: dict[str, float]  # final unweighted terms after annealing
    pen_mm: float  # after refinement: max depth of dense object points in the hand (mean over grasps)
    pen_mm_max: float  # ... its maximum over the batch
    close_mm: float  # after refinement: mean gap of the palm-side points near the surface


def generator_tag() -> str:
    return f"{GENERATOR_NAME}-{GENERATOR_VERSION}"


def _seed_for(seed: int, object_id: str, scale_index: int, batch: int) -> int:
    """A per-batch seed from the run seed, the object and the batch: reproducible and independent."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(object_id.encode()), scale_index, batch])
    return int(ss.generate_state(1, dtype=np.uint64)[0] & 0x7FFFFFFFFFFFFFFF)


def synthesize_object(
    layout: Layout,
    object_id: str,
    config: SynthesisConfig = FAST,
    seed: int = 0,
    *,
    stats: list[BatchStats] | None = None,
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Synthesise ``config.per_object`` grasps per object scale for one stored object.

    Returns a GRASP_SCHEMA table (round 0, source ``synthesis``, filter fields null). Deterministic for a
    given (object, config, seed) on a given machine. Per-batch diagnostics are appended to ``stats``;
    ``progress(n)`` is called after every batch of n grasps.
    """
    with compute_threads(config.threads):
        return _synthesize(layout, object_id, config, seed, stats, progress)


def _synthesize(layout: Layout, object_id: str, config: SynthesisConfig, seed: int,
                stats: list[BatchStats] | None, progress: Callable[[int], None] | None) -> pa.Table:
    from dga_engine.objects.fields import object_grid
    from dga_engine.objects.store import ObjectStore

    asset = ObjectStore(layout).load(object_id)
    hand = default_hand()
    sdf = default_hand_sdf()
    spheres = default_hand_spheres()
    chash = config.config_hash()
    tables = []
    for si, scale in enumerate(config.object_scales):
        mesh = asset.mesh.copy()
        mesh.apply_scale(float(scale))
        field = object_grid(layout, asset, scale, config.field_resolution)  # kept with the object after a first build
        centre = torch.as_tensor(mesh.bounds.mean(0), dtype=hand.lower.dtype)
        energy = GraspEnergy(hand, spheres, field, centre, config)
        dense = torch.as_tensor(asset.dense_points * float(scale), dtype=hand.lower.dtype)
        ts, qs, js = [], [], []
        n_batches = math.ceil(config.per_object / config.batch_size)
        for bi in range(n_batches):
            n = min(config.batch_size, config.per_object - bi * config.batch_size)
            t0 = time.perf_counter()
            s = _seed_for(seed, object_id, si, bi)
            rng = np.random.default_rng(s)
            gen = torch.Generator().manual_seed(s)
            pose0 = initial_poses(hand, mesh, n, config, rng)
            res = anneal(energy, pose0, config, gen, reinit=lambda m: initial_poses(hand, mesh, m, config, rng))
            pose, diag = (
                clean_up(energy, res.pose, config, dense, sdf, res.contact_idx if config.close_contacts else None)
                if (config.close_steps or config.cleanup_steps)
                else (res.pose, None)
            )
            with torch.no_grad():
                ts.append(pose.t.double().numpy())
                qs.append(matrix_to_quat(pose.matrix().double()).numpy())
                js.append(hand.clamp_joints(pose.q).double().numpy())
            if stats is not None:
                stats.append(BatchStats(
                    scale=float(scale), grasps=n, seconds=time.perf_counter() - t0, accept_rate=res.accept_rate,
                    restarted=res.restarted, energy=float(res.energy.mean()),
                    terms={k: float(v.mean()) for k, v in res.terms.items()},
                    pen_mm=float(diag["pen_mm"].mean()) if diag else float("nan"),
                    pen_mm_max=float(diag["pen_mm"].max()) if diag else float("nan"),
                    close_mm=float(diag["close_mm"].mean()) if diag else float("nan"),
                ))  # fmt: skip
            if progress is not None:
                progress(n)
        count = sum(len(t) for t in ts)
        tables.append(pose_table(
            object_id, np.concatenate(ts), np.concatenate(qs), np.concatenate(js),
            source=SOURCE,
            source_record_id=[f"{chash}:seed={seed}:scale={scale:g}:{k}" for k in range(count)],
            round_=0, generator=generator_tag(), generator_config_hash=chash, object_scale=float(scale),
        ))  # fmt: skip
    return pa.concat_tables(tables)


# ---------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------


@dataclass
class ObjectReport:
    """One object's synthesis (and, once :func:`read_verdicts` read it, the filter's verdict). Rates are fractions
    of candidates."""

    object_id: str
    key: str  # candidates file key and completion-record unit
    candidates: int = 0
    seconds: float = 0.0  # synthesis wall time (0 when skipped as already done)
    skipped: bool = False  # already done by an earlier run (resume)
    error: str | None = None  # why this object failed (the others go on)
    accepted: int | None = None  # filter: grasps accepted (None when the filter did not run)
    suc1: float | None = None
    suc6: float | None = None
    pen_mm: float | None = None  # mean max depth of hand points in the object over simulated grasps
    div: float | None = None  # mean per-joint std (rad) over accepted grasps (the paper's Div)
    reasons: dict[str, int] = field(default_factory=dict)  # reject reason -> count
    stats: dict[str, Any] = field(default_factory=dict)  # synthesis diagnostics (energies, acceptance, restarts)


@dataclass
class SynthesisReport:
    """What :func:`run_synthesis` did. ``objects`` in input order; totals over them."""

    objects: list[ObjectReport]
    config_hash: str
    seed: int
    candidates: int = 0  # candidates written (including resumed objects')
    accepted: int | None = None  # accepted by the filter (None until read_verdicts ran)
    seconds: float = 0.0  # synthesis wall time of this run
    filter_seconds: float = 0.0  # set by whoever ran the filter after this stage (the CLI)
    failed: int = 0  # objects that could not be synthesised
    filter_error: str | None = None  # why the filter did not finish (the candidates stay written for a later run)

    @property
    def grasps_per_second(self) -> float:
        made = sum(o.candidates for o in self.objects if not o.skipped)
        return made / self.seconds if self.seconds > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        if self.accepted is None or not self.candidates:
            return None
        return self.accepted / self.candidates

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grasps_per_second"] = self.grasps_per_second
        d["acceptance"] = self.acceptance
        return d


def unit_key(object_id: str, seed: int, config: SynthesisConfig) -> str:
    """The candidates key (and completion unit) of one object in one run: object, seed and config."""
    return safe_name(f"{object_id}-s{int(seed)}-{config.config_hash()[:8]}")


def _summarise_stats(stats: list[BatchStats]) -> dict[str, Any]:
    if not stats:
        return {}
    n = sum(s.grasps for s in stats)

    def mean(get) -> float:
        return float(sum(get(s) * s.grasps for s in stats) / n)

    terms = {k: mean(lambda s, k=k: s.terms[k]) for k in stats[0].terms}
    return {
        "energy": mean(lambda s: s.energy), "terms": terms, "accept_rate": mean(lambda s: s.accept_rate),
        "restarted": int(sum(s.restarted for s in stats)), "pen_mm": mean(lambda s: s.pen_mm),
        "pen_mm_max": float(max(s.pen_mm_max for s in stats)), "close_mm": mean(lambda s: s.close_mm),
    }  # fmt: skip


def _synthesize_unit(
    root: str, object_id: str, config: SynthesisConfig, seed: int
) -> tuple[pa.Table, list[BatchStats], float]:
    """One object's synthesis (in this process or a worker): its table, batch diagnostics, wall seconds."""
    t0 = time.perf_counter()
    stats: list[BatchStats] = []
    table = synthesize_object(Layout.at(root), object_id, config, seed, stats=stats)
    return table, stats, time.perf_counter() - t0


def run_synthesis(
    layout: Layout,
    object_ids: Sequence[str],
    config: SynthesisConfig = FAST,
    seed: int = 0,
    *,
    dataset: str | None = None,
    workers: int = 1,
    resume: bool = True,
    progress: Callable[[int], None] | None = None,
) -> SynthesisReport:
    """Synthesise candidates for ``object_ids`` into the dataset's candidates area (source ``synthesis``).

    Per object: :func:`synthesize_object`, then ``Dataset.write_candidates(table, "synthesis", key)``
    with ``key = unit_key(...)``, then a completion record (stage ``synthesize``, that unit). With
    ``resume``, objects whose record exists are skipped (their candidates are already written). An
    object that fails is reported with its error; the others go on. ``workers`` > 1 synthesises that
    many objects at once in worker processes (one torch thread each; the grasps do not depend on it).
    ``progress(n)`` is called as grasps are synthesised. The physics filter is a stage of its own
    (``dga_engine.simulate.run_filter(source="synthesis")``); :func:`read_verdicts` then reads its verdicts.
    """
    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import DEFAULT_DATASET

    name = dataset or DEFAULT_DATASET
    stage = runs.dataset_stage(STAGE, name)
    report = SynthesisReport(objects=[], config_hash=config.config_hash(), seed=int(seed))
    t_all = time.perf_counter()
    todo = _pending_objects(layout, stage, object_ids, config, seed, resume, progress, report)
    pooled = workers > 1 and len(todo) > 1
    finish = functools.partial(_finish, layout, Dataset(layout, name), stage, config, seed, report,
                               progress if pooled else None)  # in-process runs report progress per batch instead
    if pooled:
        _synthesise_pooled(layout, todo, config, seed, workers, finish)
    else:
        _synthesise_in_process(layout, todo, config, seed, progress, finish)
    report.seconds = time.perf_counter() - t_all
    report.candidates = sum(o.candidates for o in report.objects)
    return report


def _pending_objects(layout: Layout, stage: str, object_ids: Sequence[str], config: SynthesisConfig, seed: int,
                     resume: bool, progress: Callable[[int], None] | None,
                     report: SynthesisReport) -> list[ObjectReport]:
    """One report item per object (bad ids fail here, done ones are skipped); the items still to synthesise."""
    todo: list[ObjectReport] = []
    for oid in object_ids:
        try:
            key = unit_key(oid, seed, config)
        except ValueError as exc:
            report.objects.append(ObjectReport(object_id=str(oid), key="", error=str(exc)))
            report.failed += 1
            continue
        item = ObjectReport(object_id=oid, key=key)
        report.objects.append(item)
        if resume and runs.is_done(layout, stage, key):
            record = runs.read_record(layout, stage, key) or {}
            item.skipped = True
            item.candidates = int(record.get("stats", {}).get("candidates", 0))
            item.stats = record.get("stats", {})
            if progress is not None:
                progress(item.candidates)
            continue
        todo.append(item)
    return todo


def _finish(layout: Layout, ds: Any, stage: str, config: SynthesisConfig, seed: int, report: SynthesisReport,
            progress: Callable[[int], None] | None, item: ObjectReport,
            outcome: tuple[pa.Table, list[BatchStats], float] | BaseException) -> None:
    """Write one object's candidates, then its completion record (in this process)."""
    if not isinstance(outcome, BaseException):
        table, batch_stats, seconds = outcome
        try:
            ds.write_candidates(table, SOURCE, item.key)
        except Exception as exc:  # noqa: BLE001 - reported per object
            outcome = exc
    if isinstance(outcome, BaseException):
        log.warning("synthesis failed for %s: %s", item.object_id, outcome)
        item.error = f"{type(outcome).__name__}: {outcome}"
        report.failed += 1
        return
    item.candidates, item.seconds = table.num_rows, seconds
    item.stats = {"candidates": item.candidates, "seconds": seconds, **_summarise_stats(batch_stats)}
    runs.mark_done(layout, stage, item.key, item.stats, config=config.to_dict(), config_hash=report.config_hash,
                   seed=int(seed), generator=generator_tag())  # fmt: skip
    if progress is not None:
        progress(item.candidates)


def _synthesise_in_process(layout: Layout, todo: list[ObjectReport], config: SynthesisConfig, seed: int,
                           progress: Callable[[int], None] | None, finish: Callable[..., None]) -> None:
    for item in todo:
        t0 = time.perf_counter()
        batch_stats: list[BatchStats] = []
        try:
            table = synthesize_object(layout, item.object_id, config, seed, stats=batch_stats, progress=progress)
            outcome: Any = (table, batch_stats, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - one bad object must not stop the batch
            outcome = exc
        finish(item, outcome)


def _synthesise_pooled(layout: Layout, todo: list[ObjectReport], config: SynthesisConfig, seed: int, workers: int,
                       finish: Callable[..., None]) -> None:
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from dga_engine.procs import pool_worker_init

    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch/OpenMP threads run
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx, initializer=pool_worker_init,
                             initargs=(os.getpid(),)) as pool:  # workers die with a killed parent
        futures = {pool.submit(_synthesize_unit, layout.root, item.object_id, config, seed): item for item in todo}
        for fut in as_completed(futures):
            exc = fut.exception()
            finish(futures[fut], exc if exc is not None else fut.result())


def read_verdicts(layout: Layout, report: SynthesisReport, dataset: str | None = None) -> SynthesisReport:
    """Fill ``report`` with the filter's verdicts on its candidates (after ``run_filter(source="synthesis")``).

    Per object: accepted grasps (read back from the shards by grasp id), reject reasons, Suc.1/Suc.6, Pen and
    Div over its filtered candidates; ``report.accepted`` is their total. Reads the dataset only.
    """
    import pyarrow.compute as pc

    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import DEFAULT_DATASET
    from dga_engine.simulate.metrics import summarise
    from dga_engine.simulate.stage import unit_key as filter_key

    ds = Dataset(layout, dataset or DEFAULT_DATASET)
    reject_keys = set(ds.reject_keys())
    total = 0
    for item in report.objects:
        if item.error or not item.candidates:
            continue
        ids = ds.candidates(SOURCE, keys=[item.key]).column("grasp_id")
        out_key = filter_key(SOURCE, item.key, item.object_id)
        accepted = ds.read(object_ids=[item.object_id], sources=[SOURCE])
        accepted = accepted.filter(pc.is_in(accepted.column("grasp_id"), value_set=ids))
        rejected = ds.rejects(keys=[out_key]) if out_key in reject_keys else None
        parts = [accepted.select(accepted.column_names)]
        if rejected is not None and rejected.num_rows:
            rejected = rejected.filter(pc.is_in(rejected.column("grasp_id"), value_set=ids))
            parts.append(rejected.select(accepted.column_names))
            reasons, counts = np.unique(rejected.column("reason").to_pylist(), return_counts=True)
            item.reasons = {r: int(c) for r, c in zip(reasons, counts)}
        both = pa.concat_tables(parts)
        m = summarise(both) if both.num_rows else {}
        item.accepted = accepted.num_rows
        item.suc1, item.suc6, item.pen_mm, item.div = m.get("suc1"), m.get("suc6"), m.get("pen_mm"), m.get("div")
        total += item.accepted
    report.accepted = total
    return report
