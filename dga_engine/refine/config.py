"""Configuration of the refine stage: bounded repairs of candidate grasps before the physics filter.

Two presets (``RefineConfig.preset``):

- ``repair``: the minimal change for curated grasps. Only grasps the filter's cheap checks would reject
  (a joint outside its limits, object points inside the hand, hand points deep in the object) are
  touched; their joints are pulled inside the limits and the penetration is pushed out by small moves
  of the fingers and the root, holding the grasp's contacts. A grasp that cannot be fixed within the
  bounds is left exactly as it was (status ``failed``), so the filter gives it its original verdict.
- ``polish``: for generated grasps, which are rarely stable as sampled. Every grasp is optimised: a short,
  cool anneal of the seed-synthesis energy (force closure, contact distance, penetration, SPF) started
  from the given pose, then the same repair, within wider bounds.

Bounds are hard: every optimisation step is projected back into them, and a grasp is only ever
replaced by a pose within them (tested). Lengths in metres, angles in radians.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

REFINE_VERSION = 1  # bump when the meaning of a field or of the procedure changes
PRESET_NAMES = ("repair", "polish")


@dataclass(frozen=True)
class RefineConfig:
    """How candidates are refined. Defaults are the ``repair`` preset."""

    name: str = "repair"  # preset name, written into each row's refine_preset with the version and hash
    # ---- which grasps are optimised ----
    refine_all: bool = False  # True: every grasp (polish); False: only those the filter's cheap checks reject
    # ---- bounds: a grasp is only ever replaced by a pose within them ----
    max_joint_change: float = 0.3  # rad any one joint may move from the candidate (pulling it inside its limits counts)
    max_translation_change: float = 0.005  # m the root may move; a few mm covers the hand-model differences between datasets
    max_rotation_change: float = 0.1  # rad the root may turn (angle of R_new R_old^T)
    # ---- targets of the optimisation (below the filter's limits, which decide success) ----
    pen_object_hand_target_mm: float = 0.5  # deepest object point inside the hand (filter limit 1 mm)
    pen_hand_object_target_mm: float = 5.0  # deepest hand point inside the object (filter limit 10 mm)
    # ---- the repair (damped Gauss-Newton: the smallest change that meets the targets, dga_engine.refine.least_squares) ----
    iterations: int = 10  # at most this many Gauss-Newton steps; a grasp stops as soon as it is on target
    damping: float = 0.1  # initial Levenberg-Marquardt damping: weight of the pose change against the violations
    keep_contacts: bool = True  # hand points that started within contact_radius of the surface ...
    contact_radius: float = 0.003  # ... are the grasp's contacts
    contact_slack: float = 0.001  # ... and may end at most this far outside the surface (or outside where they began)
    contact_weight: float = 0.1  # a contact's gap against a penetration's depth (1): penetration first, then the contacts
    # ---- polish only: the synthesis energy annealed from the given pose before the clean-up ----
    anneal_steps: int = 0  # 0 = no anneal (repair)
    anneal_step_size: float = 0.002  # first step (m for the translation; seed synthesis starts at 0.005 from far away)
    anneal_temperature: float = 1.0  # first Metropolis temperature (seed synthesis: 18; a warm start needs little exploring)
    anneal_contacts: int = 6  # contact points of the force-closure energy (seed synthesis: 4); 6 kept 46% vs 38% of generated grasps (measured)
    field_resolution: int = 64  # nodes per axis of the object's SDF grid used by the anneal
    # ---- execution ----
    batch_size: int = 128  # grasps of one object optimised together
    threads: int = 1  # torch intra-op threads (1 suits small batches on shared cores; 0 = leave torch's setting)

    def __post_init__(self) -> None:
        checks = [
            (self.name in PRESET_NAMES or bool(self.name), "name must be a non-empty string"),
            (self.max_joint_change >= 0 and self.max_translation_change >= 0 and self.max_rotation_change >= 0,
             "bounds must be >= 0"),
            (self.pen_object_hand_target_mm > 0 and self.pen_hand_object_target_mm > 0, "targets must be > 0 mm"),
            (self.iterations >= 0 and self.anneal_steps >= 0, "iterations and anneal_steps must be >= 0"),
            (self.damping > 0, "damping must be > 0"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.contact_radius >= 0 and self.contact_slack >= 0 and self.contact_weight >= 0,
             "contact settings must be >= 0"),
        ]  # fmt: skip
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"RefineConfig: {msg}")

    @classmethod
    def preset(cls, name: str) -> "RefineConfig":
        """``repair`` (curated grasps: minimal, bounded) or ``polish`` (generated grasps: the synthesis energy)."""
        try:
            return PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown refine preset {name!r}; choose one of {list(PRESET_NAMES)}") from None

    def replace(self, **changes: Any) -> "RefineConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RefineConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RefineConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def config_hash(self) -> str:
        """Hash of every field that changes the refined poses (threads do not)."""
        d = self.to_dict()
        d.pop("threads")
        d["version"] = REFINE_VERSION
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def tag(self) -> str:
        """``<name>/<version>+<hash>``, written into every refined row's ``refine_preset``."""
        return f"{self.name}/{REFINE_VERSION}+{self.config_hash()}"


REPAIR = RefineConfig()
POLISH = RefineConfig(
    name="polish", refine_all=True, max_joint_change=1.0, max_translation_change=0.03, max_rotation_change=0.5,
    iterations=15, anneal_steps=120,
)
PRESETS = {"repair": REPAIR, "polish": POLISH}
