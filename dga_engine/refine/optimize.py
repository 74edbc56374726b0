"""Refining the grasps of one object: check, optimise within bounds, check again.

:class:`ObjectRefiner` holds one object at one scale (its dense points, convex parts and fields, built
once) and refines batches of its grasps:

1. **check** every grasp with the physics filter's own cheap measures (``dga_engine.simulate.decide``):
   joint limits (with the filter's tolerance), object points inside the hand and hand points inside the
   object (``penetration_mm``, the same functions and points the filter uses);
2. **optimise** the grasps that need it (all of them with ``refine_all``): joints are pulled inside
   their limits, then (polish) the seed-synthesis energy is annealed from the given pose and (both) a
   least-squares repair removes what penetrates while holding the grasp's contacts - with
   :class:`~dga_engine.synthesize.optimize.PoseBounds` projecting every step back within the bounds;
3. **check again** with the same measures: a grasp whose refined pose is inside both penetration limits
   and its joint limits is ``refined``; any other keeps its original pose exactly (``failed``), so the
   filter later gives it the verdict it would have had. Grasps that needed nothing are ``unchanged``.

The repair is :class:`~dga_engine.refine.least_squares.LeastSquaresRepair` (the smallest change that
meets the targets) on the filter's own points and inside test; the anneal uses the object's SDF grid
(``GridField.from_asset``, kept in the object store: :mod:`dga_engine.objects.fields`), read or built only
when a preset anneals.

Memory: the object's dense points (10240) and parts, a 64^3 grid when annealing (2 MB), and per batch of
B grasps about B x 1024 near object points and B x 1216 hand points: tens of MB for B = 128.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from dga_engine.hand import default_hand
from dga_engine.hand.mjcf import JOINT_NAMES
from dga_engine.hand.rotations import matrix_to_quat, matrix_to_rot6d, quat_to_matrix
from dga_engine.refine.config import RefineConfig
from dga_engine.simulate.config import FilterConfig

STATUS_UNCHANGED, STATUS_REFINED, STATUS_FAILED = "unchanged", "refined", "failed"


@dataclass
class RefineOutcome:
    """Refined poses of n grasps of one object (float32 numpy) and what happened to each.

    translation (n, 3) m, rotation (n, 4) wxyz, joints (n, 24) rad: the refined pose where status is
    ``refined``, else the input exactly. joint_change / translation_change / rotation_change (n,):
    the largest joint move (rad), root move (m) and root turn (rad) of the returned pose (0 when not
    refined). pen_object_hand_mm / pen_hand_object_mm: (n, 2) before and after (NaN where not measured).
    detail: why a grasp was left as it was (failed) or why it was refined.
    """

    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    status: list[str]
    joint_change: np.ndarray
    translation_change: np.ndarray
    rotation_change: np.ndarray
    pen_object_hand_mm: np.ndarray
    pen_hand_object_mm: np.ndarray
    detail: list[str | None]
    stats: dict[str, float] = field(default_factory=dict)


def _rotation_angle(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    """(n,) angle of Ra Rb^T, radians."""
    tr = np.einsum("nij,nij->n", Ra, Rb)  # trace(Ra Rb^T)
    return np.arccos(np.clip((tr - 1.0) / 2.0, -1.0, 1.0))


class ObjectRefiner:
    """Refines grasps of one stored object at one uniform scale (see the module docstring)."""

    def __init__(self, asset, scale: float, config: RefineConfig, filter_config: FilterConfig | None = None,
                 layout=None) -> None:
        """``layout``: the storage root the asset was loaded from; its SDF grid is then kept there
        (:mod:`dga_engine.objects.fields`) instead of being built on every run."""
        from dga_engine.physics.penetration import ObjectCloud, ObjectParts
        from dga_engine.synthesize.hand_sdf import default_hand_sdf, default_hand_spheres

        if not asset.parts:
            raise ValueError(f"object {asset.object_id!r} has no convex parts: re-ingest it (dga-engine ingest ...)")
        self.asset, self.scale, self.layout = asset, float(scale), layout
        self.config = config
        self.filter_config = filter_config or FilterConfig()
        self.hand = default_hand()
        self.hand_sdf = default_hand_sdf()
        self.spheres = default_hand_spheres()
        self.cloud = ObjectCloud.from_asset(asset, self.scale, dense=self.filter_config.dense_object_points)
        self.parts = ObjectParts.from_asset(asset, self.scale)
        dtype = self.hand.lower.dtype
        self.centre = torch.as_tensor(self.cloud.centre, dtype=dtype)
        self._grid = None

    # ---- the two checks -------------------------------------------------------------------------

    def measure(self, t: np.ndarray, R: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Object-into-hand and hand-into-object maximum depths (n,), mm: the filter's own measures."""
        from dga_engine.simulate.decide import limit_depths_mm

        parts = self.parts if self.filter_config.hand_object_inside == "parts" else None
        with torch.no_grad():
            fk = self.hand.forward_kinematics(torch.as_tensor(t, dtype=torch.float32), torch.as_tensor(R, dtype=torch.float32),
                                              torch.as_tensor(q, dtype=torch.float32))  # fmt: skip
            ho, oh = limit_depths_mm(self.hand, fk, self.cloud, parts, self.filter_config)
        return oh, ho

    def _joint_excess(self, q: np.ndarray) -> np.ndarray:
        lower, upper = self.hand.lower.numpy(), self.hand.upper.numpy()
        return np.maximum(np.maximum(lower - q, q - upper), 0.0)  # (n, 24) rad outside the limits

    # ---- refine ---------------------------------------------------------------------------------

    def refine(self, translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray, seed: int = 0) -> RefineOutcome:
        """Refine n grasps (translation (n,3), rotation (n,4) wxyz, joints (n,24)) of this object.

        Poses the filter would call invalid (non-finite, a bad quaternion or scale, far away) are left
        ``unchanged`` for the filter to reject; ``seed`` makes the anneal's draws reproducible.
        """
        return refine_together([(self, translation, rotation, joints, seed)])[0]

    def check(self, translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray) -> "_Work":
        """Step 1: measure every grasp; the work left is the rows to optimise."""
        from dga_engine.simulate.decide import check_poses

        cfg, fc = self.config, self.filter_config
        t = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
        n = len(t)
        quat = np.asarray(rotation, dtype=np.float64).reshape(n, 4)
        q = np.asarray(joints, dtype=np.float64).reshape(n, 24)
        lower, upper = self.hand.lower.double().numpy(), self.hand.upper.double().numpy()
        scale = np.full(n, self.scale, dtype=np.float32)
        # Joint limits are not a reason to leave a pose alone here: they are what a repair fixes.
        invalid = check_poses(t, quat, np.clip(q, lower, upper), scale, lower, upper, fc)
        out = RefineOutcome(
            translation=t.astype(np.float32), rotation=quat.astype(np.float32), joints=q.astype(np.float32),
            status=[STATUS_UNCHANGED] * n, joint_change=np.zeros(n, np.float32), translation_change=np.zeros(n, np.float32),
            rotation_change=np.zeros(n, np.float32), pen_object_hand_mm=np.full((n, 2), np.nan, np.float32),
            pen_hand_object_mm=np.full((n, 2), np.nan, np.float32), detail=[None] * n,
            stats={"grasps": n, "checked": 0, "optimised": 0, "refined": 0, "failed": 0, "check_cpu_s": 0.0,
                   "optimise_cpu_s": 0.0, "recheck_cpu_s": 0.0},
        )  # fmt: skip
        valid = np.array([why is None for why in invalid], dtype=bool)
        R = np.zeros((n, 3, 3))
        idx = np.flatnonzero(valid)
        if len(idx):
            R[idx] = quat_to_matrix(torch.as_tensor(quat[idx] / np.linalg.norm(quat[idx], axis=1, keepdims=True))).numpy()
            c0 = time.process_time()
            oh, ho = self.measure(t[idx], R[idx], q[idx])
            out.stats["check_cpu_s"] = time.process_time() - c0
            out.pen_object_hand_mm[idx, 0], out.pen_hand_object_mm[idx, 0] = oh, ho
            excess = self._joint_excess(q[idx]).max(axis=1)
            out.stats["checked"] = len(idx)
            over = (oh > fc.max_pen_object_hand_mm) | (ho > fc.max_pen_hand_object_mm) | (excess > fc.joint_limit_tol)
            idx = idx if cfg.refine_all else idx[over]
        return _Work(self, out, idx, t, R, q)

    def finish(self, work: "_Work", pose) -> None:
        """Step 3 (after the anneal, if any, moved ``pose`` - the work's rows): the repair, the second check, and
        every row's status."""
        cfg, fc, out, rows = self.config, self.filter_config, work.out, work.rows
        t, R, q, bounds = work.t, work.R, work.q, work.bounds
        c0 = time.process_time()
        from dga_engine.synthesize.energy import Pose

        solver, x = self.solver(), pose.flat()
        deep = torch.as_tensor(out.pen_hand_object_mm[rows, 0] > cfg.pen_hand_object_target_mm / 2)
        parts = []
        for a in range(0, len(rows), cfg.batch_size):  # bounded memory whatever the object's grasp count
            sl = torch.arange(a, min(len(rows), a + cfg.batch_size))
            parts.append(solver(x[sl], bounds.take(sl), keep_contacts=cfg.keep_contacts,
                                deep=None if cfg.anneal_steps else deep[sl]))
        pose = Pose.unflat(torch.cat(parts))
        with torch.no_grad():
            t1 = pose.t.double().numpy()
            R1 = pose.matrix().double().numpy()
            q1 = pose.q.double().numpy()
        c1 = time.process_time()
        oh, ho = self.measure(t1, R1, q1)
        out.stats["optimise_cpu_s"] += c1 - c0
        out.stats["recheck_cpu_s"] += time.process_time() - c1
        out.pen_object_hand_mm[rows, 1], out.pen_hand_object_mm[rows, 1] = oh, ho
        dq = np.abs(q1 - q[rows]).max(axis=1)
        dt = np.linalg.norm(t1 - t[rows], axis=1)
        dr = _rotation_angle(R1, R[rows])
        eps = 1e-5  # float32 round-off of the projection
        within = (dq <= cfg.max_joint_change + eps) & (dt <= cfg.max_translation_change + eps) & (dr <= cfg.max_rotation_change + eps)
        in_limits = self._joint_excess(q1).max(axis=1) <= eps
        feasible = bounds.feasible().numpy()
        ok = feasible & within & in_limits & (oh <= fc.max_pen_object_hand_mm) & (ho <= fc.max_pen_hand_object_mm)
        quat1 = matrix_to_quat(torch.as_tensor(R1)).numpy()
        for k, i in enumerate(rows):
            if ok[k]:
                out.translation[i], out.rotation[i], out.joints[i] = t1[k], quat1[k], q1[k]
                out.joint_change[i], out.translation_change[i], out.rotation_change[i] = dq[k], dt[k], dr[k]
                out.status[i] = STATUS_REFINED
                out.stats["refined"] += 1
                continue
            out.status[i] = STATUS_FAILED
            out.stats["failed"] += 1
            if not feasible[k]:
                j = int(np.argmax((bounds.q_lo > bounds.q_hi)[k].numpy()))
                out.detail[i] = (f"joint {JOINT_NAMES[j]} = {q[i, j]:.3f} rad is more than {cfg.max_joint_change:g} rad "
                                 f"outside its limits; the pose was kept")
            else:
                out.detail[i] = (f"not fixed within the {cfg.name} bounds: object into hand {oh[k]:.2f} mm, hand into "
                                 f"object {ho[k]:.2f} mm after refining; the pose was kept")

    def solver(self):
        """The least-squares repair for this object (the filter's points and inside test, the preset's targets)."""
        from dga_engine.refine.least_squares import LeastSquaresRepair

        cfg = self.config
        normals = self.asset.dense_normals if self.filter_config.dense_object_points else self.asset.normals
        return LeastSquaresRepair(
            self.hand, self.hand_sdf, self.spheres, self.cloud.points, normals, self.parts.contains,
            object_target=cfg.pen_object_hand_target_mm / 1000, hand_target=cfg.pen_hand_object_target_mm / 1000,
            contact_radius=cfg.contact_radius, contact_slack=cfg.contact_slack, contact_weight=cfg.contact_weight,
            damping=cfg.damping,
            iterations=cfg.iterations,
        )  # fmt: skip

    def grid(self):
        """The object's SDF grid at this scale (on first use: read from the object store, else built, 0.1-1 s)."""
        if self._grid is None:
            from dga_engine.objects.fields import object_grid
            from dga_engine.physics.fields import GridField

            if self.layout is not None:
                self._grid = object_grid(self.layout, self.asset, self.scale, self.config.field_resolution)
            else:
                self._grid = GridField.from_asset(self.asset, self.scale, resolution=self.config.field_resolution)
        return self._grid


