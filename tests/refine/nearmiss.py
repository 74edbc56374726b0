"""Near misses of valid grasps, built like the failures seen on real source releases.

Tried on real DexGraspNet and UniDexGrasp files, the filter rejected validator-passed grasps because the
engine's hand (the gymnasium-robotics MJCF) is a little fatter and differently limited than the hands the
sources were optimised with: object points 1-4 mm inside its capsules and palm, and joints 0.05-0.3 rad
past its limits (THJ1, FFJ2/MFJ2 slightly negative, FFJ3/LFJ3 spread). These helpers make such near misses
from grasps that do pass, with the same measures the filter uses:

- :func:`press` moves each grasp into its object until the deepest object point is ``depth_mm`` inside the
  hand: either the root along the palm's normal (a palm that sits too deep) or every finger's flexion
  joints together (fingers that wrap too tightly);
- :func:`past_limits` pushes one joint that sits at (within 0.05 rad of) one of its limits past it.

:func:`near_misses` makes each kind from one robust grasp of the tests' box. Used by the refine tests and
``benchmarks/bench_refine.py``.
"""

from __future__ import annotations

import numpy as np
import torch

from dga_engine.hand import default_hand
from dga_engine.hand.mjcf import JOINT_NAMES
from dga_engine.hand.rotations import quat_to_matrix
from dga_engine.physics.penetration import ObjectCloud, object_into_hand_mm

J = {n: i for i, n in enumerate(JOINT_NAMES)}
FLEXION = [J[n] for n in ("FFJ2", "FFJ1", "MFJ2", "MFJ1", "RFJ2", "RFJ1", "LFJ2", "LFJ1", "THJ1")]
# The joints the real releases overshoot, and which way (lower or upper limit).
LIMIT_JOINTS = (("THJ1", "upper"), ("THJ1", "lower"), ("FFJ2", "lower"), ("MFJ2", "lower"), ("FFJ3", "lower"),
                ("FFJ3", "upper"), ("LFJ3", "lower"), ("LFJ3", "upper"), ("THJ4", "upper"), ("RFJ2", "lower"))


def matrices(quat: np.ndarray) -> np.ndarray:
    return quat_to_matrix(torch.as_tensor(np.asarray(quat, dtype=np.float64))).numpy()


