"""Position retargeting of human hand keypoints to the engine's ShadowHand, AnyTeleop-style.

The optimiser is ``dex-retargeting``'s (AnyTeleop's) position retargeting, used as the library ships it:
SLSQP (nlopt) over a 6-DoF free root plus the hand's 24 joints, within the URDF's joint limits, minimising
the smooth-L1 distance (``huber_delta``) between ten robot links (five fingertips, five middle phalanges;
:data:`~dga_engine.retarget.keypoints.TARGET_LINKS`) and their keypoints, plus ``temporal_weight`` times
the squared change from the previous frame's solution, each frame starting from the previous one. The
robot is the URDF generated from the engine's MJCF (:mod:`dga_engine.retarget.urdf`), so its root link is
the engine's forearm and its joints carry the engine's names; results map by name into the grasp
convention (root = forearm pose in the keypoints' frame, 24 joints in ``JOINT_NAMES`` order).

What we set differently from the library's defaults, and why (measured in ``benchmarks/bench_retarget.py``,
figures in BENCHMARKS.md and docs/grab.md):

- ``ftol_abs`` 1e-7 (library 1e-5): the loss is a mean over 30 coordinates of a smooth-L1 with beta 2 cm,
  so a 1e-5 improvement per step is reached while fingertips are still several mm off;
- ``predict``: each frame starts from the last two frames' constant-velocity prediction instead of the last
  frame (less lag; the library's temporal term then anchors to that prediction);
- the first frame of a chunk or of a new motion segment: the root is placed by fitting the robot's palm
  points (palm, thumb base, four knuckles) to the human's (wrist, thumb CMC, four MCPs; rigid in the human
  wrist frame, so this is the MANO wrist pose) and passed to the library's ``warm_start``; that frame is
  solved without the temporal term (there is no previous frame) to ``first_frame_ftol_abs``,
  ``first_frame_passes`` times, since it starts from the joint-range middle;
- joints are clamped to the limits (SLSQP's bounds are widened by 1e-3 rad in the library); no low-pass
  filter (offline data).

Frames are cut into chunks of ``chunk_frames`` consecutive frames; chunks run in ``workers`` processes
(each with one retargeter), and each chunk is warm-started on its own, so results do not depend on the
number of workers. Memory: a worker holds one pinocchio model (a few MB) and its chunk.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from dga_engine.conventions import JOINT_NAMES
from dga_engine.retarget.keypoints import (
    N_KEYPOINTS,
    PALM_KEYPOINTS,
    ROBOT_KEYPOINT_LINKS,
    TARGET_HUMAN_INDICES,
    TARGET_LINKS,
    TIP_KEYPOINTS,
    TIP_NAMES,
)


class RetargetError(RuntimeError):
    """The keypoints or the configuration cannot be retargeted; the message says why."""


@dataclass(frozen=True)
class RetargetConfig:
    """How keypoints are retargeted. Defaults: dex-retargeting's ShadowHand position config, except as the module
    says."""

    temporal_weight: float = 4e-3  # the library's normal_delta: smoothness vs following each frame exactly
    huber_delta: float = 0.02  # metres; smooth-L1 beta: quadratic below, linear above (robust to a bad keypoint)
    ftol_abs: float = 1e-7  # SLSQP stop: smaller = closer fits, more iterations (library: 1e-5)
    first_frame_ftol_abs: float = 1e-9  # the SLSQP stop for a chunk's first frame, which starts far from the answer
    first_frame_passes: int = 2  # solves of that first frame
    # start each frame at q[-1] + predict * (q[-1] - q[-2]) (0: the last frame, as the library does)
    predict: float = 1.0
    chunk_frames: int = 64  # consecutive frames per task; each chunk is warm-started on its own
    workers: int = 2  # processes; 1 runs in this process
    joint_limits: bool = True  # keep every joint inside the URDF's (= the MJCF's) limits

    def __post_init__(self) -> None:
        if not 0.0 <= self.predict <= 1.0:
            raise ValueError("predict must be within 0..1")
        if not (
            self.temporal_weight >= 0 and self.huber_delta > 0 and self.ftol_abs > 0 and self.first_frame_ftol_abs > 0
        ):
            raise ValueError("temporal_weight must be >= 0; huber_delta, ftol_abs and first_frame_ftol_abs > 0")
        if min(self.first_frame_passes, self.chunk_frames, self.workers) < 1:
            raise ValueError("first_frame_passes, chunk_frames and workers must be >= 1")

    def replace(self, **changes: Any) -> RetargetConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class RetargetResult:
    """T retargeted frames in the engine's convention, in the keypoints' frame.

    translation: (T, 3) metres, the forearm origin; rotation: (T, 3, 3) the forearm orientation
    (``p = R @ p_forearm + t``); joints: (T, 24) radians, JOINT_NAMES order; tip_error_mm: (T, 5) distance
    of each robot fingertip (ff, mf, rf, lf, th) from its keypoint; cpu_seconds: optimiser CPU time summed
    over the workers; wall_seconds: elapsed time of the whole call.
    """

    translation: np.ndarray
    rotation: np.ndarray
    joints: np.ndarray
    tip_error_mm: np.ndarray
    cpu_seconds: float
    wall_seconds: float

    def __len__(self) -> int:
        return len(self.joints)

    @property
    def quaternion_wxyz(self) -> np.ndarray:
        """(T, 4) unit quaternions, scalar first, w >= 0."""
        from scipy.spatial.transform import Rotation

        xyzw = Rotation.from_matrix(self.rotation).as_quat()
        q = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
        return np.where(q[:, :1] < 0, -q, q)

    def tip_error_summary(self) -> dict[str, dict[str, float]]:
        """Per fingertip and over all: mean and 95th percentile of the error, mm."""
        out = {name: _stats(self.tip_error_mm[:, k]) for k, name in enumerate(TIP_NAMES)}
        out["all"] = _stats(self.tip_error_mm.reshape(-1))
        return out


def _stats(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {"mean": float("nan"), "p95": float("nan")}
    return {"mean": round(float(np.mean(x)), 3), "p95": round(float(np.percentile(x, 95)), 3)}


def check_keypoints(keypoints: np.ndarray, what: str = "keypoints") -> np.ndarray:
    """(T, 21, 3) finite float64 metres, or RetargetError saying what is wrong."""
    kp = np.asarray(keypoints)
    if kp.ndim != 3 or kp.shape[1:] != (N_KEYPOINTS, 3):
        raise RetargetError(
            f"{what} must have shape (T, {N_KEYPOINTS}, 3) (MediaPipe/MANO order, metres); got {kp.shape}"
        )
    if kp.dtype.kind not in "fiu":
        raise RetargetError(f"{what} must be numbers; got dtype {kp.dtype}")
    kp = kp.astype(np.float64)
    bad = ~np.isfinite(kp).all(axis=(1, 2))
    if bad.any():
        raise RetargetError(
            f"{what}: {int(bad.sum())} frames hold NaN or inf (first: frame {int(np.flatnonzero(bad)[0])})"
        )
    span = np.linalg.norm(kp[:, TIP_KEYPOINTS[1]] - kp[:, 0], axis=1)  # wrist to middle fingertip
    if len(kp) and (np.median(span) > 0.6 or np.median(span) < 0.03):
        raise RetargetError(
            f"{what}: wrist to middle fingertip is {np.median(span):.3g} (median); keypoints must be in "
            "metres (a human hand is about 0.19 m)"
        )
    return kp


# ---- one retargeter per process --------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _retargeter(config: RetargetConfig, urdf: str):
    """dex-retargeting's SeqRetargeting on the engine's URDF, configured like its ShadowHand position config."""
    import torch

    torch.set_num_threads(1)  # the library's per-frame tensors are tiny; threads only add hand-offs
    from dex_retargeting.retargeting_config import RetargetingConfig

    cfg = RetargetingConfig(
        type="position",
        urdf_path=urdf,
        add_dummy_free_joint=True,
        target_link_names=list(TARGET_LINKS),
        target_link_human_indices=np.array(TARGET_HUMAN_INDICES),
        normal_delta=config.temporal_weight,
        huber_delta=config.huber_delta,
        has_joint_limits=config.joint_limits,
        low_pass_alpha=-1,
    )  # no low-pass: offline data
    seq = cfg.build()
    seq.optimizer.opt.set_ftol_abs(config.ftol_abs)
    robot = seq.optimizer.robot
    names = list(robot.dof_joint_names)
    if list(seq.optimizer.idx_pin2target) != list(range(robot.dof)):  # so last_qpos and results share one order
        raise RetargetError(
            "dex-retargeting optimises a subset or reordering of the joints; this version is not supported"
        )
    index = {
        "translation": [names.index(f"dummy_{a}_translation_joint") for a in "xyz"],
        "euler": [names.index(f"dummy_{a}_rotation_joint") for a in "xyz"],
        "joints": [names.index(n) for n in JOINT_NAMES],
        "wrist": [names.index(n) for n in ("WRJ1", "WRJ0")],
        "tips": [robot.get_link_index(TARGET_LINKS[TARGET_HUMAN_INDICES.index(k)]) for k in TIP_KEYPOINTS],
        "lower": robot.joint_limits[:, 0].copy(),
        "upper": robot.joint_limits[:, 1].copy(),
    }
    return seq, index


@functools.lru_cache(maxsize=1)
def robot_zero_keypoints(urdf: str | None = None) -> np.ndarray:
    """(21, 3) the robot's keypoint points (ROBOT_KEYPOINT_LINKS) in the forearm frame at the zero pose."""
    import pinocchio as pin

    from dga_engine.retarget.urdf import urdf_path

    model = pin.buildModelFromUrdf(urdf or urdf_path())
    data = model.createData()
    pin.forwardKinematics(model, data, pin.neutral(model))
    pin.updateFramePlacements(model, data)
    return np.stack([data.oMf[model.getFrameId(name, pin.BODY)].translation.copy() for name in ROBOT_KEYPOINT_LINKS])