@dataclass
class _Work:
    """One object's grasps between the steps of :func:`refine_together`."""

    refiner: ObjectRefiner
    out: RefineOutcome
    rows: np.ndarray  # the grasps to optimise
    t: np.ndarray  # (n, 3) every grasp's translation, float64
    R: np.ndarray  # (n, 3, 3)
    q: np.ndarray  # (n, 24)
    bounds: object = None  # PoseBounds of the rows

    def pose(self):
        from dga_engine.synthesize.energy import Pose

        dtype = self.refiner.hand.lower.dtype
        return Pose(torch.as_tensor(self.t[self.rows], dtype=dtype),
                    matrix_to_rot6d(torch.as_tensor(self.R[self.rows], dtype=dtype)),
                    torch.as_tensor(self.q[self.rows], dtype=dtype))  # fmt: skip


def refine_together(items: list[tuple[ObjectRefiner, np.ndarray, np.ndarray, np.ndarray, int]]) -> list[RefineOutcome]:
    """Refine the grasps of several objects: (refiner, translation, rotation, joints, seed) each.

    The anneal of ``polish`` runs over the grasps of all the objects at once, ``batch_size`` at a time (one
    stacked SDF grid, each grasp reading its own object's): a batch's fixed cost per step is shared by
    more grasps, which is where most of its time goes for the few dozen grasps of one object. The
    repair and the checks run per object. Every refiner must have the same config; its ``threads`` torch and
    BLAS threads run all of it (checks, anneal and repair).
    """
    from dga_engine.threads import compute_threads

    if not items:
        return []
    with compute_threads(items[0][0].config.threads):
        return _refine_together(items)


