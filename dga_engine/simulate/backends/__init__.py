"""Simulator backends: the same push-test protocol on different engines, chosen by name.

A backend turns (object parts, scale, N grasp poses) into N :class:`SimResult` (or the exception that
stopped that grasp; the shared contract is :mod:`.base`). Everything else - pose checks, penetration, the
decision - is shared (:mod:`dga_engine.simulate.decide`), so backends differ only in how they step physics.

=============  =========================================================================================
``mujoco``     CPU, MuJoCo (default). One grasp at a time; parallel across processes (``workers``).
``mujoco-warp`` GPU, MuJoCo Warp: all grasps of an object as parallel worlds. Needs ``mujoco-warp``.
``isaacgym``   GPU, Isaac Gym Preview 4 (PhysX), the reference simulator. Needs NVIDIA's tarball.
=============  =========================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import trimesh

from dga_engine.simulate.backends.base import BackendUnavailable, SimResult
from dga_engine.simulate.config import FilterConfig

BACKENDS = ("mujoco", "mujoco-warp", "isaacgym")


class Backend(Protocol):
    name: str  # recorded in each grasp's ``sim_backend`` (engine and version)
    stats: dict[str, float]  # cumulative seconds per phase (scene, closing, push) and counters

    def simulate(
        self, key: str, parts: Sequence[trimesh.Trimesh], scale: float,
        translation: np.ndarray, rotation: np.ndarray, joints: np.ndarray,
        targets: np.ndarray | None = None, volume: float | None = None,
    ) -> list[SimResult | BaseException]:
        """Push-test N grasps of one object (key identifies object+scale for scene reuse).

        translation (N, 3), rotation (N, 3, 3), joints (N, 24): root poses in the object frame.
        targets (N, 24): squeeze targets computed by the caller (``squeeze="adam-sign"``), or None for
        the backend's own :func:`~dga_engine.simulate.closing.squeeze_targets`. volume: m^3 that scales
        the push force (``push_volume="mesh"``), or None for the parts' volume.
        """
        ...


def make_backend(name: str, config: FilterConfig) -> Backend:
    """The backend called ``name``; raises BackendUnavailable with install instructions when missing."""
    if name == "mujoco":
        from dga_engine.simulate.backends.mujoco_backend import MujocoBackend

        return MujocoBackend(config)
    if name == "mujoco-warp":
        from dga_engine.simulate.backends.warp_backend import WarpBackend

        return WarpBackend(config)
    if name == "isaacgym":
        from dga_engine.simulate.backends.isaacgym_backend import IsaacGymBackend

        return IsaacGymBackend(config)
    raise ValueError(f"unknown simulation backend {name!r}; choose one of {', '.join(BACKENDS)}")


def check_backend(name: str) -> None:
    """Fail early (before any work) when backend ``name`` cannot run here."""
    if name == "mujoco":
        return
    if name == "mujoco-warp":
        from dga_engine.simulate.backends.warp_backend import require_warp

        require_warp()
        return
    if name == "isaacgym":
        from dga_engine.simulate.backends.isaacgym_backend import require_isaacgym

        require_isaacgym()
        return
    raise ValueError(f"unknown simulation backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "BackendUnavailable", "SimResult", "check_backend", "make_backend"]