def palm_fit(keypoints: np.ndarray, urdf: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The forearm pose (R (3,3), t (3,)) that best aligns the robot's palm points with one frame's (Kabsch)."""
    robot = robot_zero_keypoints(urdf)[list(PALM_KEYPOINTS)]
    human = np.asarray(keypoints, dtype=np.float64)[list(PALM_KEYPOINTS)]
    rc, hc = robot.mean(axis=0), human.mean(axis=0)
    u, _, vt = np.linalg.svd((human - hc).T @ (robot - rc))
    d = np.sign(np.linalg.det(u @ vt))
    r = u @ np.diag([1.0, 1.0, d]) @ vt
    return r, hc - r @ rc


def _euler_xyz_matrix(e: np.ndarray) -> np.ndarray:
    """(N, 3) angles of the dummy x, y, z rotation joints (applied in that order, each about its own axis)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("XYZ", e).as_matrix()


def _quat_wxyz(r: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(r).as_quat()
    return np.array([w, x, y, z])


def retarget_chunk(keypoints: np.ndarray, config: RetargetConfig, frames: np.ndarray | None = None,
                   starts: np.ndarray | None = None, urdf: str | None = None) -> dict[str, np.ndarray]:
    """Retarget consecutive frames (n, 21, 3) in this process; see :class:`RetargetResult` for the arrays.

    ``frames`` (n,): the frames' numbers in their sequence (default 0..n-1); the prediction from the two
    previous frames is scaled by the ratio of their gaps. ``starts`` (n,) bool: frames that begin a new
    segment (a break in the motion), warm-started afresh like the first frame. ``urdf``: the generated
    URDF's path (default: generate it in this process).
    """
    from dga_engine.retarget.urdf import urdf_path

    urdf = urdf or urdf_path()
    seq, index = _retargeter(config, urdf)
    robot, opt = seq.optimizer.robot, seq.optimizer
    n = len(keypoints)
    frames = np.arange(n) if frames is None else np.asarray(frames, dtype=np.int64)
    starts = np.zeros(n, dtype=bool) if starts is None else np.asarray(starts, dtype=bool)
    # Work relative to the first wrist: the free root's translation is bounded (+-5 m) and targets are float32.
    origin = keypoints[0, 0].copy() if n else np.zeros(3)
    keypoints = keypoints - origin
    targets = keypoints[:, list(TARGET_HUMAN_INDICES)].astype(np.float32)
    qpos = np.zeros((n, robot.dof))
    tips = np.zeros((n, len(TIP_KEYPOINTS), 3))
    cpu0 = time.process_time()
    segment = 0
    for i in range(n):
        if i == 0 or starts[i]:
            segment = i
            seq.reset()  # fingers start mid-range
            r0, t0 = palm_fit(keypoints[i], urdf)
            seq.warm_start(t0, _quat_wxyz(r0))
            seq.last_qpos[index["wrist"]] = 0.0  # the palm fit assumes straight wrist joints
            # No previous frame: no temporal term, and a tighter stop, since it starts far from the answer.
            opt.norm_delta = 0.0
            opt.opt.set_ftol_abs(config.first_frame_ftol_abs)
            for _ in range(config.first_frame_passes):
                q = seq.retarget(targets[i])
            opt.norm_delta = config.temporal_weight
            opt.opt.set_ftol_abs(config.ftol_abs)
        else:
            if config.predict and i - segment >= 2:
                ratio = config.predict * min(1.0, (frames[i] - frames[i - 1]) / max(1, frames[i - 1] - frames[i - 2]))
                seq.last_qpos = (qpos[i - 1] + ratio * (qpos[i - 1] - qpos[i - 2])).astype(np.float32)
            q = seq.retarget(targets[i])
        # SLSQP's bounds are the limits widened by 1e-3 rad (the library's slack): clamp to the limits proper.
        q = np.clip(q, index["lower"], index["upper"]) if config.joint_limits else q
        qpos[i] = q
        robot.compute_forward_kinematics(q)
        tips[i] = [robot.get_link_pose(link)[:3, 3] for link in index["tips"]]
    cpu = time.process_time() - cpu0
    return {
        "translation": qpos[:, index["translation"]] + origin,
        "rotation": _euler_xyz_matrix(qpos[:, index["euler"]]),
        "joints": qpos[:, index["joints"]],
        "tip_error_mm": np.linalg.norm(tips - keypoints[:, list(TIP_KEYPOINTS)], axis=-1) * 1000.0,
        "cpu_seconds": np.array(cpu),
    }


def _worker_init() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")


class Retargeter:
    """Retargets keypoint sequences, chunks in parallel across ``config.workers`` processes (kept between calls).

    Use as a context manager, or call :meth:`close`; the processes start on the first call that needs them.
    """

    def __init__(self, config: RetargetConfig | None = None) -> None:
        self.config = config or RetargetConfig()
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Retargeter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, keypoints: np.ndarray, frames: np.ndarray | None = None, starts: np.ndarray | None = None,
            advance: Callable[[int], None] | None = None) -> RetargetResult:
        """Retarget (T, 21, 3) keypoints (metres, MediaPipe order) in order.

        ``frames`` (T,): their increasing frame numbers in the sequence (default 0..T-1); ``starts`` (T,)
        bool: frames where a new motion segment begins (see :func:`retarget_chunk`); ``advance(n)`` is
        called as chunks of n frames finish (progress bars).
        """
        wall0 = time.perf_counter()
        kp = check_keypoints(keypoints)
        frames = np.arange(len(kp)) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
        if len(frames) != len(kp) or (len(frames) > 1 and (np.diff(frames) <= 0).any()):
            raise RetargetError(f"frames must be {len(kp)} increasing frame numbers")
        starts = np.zeros(len(kp), dtype=bool) if starts is None else np.asarray(starts, dtype=bool).reshape(-1)
        if len(starts) != len(kp):
            raise RetargetError(f"starts must mark {len(kp)} frames")
        from dga_engine.retarget.urdf import urdf_path

        n = self.config.chunk_frames
        chunks = [(kp[i: i + n], frames[i: i + n], starts[i: i + n]) for i in range(0, len(kp), n)]
        urdf = urdf_path()  # written once here; the workers read it (no MJCF compile in each)
        if self.config.workers == 1 or len(chunks) <= 1:
            results: Iterable[dict[str, np.ndarray]] = (
                retarget_chunk(c, self.config, f, s, urdf) for c, f, s in chunks
            )
        else:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.config.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init,
                )
            k = len(chunks)
            results = self._pool.map(retarget_chunk, [c[0] for c in chunks], [self.config] * k, [c[1] for c in chunks],
                                     [c[2] for c in chunks], [urdf] * k)
        parts = []
        for part in results:
            parts.append(part)
            if advance:
                advance(len(part["joints"]))
        if not parts:
            empty = np.zeros((0, 3))
            return RetargetResult(empty, np.zeros((0, 3, 3)), np.zeros((0, len(JOINT_NAMES))), np.zeros((0, 5)), 0.0,
                                  time.perf_counter() - wall0)
        cat = {k: np.concatenate([p[k] for p in parts]) for k in ("translation", "rotation", "joints", "tip_error_mm")}
        return RetargetResult(cat["translation"], cat["rotation"], cat["joints"], cat["tip_error_mm"],
                              float(sum(float(p["cpu_seconds"]) for p in parts)), time.perf_counter() - wall0)


def retarget(keypoints: np.ndarray, config: RetargetConfig | None = None) -> RetargetResult:
    """One-off :meth:`Retargeter.run` (processes started and stopped for this call)."""
    with Retargeter(config) as r:
        return r.run(keypoints)
