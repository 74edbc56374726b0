"""What every simulator backend shares: the result of one grasp's push test, the push directions, errors.

A backend (:mod:`.mujoco_backend`, :mod:`.warp_backend`, :mod:`.isaacgym_backend`) returns one :class:`SimResult`
per grasp, or the exception that stopped it (:class:`SimulationError` when the simulation diverged); it raises
:class:`BackendUnavailable` when its simulator cannot run here. The registry is :mod:`dga_engine.simulate.backends`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import mujoco
import numpy as np

from dga_engine.dataset.schema import DIRECTIONS
from dga_engine.simulate.scene import Scene


class BackendUnavailable(RuntimeError):
    """The backend's simulator is not installed (or has no device); the message says how to get it."""


_AXES = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float64)
assert len(_AXES) == len(DIRECTIONS)
@contextlib.contextmanager
def quiet_warnings() -> Iterator[list[str]]:
    """Collect MuJoCo's warnings instead of printing them (stdout may carry JSON); restores the handler."""
    seen: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(seen.append)
    try:
        yield seen
    finally:
        mujoco.set_mju_user_warning(previous)


class SimulationError(RuntimeError):
    """The simulation diverged (non-finite state, or the object flew off faster than physically plausible)."""


@dataclass
class SimResult:
    """One grasp's push test.

    displacement: (6,) metres, DIRECTIONS order (the maximum over the push, at least max_displacement
    when that push was stopped early; or its end value with ``displacement="end"``).
    passed: (6,) bool. contact_count: hand collision geoms touching the object after closing.
    steps: simulation steps taken; timings: CPU seconds spent in closing and pushes.
    """

    displacement: np.ndarray
    passed: np.ndarray
    contact_count: int
    steps: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def suc1(self) -> bool:
        return bool(self.passed.any())

    @property
    def suc6(self) -> bool:
        return bool(self.passed.all())


def touching_geoms(scene: Scene, data: mujoco.MjData) -> int:
    """How many distinct hand collision geoms are in contact (distance <= 0) with the object."""
    geoms = set()
    for c in data.contact[: data.ncon]:
        g1, g2 = int(c.geom1), int(c.geom2)
        if c.dist > 0:
            continue
        if scene.obj_geom_mask[g1] and scene.hand_geom_mask[g2]:
            geoms.add(g2)
        elif scene.obj_geom_mask[g2] and scene.hand_geom_mask[g1]:
            geoms.add(g1)
    return len(geoms)


def push_directions(rotation: np.ndarray) -> np.ndarray:
    """(6, 3) unit push directions in the hand (world) frame: the object frame's axes rotated by R^T."""
    return _AXES @ np.asarray(rotation, dtype=np.float64).reshape(3, 3)  # rows: R^T e_k
