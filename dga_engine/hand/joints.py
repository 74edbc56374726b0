"""Joint vectors <-> named dicts, in the engine's joint order (:data:`~dga_engine.hand.mjcf.JOINT_NAMES`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dga_engine.hand.mjcf import JOINT_NAMES, PREFIX


def joints_to_dict(joints: Sequence[float] | np.ndarray, prefix: str = "") -> dict[str, float]:
    """A 24-vector to ``{name: radians}``; ``prefix='robot0:'`` gives the MJCF joint names."""
    values = np.asarray(joints, dtype=np.float64).reshape(-1)
    if values.shape[0] != len(JOINT_NAMES):
        raise ValueError(f"expected {len(JOINT_NAMES)} joint angles, got {values.shape[0]}")
    return {prefix + name: float(v) for name, v in zip(JOINT_NAMES, values)}


def dict_to_joints(named: Mapping[str, float]) -> np.ndarray:
    """``{name: radians}`` (with or without the ``robot0:`` prefix) to a 24-vector; every joint is required."""
    plain = {k.removeprefix(PREFIX): float(v) for k, v in named.items()}
    missing = [n for n in JOINT_NAMES if n not in plain]
    unknown = sorted(set(plain) - set(JOINT_NAMES))
    if missing or unknown:
        raise KeyError(f"joint dict does not match the ShadowHand joints: missing {missing}, unknown {unknown}")
    return np.array([plain[n] for n in JOINT_NAMES], dtype=np.float64)