def _refine_together(items: list[tuple[ObjectRefiner, np.ndarray, np.ndarray, np.ndarray, int]]) -> list[RefineOutcome]:
    from dga_engine.physics.fields import GridField, PerGraspField
    from dga_engine.synthesize.config import FAST
    from dga_engine.synthesize.energy import GraspEnergy, Pose
    from dga_engine.synthesize.optimize import PoseBounds, anneal

    works = [refiner.check(t, quat, q) for refiner, t, quat, q, _ in items]
    cfg = works[0].refiner.config
    hand = works[0].refiner.hand
    for w in works:
        w.out.stats["optimised"] = len(w.rows)
        w.bounds = PoseBounds.around(w.pose(), hand.lower, hand.upper, cfg.max_joint_change,
                                     cfg.max_translation_change, cfg.max_rotation_change)  # fmt: skip
    poses = {id(w): w.pose() for w in works}
    if cfg.anneal_steps:
        synth = FAST.replace(n_iter=cfg.anneal_steps, step_size=cfg.anneal_step_size, n_contact=cfg.anneal_contacts,
                             temperature=cfg.anneal_temperature, restart_at=(),
                             temperature_final=min(FAST.temperature_final, cfg.anneal_temperature))  # fmt: skip
        # (work, first row, last row) chunks of at most batch_size grasps, objects kept whole where they fit
        chunks, current, used = [], [], 0
        for w in works:
            for a in range(0, len(w.rows), cfg.batch_size):
                b = min(len(w.rows), a + cfg.batch_size)
                if used + (b - a) > cfg.batch_size and current:
                    chunks.append(current)
                    current, used = [], 0
                current.append((w, a, b))
                used += b - a
        if current:
            chunks.append(current)
        seed = zlib.crc32(":".join(str(it[4]) for it in items).encode())
        for c, chunk in enumerate(chunks):
            c0 = time.process_time()
            grids = GridField.stack([w.refiner.grid() for w, _, _ in chunk])
            index = torch.cat([torch.full((b - a,), k, dtype=torch.long) for k, (_, a, b) in enumerate(chunk)])
            centre = torch.cat([w.refiner.centre.expand(b - a, 3) for w, a, b in chunk])
            pose = Pose(*(torch.cat([getattr(poses[id(w)], f)[a:b] for w, a, b in chunk]) for f in ("t", "r6", "q")))
            bounds = PoseBounds.cat([w.bounds.take(torch.arange(a, b)) for w, a, b in chunk])
            energy = GraspEnergy(hand, works[0].refiner.spheres, PerGraspField(grids, index), centre, synth)
            moved = anneal(energy, pose, synth, torch.Generator().manual_seed(seed + c), bounds=bounds,
                           contact_idx=energy.nearest_contacts(pose)).pose
            k0 = 0
            for w, a, b in chunk:
                p = poses[id(w)]
                for f in ("t", "r6", "q"):
                    getattr(p, f)[a:b] = getattr(moved, f)[k0 : k0 + (b - a)]
                k0 += b - a
            share = (time.process_time() - c0) / len(index)
            for w, a, b in chunk:
                w.out.stats["optimise_cpu_s"] += share * (b - a)
    for w in works:
        if len(w.rows):
            w.refiner.finish(w, poses[id(w)])
    return [w.out for w in works]
