"""Configuration of seed grasp synthesis (DexGraspNet-style optimisation), with presets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

GENERATOR_NAME = "synthesis"
GENERATOR_VERSION = "0.1.0"
SOURCE = "synthesis"  # the grasps' `source` column and the candidates area they are written to


@dataclass(frozen=True)
class SynthesisConfig:
    """How grasps are synthesised. Defaults follow DexGraspNet's optimiser where one exists.

    Lengths in metres, angles in radians. Energy weights multiply terms whose units are noted in
    :mod:`dga_engine.synthesize.energy`.
    """

    # --- batch and schedule ---
    per_object: int = 64  # candidates written per object (and per object scale)
    batch_size: int = 64  # grasps optimised together; per_object is done in ceil(per_object / batch_size) batches
    n_iter: int = 1500  # optimisation steps per batch (DexGraspNet: 6000 on a GPU)
    object_scales: tuple[float, ...] = (1.0,)  # uniform scales applied to the stored object (grasps are made per scale)
    # --- initialisation around the object (DexGraspNet's inflated-convex-hull initialisation) ---
    hull_inflate: float = 0.0  # metres the convex hull is pushed out before approach points are sampled on it
    distance_lower: float = 0.01  # palm-to-hull distance of the initial pose, lower bound
    distance_upper: float = 0.03  # ... upper bound
    tilt_max: float = 0.5236  # max angle (pi/6) between the palm normal and the inward hull normal
    # the palm point placed on the approach line, this far from the palm centre toward the knuckles
    anchor_shift: float = 0.015
    jitter_strength: float = 0.1  # joint noise, as a fraction of each joint's range (truncated at the limits)
    # --- energy weights (DexGraspNet: w_dis 100, w_pen 100, w_spen 10, w_joints 1, E_fc 1) ---
    n_contact: int = 4  # contact candidates per grasp pulled to the surface (chosen among the hand's palm-side points)
    # one contact candidate always on the thumb, the others on fingers/palm (an opposition prior; False = DexGraspNet's
    # uniform choice)
    thumb_contact: bool = True
    w_fc: float = 1.0  # force closure ||G c|| (unit normals at the contacts, torques about the object centre)
    w_dis: float = 100.0  # sum of |signed distance| of the contact points to the surface
    w_pen: float = 100.0  # object into hand: sum over the hand's swept spheres of how deep the object reaches into them
    w_hpen: float = 100.0  # the paper's ERF: depth of the deepest hand surface point inside the object
    # self-penetration (the paper's SRF): sum of max(0, spen_margin - |k_i - k_j|) over non-adjacent keypoint pairs
    w_spen: float = 10.0
    # metres between keypoints (phalanx centres and tips) below which they repel (paper: 0.02)
    spen_margin: float = 0.02
    # the paper's SPF (mean distance of palm-side points within spf_threshold; not in DexGraspNet, 0 = off): enveloping
    # grasps hold better (accepted 56% -> 64% on 4 primitives, measured)
    w_spf: float = 10.0
    spf_threshold: float = 0.02  # metres (paper: 0.02)
    w_joints: float = 1.0  # joint-limit violation, sum of radians outside [lower, upper]
    # --- annealing (MALA-like: preconditioned gradient step + Langevin noise, Metropolis accept per grasp) ---
    # initial step on the RMSProp-normalised gradient, metres for the translation (DexGraspNet: 0.005 for all)
    step_size: float = 0.005
    step_rotation: float = 2.0  # the rotation's (6D) step as a multiple of step_size
    # the joints' step (radians) as a multiple of step_size: fewer iterations than DexGraspNet need larger joint steps
    step_joints: float = 6.0
    step_decay: float = 0.05  # the step at the last iteration as a fraction of the first (geometric decay in between)
    rmsprop_mu: float = 0.98  # moving average factor of the squared gradients (DexGraspNet 0.98)
    temperature: float = 18.0  # initial Metropolis temperature (DexGraspNet 18)
    temperature_final: float = 0.05  # temperature at the last iteration (geometric decay in between)
    noise_scale: float = 0.1  # Langevin noise per variable: step * noise_scale * sqrt(T / T0) * N(0, 1)
    # chance per grasp and step that one contact candidate is re-drawn (DexGraspNet 0.5)
    switch_probability: float = 0.5
    restart_at: tuple[float, ...] = (0.3,)  # fractions of n_iter at which the worst grasps are re-initialised
    restart_quantile: float = 0.75  # grasps with energy above this quantile of the batch restart
    # --- post-optimisation: optionally close onto the surface, then clean up penetration ---
    # Adam steps pulling the contacts onto the surface before the clean-up (0 = off; measured: accepted 56% -> 29% on
    # primitives)
    close_steps: int = 0
    # closing pulls the annealed contact candidates onto the surface; False: every palm-side point within close_radius
    close_contacts: bool = True
    # with close_contacts off: palm-side points closer than this (outside) are pulled onto the surface
    close_radius: float = 0.01
    w_close: float = 100.0  # weight of the pulling term (metres: sum over contacts, or mean over the pulled points)
    cleanup_steps: int = 60  # at most this many Adam steps remove object-into-hand penetration (0 = off)
    pen_target_mm: float = 0.5  # clean-up target: max depth of dense object points inside the hand (filter limit: 1 mm)
    refine_lr: float = 0.005  # Adam learning rate for the joints (radians)
    # the root's rates as a multiple of refine_lr: rotation x0.5, translation x0.1 (metres); small = fingers do the work
    refine_root_lr: float = 0.2
    # --- object sampling ---
    field_resolution: int = 64  # nodes per axis of the object's signed-distance grid (physics GridField.from_mesh)
    # torch intra-op threads while synthesising (1 suits small batches on shared cores; 0 = leave torch's setting)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.per_object < 1 or self.batch_size < 1 or self.n_iter < 0:
            raise ValueError("per_object and batch_size must be >= 1 and n_iter >= 0")
        if not self.object_scales or any(s <= 0 for s in self.object_scales):
            raise ValueError(f"object_scales must be positive, got {self.object_scales}")
        if self.n_contact < 1:
            raise ValueError("n_contact must be >= 1")
        if self.distance_lower > self.distance_upper:
            raise ValueError("distance_lower must not exceed distance_upper")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Stable hash of every field that changes the grasps (16 hex digits), written with each grasp."""
        d = self.to_dict()
        d.pop("threads")
        d["generator_version"] = GENERATOR_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def preset(cls, name: str) -> SynthesisConfig:
        """A named preset: ``fast`` (the demo build: about a minute per object on 2 cores) or ``default``."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown synthesis preset {name!r}; choose one of {sorted(PRESETS)}") from None

    def replace(self, **changes) -> SynthesisConfig:
        return dataclasses.replace(self, **changes)


DEFAULT = SynthesisConfig()
# The demo build's preset: a useful number of accepted grasps per object within about a minute on 2 cores.
FAST = SynthesisConfig(per_object=64, batch_size=64, n_iter=600)
PRESETS = {"default": DEFAULT, "fast": FAST}
