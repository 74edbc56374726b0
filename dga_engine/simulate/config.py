"""Configuration of the physics filter: every number of the protocol, with the paper's defaults.

Where the reference (DGA's Isaac Gym test, see docs/filter.md) uses a number that cannot carry over to
MuJoCo unchanged, the field's comment says what we use instead and why.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

PROTOCOL_NAME = "dga-push6"
PROTOCOL_MAJOR = 1  # bump when the meaning of a field or of the procedure changes


@dataclass(frozen=True)
class FilterConfig:
    """The physics filter protocol. Lengths in metres, times in seconds, angles in radians."""

    # ---- decision (the paper's dataset filter) ----
    max_displacement: float = 0.02  # a push direction passes when the object's centre of mass stays closer than this to where the push started
    directions_required: int = 6  # passing directions needed for acceptance: 6 = Suc.6 (the paper's filter), 1 = Suc.1
    max_pen_hand_object_mm: float = 10.0  # reject when hand surface points reach deeper than this into the object (paper: 10 mm)
    max_pen_object_hand_mm: float = 1.0  # reject when object points reach deeper than this into the hand's collision geoms (paper: 1 mm)
    # how a hand point is judged inside the object: "parts" = exactly, by the convex parts the simulator uses
    # (no false alarms at sharp edges); "normal" = the reference's nearest-sample normal sign test
    hand_object_inside: str = "parts"
    simulate_penetrating: bool = False  # also simulate grasps already rejected by penetration (evaluation: Suc.1/Suc.6 over every grasp); off = skip them (cheap)

    # ---- pose validity ----
    joint_limit_tol: float = 0.05  # joints may exceed the MJCF limits by this much before the pose counts as invalid
    quat_norm_tol: float = 1e-2  # |norm(quaternion) - 1| above this is an invalid pose (the quaternion is normalised otherwise)
    max_translation: float = 2.0  # a root farther than this from the object origin is an invalid pose (bad units)

    # ---- object ----
    density: float = 1000.0  # kg/m^3 of every convex part (reference: 1000); mass = density x volume of the parts
    friction: float = 2.0  # sliding friction of the object's parts (reference: 2.0); MuJoCo takes the max with the hand's 1.0
    torsional_friction: float = 0.005  # used only when condim >= 4
    condim: int = 3  # contact dimensionality of the object's parts: 3 = sliding friction (pyramidal cone), 4 adds torsion
    object_margin: float = 0.0  # MuJoCo contact margin of the object's parts

    # ---- push (reference: 500 x volume N, +-x,+-y,+-z in the object frame) ----
    push_force_per_volume: float = 500.0  # N per m^3 of object volume (reference: 500 x volume = 0.5 m/s^2 at density 1000)
    push_time: float = 0.4  # seconds each push lasts; a free object covers 0.5*a*t^2 = 4 cm > 2 cm at 0.5 m/s^2 (reference: 50 steps at 1/60 s = 0.83 s)
    sequential: bool = False  # True: push +x,-x,+y,-y,+z,-z one after the other without reset (reference); False: each from the same closed state
    early_stop: bool = True  # stop a push as soon as the displacement reaches max_displacement (the outcome cannot change: the test uses the maximum)

    # ---- closing (squeeze) ----
    close_margin: float = 0.005  # hand geoms within this distance of the object take part in the squeeze (reference: 5 mm)
    close_step: float = 0.1  # radians the most-involved joint of each touching finger is driven past the grasp pose
    close_time: float = 0.2  # seconds the fingers squeeze before the first push (the object settles well within it)
    close_ramp: float = 0.0  # fraction of close_time over which the targets move linearly to the squeeze targets (0 = at once, as the reference)
    squeeze_wrist: bool = False  # False: the wrist joints hold the grasp pose (the reference steps the finger joints only)

    # ---- hand servos (one position servo per joint replaces the tendons and actuators) ----
    kp: float = 2.0  # N m / rad stiffness of every joint servo; squeeze torque = kp x close_step = 0.2 N m per joint
    dampratio: float = 1.0  # damping of every servo as a fraction of critical damping (MuJoCo dampratio)
    force_limit: float = 1.0  # N m, each servo's torque limit (0 = unlimited)
    self_collision: bool = True  # keep the MJCF's finger-finger and finger-thumb contact pairs

    # ---- simulator ----
    timestep: float = 0.01  # s per step (the reference: 1/60 s with PhysX; see docs/filter.md for the choice)
    close_substeps: int = 2  # closing runs at timestep / close_substeps (the squeeze is the stiffest, most chaotic phase)
    solref_timeconst: float = 0.01  # contact stiffness time constant; MuJoCo raises it to 2 x the step when smaller: 0.01 s closing, 0.02 s pushes
    solimp_d: float = 0.99  # contact impedance (MuJoCo solimp dmin = dmax; default 0.9/0.95): 0.99 keeps a 0.2 N m squeeze under 1 mm deep
    noslip_iterations: int = 3  # MuJoCo noslip solver passes: removes the creep of soft friction under a sustained squeeze
    solver_iterations: int = 10  # Newton iterations per step (MuJoCo default 100; it converges in 2-4 here)
    solver_tolerance: float = 1e-5  # Newton tolerance (MuJoCo default 1e-8)
    multiccd: bool = False  # several contact points per convex pair; off: one point per pair (fewer contacts)
    integrator: str = "implicitfast"  # MuJoCo integrator: implicit servo damping is stable at coarse steps
    max_object_speed: float = 20.0  # m/s; faster means the simulation blew up: reason sim_error

    # ---- points for the penetration metrics ----
    dense_object_points: bool = True  # object points: True = the 10240 dense samples, False = the 2048 standard ones
    seed: int = 0  # seed of the hand's surface point sample (the protocol itself draws no random numbers)

    def __post_init__(self) -> None:
        checks = [
            (self.max_displacement > 0, "max_displacement must be > 0"),
            (1 <= self.directions_required <= 6, "directions_required must be 1..6"),
            (self.density > 0, "density must be > 0"),
            (self.friction >= 0, "friction must be >= 0"),
            (self.condim in (1, 3, 4, 6), "condim must be 1, 3, 4 or 6"),
            (self.push_time > 0 and self.close_time >= 0, "push_time must be > 0 and close_time >= 0"),
            (self.timestep > 0, "timestep must be > 0"),
            (self.solref_timeconst > 0, "solref_timeconst must be > 0"),
            (self.kp > 0, "kp must be > 0"),
            (self.integrator in ("euler", "implicit", "implicitfast"), "integrator must be euler, implicit or implicitfast"),
            (self.hand_object_inside in ("parts", "normal"), "hand_object_inside must be 'parts' or 'normal'"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"FilterConfig: {msg}")

    # ---- derived ----
    @property
    def close_timestep(self) -> float:
        return self.timestep / max(1, self.close_substeps)

    @property
    def close_steps(self) -> int:
        return int(round(self.close_time / self.close_timestep))

    @property
    def push_steps(self) -> int:
        return max(1, int(round(self.push_time / self.timestep)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FilterConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FilterConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def with_(self, **changes: Any) -> "FilterConfig":
        return replace(self, **changes)

    @property
    def protocol_version(self) -> str:
        """``dga-push6/1+<hash>``: the procedure's version and a hash of every setting (same string = same test)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return f"{PROTOCOL_NAME}/{PROTOCOL_MAJOR}+{hashlib.sha256(blob).hexdigest()[:10]}"
