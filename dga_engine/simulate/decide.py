"""The filter's decision for one task's grasps: pose checks, penetration, push test, reason.

Per grasp, in the order of :data:`~dga_engine.dataset.schema.REJECT_REASONS` (the first that applies is
the grasp's ``reason``; null = accepted):

1. ``invalid_pose``: a non-finite number, ``object_scale`` outside :data:`OBJECT_SCALE_RANGE`, a quaternion
   whose norm is off by more than ``quat_norm_tol`` (it is normalised otherwise: unit, ``w >= 0`` in the
   output), a root farther than ``max_translation`` from the object origin, or a joint more than
   ``joint_limit_tol`` outside the hand's limits;
2. ``object_missing``: the object id is not in the object store (or its files cannot be read);
3. ``penetration_object_hand`` / ``penetration_hand_object``: at the grasp pose, object points deeper
   than ``max_pen_object_hand_mm`` inside the hand's collision geoms, or hand surface points deeper than
   ``max_pen_hand_object_mm`` inside the object (:mod:`dga_engine.physics.penetration`; both are
   recorded for every valid grasp, with the reference's Pen ``pen_dga_mm`` and DexGraspNet's summed
   ``pen_object_hand_sum_mm`` beside them). Such grasps are not simulated unless ``simulate_penetrating``;
4. ``unstable``: fewer than ``directions_required`` of the six pushes passed;
5. ``sim_error``: the simulator diverged or raised, for that grasp or for its object's scene (e.g. MuJoCo
   refusing a mesh), or the penetration measure failed; ``detail`` says how. It never ends the run.

Accepted therefore means: a valid pose on a known object, both penetration limits met, and (by default)
all six push directions passed - the paper's dataset filter (Suc.6 + penetration).

:func:`run_task` decides one :class:`Task` (grasps of one object) in four steps - :func:`check_task`,
:func:`load_object`, :func:`measure_penetration`, :func:`push_test` - each of which stops the grasps it
rejects from reaching the next. Scheduling tasks and assembling tables is :mod:`dga_engine.simulate.engine`.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dga_engine.dataset.schema import DIRECTIONS
from dga_engine.hand import HandModel, default_hand
from dga_engine.hand.mjcf import JOINT_NAMES
from dga_engine.layout import Layout
from dga_engine.objects.store import ObjectNotFound, ObjectStore
from dga_engine.physics.penetration import (
    ObjectCloud,
    ObjectParts,
    dga_pen_cloud,
    dga_pen_mm,
    hand_into_object_mm,
    object_into_hand_mm,
    object_into_hand_sum_mm,
)
from dga_engine.simulate.backends import BackendUnavailable, make_backend
from dga_engine.simulate.closing import adam_sign_targets
from dga_engine.simulate.config import FilterConfig

# object_scale multiplies a metric, real-size stored mesh: outside this range the grasp's object is no
# object (a unit slip), and MuJoCo refuses such meshes ("mesh surface area is too small").
OBJECT_SCALE_RANGE = (1e-2, 1e2)


@dataclass
class Task:
    """Grasps of one object to filter: ``rows`` index the input table; arrays are (n, ...) float32."""

    root: str
    object_id: str
    rows: np.ndarray
    translation: np.ndarray
    rotation: np.ndarray  # (n, 4) wxyz as given
    joints: np.ndarray
    scale: np.ndarray
    config: dict[str, Any]
    backend: str
    tag: int = 0  # caller's label, returned in the result (the stage's unit index)


@dataclass
class TaskResult:
    """Filter columns for the rows of one task (n = len(rows))."""

    object_id: str
    rows: np.ndarray
    displacement: np.ndarray  # (n, 6) metres, NaN where not simulated
    suc1: np.ndarray  # (n,) int8: 1/0, -1 = not simulated
    suc6: np.ndarray
    pen_hand_object_mm: np.ndarray  # (n,) NaN where not computed
    pen_object_hand_mm: np.ndarray
    pen_dga_mm: np.ndarray
    pen_object_hand_sum_mm: np.ndarray
    contact_count: np.ndarray  # (n,) int32, -1 = not simulated
    attempted: np.ndarray  # (n,) bool: the backend ran (or tried to run) this grasp
    reason: list[str | None]
    detail: list[str | None]
    sim_backend: str
    stats: dict[str, float] = field(default_factory=dict)
    tag: int = 0


# ---------------------------------------------------------------------------------------------------
# Per-process caches (a worker keeps its hand model, last object and backend between tasks)
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _hand(seed: int):
    return default_hand() if seed == 0 else HandModel(seed=seed)


@functools.lru_cache(maxsize=4)
def _backend(name: str, config_items: tuple):
    return make_backend(name, FilterConfig(**dict(config_items)))


_ASSETS: OrderedDict[tuple[str, str], Any] = OrderedDict()


def _asset(root: str, object_id: str):
    key = (root, object_id)
    if key in _ASSETS:
        _ASSETS.move_to_end(key)
        return _ASSETS[key]
    asset = ObjectStore(Layout.at(root)).load(object_id)
    _ASSETS[key] = asset
    while len(_ASSETS) > 2:
        _ASSETS.popitem(last=False)
    return asset


# ---------------------------------------------------------------------------------------------------
# One task
# ---------------------------------------------------------------------------------------------------


def check_poses(translation, rotation, joints, scale, lower, upper, config: FilterConfig) -> list[str | None]:
    """Why each pose is invalid (a message) or None. Arrays as in :class:`Task`."""
    n = len(translation)
    out: list[str | None] = [None] * n
    for name, arr in (
        ("translation", translation),
        ("rotation", rotation),
        ("joints", joints),
        ("object_scale", scale),
    ):
        bad = ~np.isfinite(arr.reshape(n, -1)).all(axis=1)
        for i in np.where(bad)[0]:
            out[i] = out[i] or f"non-finite values in {name}"
    qn = np.linalg.norm(rotation, axis=1)
    tn = np.linalg.norm(translation, axis=1)
    tol = config.joint_limit_tol
    with np.errstate(invalid="ignore"):
        low = joints < lower - tol
        high = joints > upper + tol
    for i in range(n):
        if out[i]:
            continue
        if not OBJECT_SCALE_RANGE[0] <= scale[i] <= OBJECT_SCALE_RANGE[1]:
            out[i] = (
                f"object_scale {scale[i]:g} is outside [{OBJECT_SCALE_RANGE[0]:g}, {OBJECT_SCALE_RANGE[1]:g}]: the "
                "object would not be an object at that size (units?)"
            )
        elif abs(qn[i] - 1.0) > config.quat_norm_tol:
            out[i] = f"rotation quaternion has norm {qn[i]:.4g} (expected 1 within {config.quat_norm_tol:g})"
        elif tn[i] > config.max_translation:
            out[i] = f"root is {tn[i]:.3g} m from the object origin (> {config.max_translation:g} m: units?)"
        elif low[i].any() or high[i].any():
            k = int(np.argmax(low[i] | high[i]))
            out[i] = (f"joint {JOINT_NAMES[k]} = {joints[i, k]:.4g} rad is outside its limits "
                      f"[{lower[k]:.4g}, {upper[k]:.4g}] by more than {tol:g}")
    return out


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=1).reshape(-1, 3, 3)  # fmt: skip


@dataclass
class ObjectGeometry:
    """What the penetration measures and the reference squeeze need of one object at one scale.

    cloud: points for the filter's own measures (dense or standard, per the config); parts: the convex
    parts for the exact inside test (None with the sign test); pen_cloud: the reference Pen's first 4096
    dense points; points: the 2048 standard points (the squeeze's object samples and the summed depth);
    push_volume: m^3 that scales the push force (None: the backend uses the parts' volume).
    """

    cloud: Any
    parts: Any
    pen_cloud: Any
    points: Any
    push_volume: float | None


_GEOMETRY: dict[tuple, ObjectGeometry] = {}


def object_geometry(root: str, asset, scale: float, config: FilterConfig) -> ObjectGeometry:
    """The object's point clouds (with their k-d trees) and parts at ``scale``, kept for the last
    (object, scale, settings) of this process."""
    dense, exact = config.dense_object_points, config.hand_object_inside == "parts"
    key = (root, asset.object_id, float(scale), dense, exact, config.push_volume)
    if key not in _GEOMETRY:
        _GEOMETRY.clear()
        mesh_volume = config.push_volume == "mesh" and asset.meta.watertight and asset.meta.volume > 0
        cloud = ObjectCloud.from_asset(asset, scale, dense=dense)
        _GEOMETRY[key] = ObjectGeometry(
            cloud=cloud,
            parts=ObjectParts.from_asset(asset, scale) if exact else None,
            pen_cloud=dga_pen_cloud(asset.dense_points, asset.dense_normals, scale),
            points=ObjectCloud.from_asset(asset, scale, dense=False) if dense else cloud,
            push_volume=float(asset.meta.volume) * float(scale) ** 3 if mesh_volume else None,
        )
    return _GEOMETRY[key]


def limit_depths_mm(hand, fk, cloud, parts, config: FilterConfig) -> tuple[np.ndarray, np.ndarray]:
    """The two depths the filter's limits judge (n,) in mm: hand points inside the object (the hand surface
    points, without the forearm unless ``forearm_points``; inside by ``parts`` when given) and the object's
    points inside the hand's collision geoms. The refine stage measures with this too."""
    points = hand.surface_points(fk) if config.forearm_points else hand.erf_points(fk)
    return hand_into_object_mm(points, cloud, parts=parts), object_into_hand_mm(cloud, fk, hand)


def penetration_mm(hand, geometry: ObjectGeometry, translation, rotation_m, joints,
                   config: FilterConfig) -> dict[str, np.ndarray]:
    """Per-grasp depths (n,) in mm at the grasp poses (one scale), keyed by their column names.

    ``pen_hand_object_mm`` / ``pen_object_hand_mm``: the filter's limits (:mod:`dga_engine.physics.penetration`):
    hand surface points (64 per collision link; without the forearm unless ``forearm_points``) inside
    the object, and the object's points inside the hand's collision geoms. ``pen_dga_mm``: the
    reference's Pen; ``pen_object_hand_sum_mm``: the summed depth of the 2048 standard points.
    """
    with torch.no_grad():
        fk = hand.forward_kinematics(torch.as_tensor(translation), torch.as_tensor(rotation_m), torch.as_tensor(joints))
        ho, oh = limit_depths_mm(hand, fk, geometry.cloud, geometry.parts, config)
        return {
            "pen_hand_object_mm": ho,
            "pen_object_hand_mm": oh,
            "pen_dga_mm": dga_pen_mm(hand, fk, geometry.pen_cloud),
            "pen_object_hand_sum_mm": object_into_hand_sum_mm(geometry.points, fk, hand),
        }


def run_task(task: Task) -> TaskResult:
    """Filter one task's grasps (runs in a worker process or in-process)."""
    config = FilterConfig(**task.config)
    res = _empty_result(task)
    hand = _hand(config.seed)
    valid = check_task(task, hand, config, res)
    if not valid.any():
        return res
    asset = load_object(task, valid, res)
    if asset is None:
        return res
    rot_m = np.zeros((len(task.rows), 3, 3), dtype=np.float32)
    rot_m[valid] = _quat_to_matrix(task.rotation[valid].astype(np.float64))
    simulate = measure_penetration(task, hand, asset, rot_m, valid, config, res)
    if not simulate.any():
        return res
    push_test(task, hand, asset, rot_m, simulate, config, res)
    return res


def _empty_result(task: Task) -> TaskResult:
    """A result with nothing computed yet: NaN depths and displacements, -1 counts, no reasons."""
    n = len(task.rows)
    return TaskResult(
        object_id=task.object_id,
        rows=task.rows,
        displacement=np.full((n, 6), np.nan, dtype=np.float32),
        suc1=np.full(n, -1, dtype=np.int8),
        suc6=np.full(n, -1, dtype=np.int8),
        pen_hand_object_mm=np.full(n, np.nan, dtype=np.float32),
        pen_object_hand_mm=np.full(n, np.nan, dtype=np.float32),
        pen_dga_mm=np.full(n, np.nan, dtype=np.float32),
        pen_object_hand_sum_mm=np.full(n, np.nan, dtype=np.float32),
        contact_count=np.full(n, -1, dtype=np.int32),
        attempted=np.zeros(n, dtype=bool),
        reason=[None] * n,
        detail=[None] * n,
        sim_backend="",
        stats={"grasps": n, "validate": 0.0, "load": 0.0, "penetration": 0.0, "simulated": 0},
        tag=task.tag,
    )


def check_task(task: Task, hand, config: FilterConfig, res: TaskResult) -> np.ndarray:
    """Step 1: mark ``invalid_pose`` grasps; returns the (n,) mask of valid ones."""
    t0 = time.process_time()
    lower, upper = hand.lower.numpy().astype(np.float64), hand.upper.numpy().astype(np.float64)
    invalid = check_poses(task.translation, task.rotation, task.joints, task.scale, lower, upper, config)
    for i, why in enumerate(invalid):
        if why:
            res.reason[i], res.detail[i] = "invalid_pose", why
    res.stats["validate"] = time.process_time() - t0
    return np.array([why is None for why in invalid])


def load_object(task: Task, valid: np.ndarray, res: TaskResult):
    """Step 2: the task's object asset, or None with every valid grasp marked ``object_missing``."""
    t0 = time.process_time()
    try:
        asset = _asset(task.root, task.object_id)
        if not asset.parts:
            raise ValueError("it has no convex parts")
    except Exception as exc:  # noqa: BLE001 - any unreadable object is reported per grasp, the batch goes on
        why = (f"object {task.object_id!r} is not in the object store: ingest it first (dga-engine ingest ...)"
               if isinstance(exc, ObjectNotFound) else f"object {task.object_id!r} could not be loaded: {exc}")
        for i in np.where(valid)[0]:
            res.reason[i], res.detail[i] = "object_missing", why
        return None
    res.stats["load"] = time.process_time() - t0
    return asset


def measure_penetration(task: Task, hand, asset, rot_m: np.ndarray, valid: np.ndarray, config: FilterConfig,
                        res: TaskResult) -> np.ndarray:
    """Step 3: record the depths of every valid grasp and mark those past a limit; returns the (n,) mask of
    grasps to simulate (within both limits, or all measured ones with ``simulate_penetrating``)."""
    simulate = np.zeros(len(task.rows), dtype=bool)
    t0 = time.process_time()
    for scale in np.unique(task.scale[valid]):
        idx = np.where(valid & (task.scale == scale))[0]
        try:
            geometry = object_geometry(task.root, asset, float(scale), config)
            depths = penetration_mm(hand, geometry, task.translation[idx], rot_m[idx], task.joints[idx], config)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - odd geometry at this scale: these grasps fail, the run goes on
            _sim_error(res, idx, f"penetration could not be measured: {type(exc).__name__}: {exc}")
            continue
        for name, values in depths.items():
            getattr(res, name)[idx] = values
        ho, oh = depths["pen_hand_object_mm"], depths["pen_object_hand_mm"]
        for k, i in enumerate(idx):
            if oh[k] > config.max_pen_object_hand_mm:
                res.reason[i] = "penetration_object_hand"
                res.detail[i] = (
                    f"object points {oh[k]:.2f} mm inside the hand (limit {config.max_pen_object_hand_mm:g} mm)"
                )
            elif ho[k] > config.max_pen_hand_object_mm:
                res.reason[i] = "penetration_hand_object"
                res.detail[i] = (
                    f"hand points {ho[k]:.2f} mm inside the object (limit {config.max_pen_hand_object_mm:g} mm)"
                )
            simulate[i] = res.reason[i] is None or config.simulate_penetrating
    res.stats["penetration"] = time.process_time() - t0
    return simulate


def push_test(task: Task, hand, asset, rot_m: np.ndarray, simulate: np.ndarray, config: FilterConfig,
              res: TaskResult) -> None:
    """Step 4: run the backend on the ``simulate`` grasps (one scene per scale) and record the outcomes;
    grasps still without a reason that hold too few pushes become ``unstable``."""
    backend = _backend(task.backend, tuple(sorted(config.to_dict().items())))
    res.sim_backend = backend.name
    before = dict(backend.stats)
    for scale in np.unique(task.scale[simulate]):
        idx = np.where(simulate & (task.scale == scale))[0]
        try:
            geometry = object_geometry(task.root, asset, float(scale), config)
            targets = None
            if config.squeeze == "adam-sign":
                targets, _ = adam_sign_targets(
                    hand, geometry.points, task.translation[idx], rot_m[idx], task.joints[idx], config
                )
            outcomes = backend.simulate(
                f"{task.root}|{task.object_id}",
                asset.parts,
                float(scale),
                task.translation[idx].astype(np.float64),
                rot_m[idx].astype(np.float64),
                task.joints[idx].astype(np.float64),
                targets=targets,
                volume=geometry.push_volume,
            )
        except (MemoryError, BackendUnavailable):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. MuJoCo refuses the scene at this scale: these grasps fail
            outcomes = [exc] * len(idx)
        for i, out in zip(idx, outcomes):
            _record_outcome(res, i, out, config)
    res.attempted = simulate
    res.stats["simulated"] = int(simulate.sum())
    for k, v in backend.stats.items():
        res.stats[k] = v - before.get(k, 0)


def _record_outcome(res: TaskResult, i: int, out, config: FilterConfig) -> None:
    """Grasp ``i``'s push-test outcome (a SimResult, or the exception that stopped it) into ``res``."""
    if isinstance(out, BaseException):
        if res.reason[i] is None:
            res.reason[i], res.detail[i] = "sim_error", _short(f"{type(out).__name__}: {out}")
        return
    res.displacement[i] = out.displacement
    res.suc1[i], res.suc6[i] = int(out.suc1), int(out.suc6)
    res.contact_count[i] = out.contact_count
    passed = int(out.passed.sum())
    if res.reason[i] is None and passed < config.directions_required:
        failed = [d for d, ok in zip(DIRECTIONS, out.passed) if not ok]
        res.reason[i] = "unstable"
        res.detail[i] = (f"{passed}/6 push directions held (need {config.directions_required}); "
                         f"moved >= {config.max_displacement * 100:g} cm along {' '.join(failed)}")


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())  # MuJoCo errors span lines
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _sim_error(res: TaskResult, idx: np.ndarray, why: str) -> None:
    for i in idx:
        if res.reason[i] is None:
            res.reason[i], res.detail[i] = "sim_error", _short(why)