def palm_normals(t: np.ndarray, R: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(n, 3) unit normals of the palm's palm side, in the object frame (toward a grasped object)."""
    hand = default_hand()
    palm = hand.link_names.index("palm")
    local = hand.inner_normal[hand.inner_link == palm].mean(0).double().numpy()
    with torch.no_grad():
        fk = hand.forward_kinematics(torch.as_tensor(t).float(), torch.as_tensor(R).float(), torch.as_tensor(q).float())
    n = fk.rot[:, palm].double().numpy() @ local
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _depth(cloud: ObjectCloud, t, R, q) -> np.ndarray:
    hand = default_hand()
    with torch.no_grad():
        fk = hand.forward_kinematics(torch.as_tensor(t).float(), torch.as_tensor(R).float(), torch.as_tensor(q).float())
    return object_into_hand_mm(cloud, fk, hand)


def press(cloud: ObjectCloud, t: np.ndarray, quat: np.ndarray, q: np.ndarray, depth_mm: np.ndarray, mode: np.ndarray,
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grasps pressed into the object until object points reach ``depth_mm`` (n,) inside the hand.

    mode (n,): "palm" moves the root along the palm normal, "fingers" adds one common angle to the
    flexion joints. Bisection on the amount (25 halvings). Returns (t, q, achieved depth mm).
    """
    t, q = np.array(t, dtype=np.float64), np.array(q, dtype=np.float64)
    R = matrices(quat)
    normal = palm_normals(t, R, q)
    lo, hi = np.zeros(len(t)), np.where(mode == "palm", 0.02, 0.6)  # metres / radians
    direction = np.zeros((len(t), 24))
    direction[:, FLEXION] = 1.0

    def moved(amount):
        tt = t + np.where((mode == "palm")[:, None], normal * amount[:, None], 0.0)
        qq = q + np.where((mode == "fingers")[:, None], direction * amount[:, None], 0.0)
        return tt, qq

    for _ in range(25):
        mid = (lo + hi) / 2
        tt, qq = moved(mid)
        deep = _depth(cloud, tt, R, qq) > depth_mm
        hi = np.where(deep, mid, hi)
        lo = np.where(deep, lo, mid)
    tt, qq = moved(hi)
    return tt, qq, _depth(cloud, tt, R, qq)


def past_limits(q: np.ndarray, excess: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str | None]]:
    """Each grasp with one joint that sits within 0.05 rad of a limit pushed ``excess`` (n,) rad past it.

    Returns the joints and, per grasp, the joint moved (None where no listed joint sits at a limit).
    """
    hand = default_hand()
    lower, upper = hand.lower.double().numpy(), hand.upper.double().numpy()
    q = np.array(q, dtype=np.float64)
    moved: list[str | None] = []
    for i in range(len(q)):
        options = [(n, side) for n, side in LIMIT_JOINTS
                   if abs(q[i, J[n]] - (lower if side == "lower" else upper)[J[n]]) < 0.05]
        if not options:
            moved.append(None)
            continue
        name, side = options[rng.integers(len(options))]
        k = J[name]
        q[i, k] = lower[k] - excess[i] if side == "lower" else upper[k] + excess[i]
        moved.append(name)
    return q, moved


# Grasps of the tests' 5 x 5 x 10 cm box (``box_object``) that the filter accepts: (t, quat wxyz, q). Found by
# seed synthesis on the box (fast preset, seed 1) and kept because they are robust: each stayed accepted under 12
# or 13 of 16 random perturbations of 0.5 mm (root) and 0.01 rad (joints). The first is the tests' usual grasp.
BOX_GRASPS = [
    ([0.07499, 0.13885, -0.36366],
     [0.63400, 0.17983, 0.11407, -0.74343],
     [-0.1570, -0.1417, -0.1226, 0.2274, 0.5211, 0.4492, -0.1484, 0.0420, 0.5342, 0.9422, -0.1088, 0.0449, 0.7177,
      0.9547, 0.0999, -0.0852, 0.0692, 0.3409, 0.5609, 0.2032, 0.4765, 0.1968, -0.5101, -0.8534]),
    ([-0.20409, -0.05844, -0.27407],
     [0.92816, -0.13648, 0.31478, 0.14427],
     [-0.2569, 0.1912, -0.3041, 0.4999, 0.4956, 0.7351, -0.2139, 0.7880, 0.7102, 0.6117, -0.1241, 0.8018, 0.8351,
      0.2695, 0.1095, 0.1393, 0.0581, 0.3205, 0.3069, 0.7825, 0.4550, 0.2090, -0.1479, -0.6031]),
    ([-0.08600, 0.01911, -0.35381],
     [0.06477, -0.12679, 0.11286, -0.98336],
     [0.0103, 0.1816, -0.0874, 0.1675, 0.2205, 0.1056, -0.0575, 0.2827, 0.0447, 0.2236, -0.0329, 0.2245, 0.0805,
      0.0864, 0.1596, 0.2461, 0.4243, 0.2455, 0.3346, 0.5228, 0.8439, 0.1294, 0.0082, -0.4320]),
    ([0.28993, 0.13045, -0.14560],
     [0.86358, 0.10119, -0.49001, 0.06225],
     [0.0019, 0.0541, 0.1046, 0.5440, 0.5414, 0.6428, 0.1634, 0.6926, 0.8894, 0.3440, -0.1762, 1.1478, 0.6144,
      1.0415, 0.1692, 0.0312, 0.0429, 0.1645, 0.0412, 0.3013, 0.9522, 0.2088, 0.0132, -0.0763]),
    ([0.22189, -0.27448, 0.07186],
     [0.12030, 0.39079, -0.57843, -0.70585],
     [-0.1471, 0.2241, -0.2000, 1.0640, 0.4368, 0.1439, 0.0305, 0.8639, 0.5531, 0.2840, -0.2963, 0.9180, 0.9917,
      0.5761, 0.4640, 0.3490, 0.5758, 0.7145, 0.3929, 0.2629, 0.7085, -0.2088, -0.0411, -0.6866]),
]
GRASP_T, GRASP_QUAT, GRASP_Q = BOX_GRASPS[0]


def near_misses(asset, kinds: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t, quat, q) of the grasp made into each kind of near miss:

    ``valid`` (as it is), ``palm2`` / ``fingers2`` (pressed 2 mm into the hand by the root / the fingers),
    ``deep`` (the palm 3 cm into the box), ``limit0.1`` / ``limit0.4`` (THJ2, at 0.197 next to its upper
    limit 0.209, pushed that far past it).
    """

    n = len(kinds)
    t = np.tile(np.array(GRASP_T), (n, 1))
    quat = np.tile(np.array(GRASP_QUAT), (n, 1))
    q = np.tile(np.array(GRASP_Q), (n, 1))
    cloud = ObjectCloud.from_asset(asset)
    for i, kind in enumerate(kinds):
        if kind in ("palm2", "fingers2"):
            t[i : i + 1], q[i : i + 1], _ = press(cloud, t[i : i + 1], quat[i : i + 1], q[i : i + 1],
                                                          np.array([2.0]), np.array([kind[:-1]]))
        elif kind == "deep":
            t[i] += 0.03 * palm_normals(t[i : i + 1], matrices(quat[i : i + 1]), q[i : i + 1])[0]
        elif kind.startswith("limit"):
            q[i, J["THJ2"]] = 0.2094 + float(kind[len("limit"):])
        else:
            assert kind == "valid", kind
    return t, quat, q
