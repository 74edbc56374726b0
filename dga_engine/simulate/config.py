"""Configuration of the physics filter: every number of the protocol, with the paper's defaults.

Two named presets (:data:`PRESETS`, :meth:`FilterConfig.preset`, ``dga-engine filter --protocol``):

- ``dga-engine`` (the default, ``FilterConfig()``): our protocol, tuned for MuJoCo (squeeze by contact
  Jacobians, 0.4 s pushes from one closed state, maximum displacement);
- ``dga-reference``: DGA's Isaac Gym evaluator (``envs/tasks/grasp_test_force_shadowhand.py`` with
  ``grasp_test_force.yaml``) emulated in MuJoCo as closely as the engine allows.

Where a field differs from the reference, its comment says what the reference does; docs/filter.md
lists every remaining difference between the presets and Isaac Gym, with the reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any

PROTOCOL_NAME = "dga-push6"
PROTOCOL_MAJOR = 1  # bump when the meaning of a field or of the procedure changes
PRESETS = ("dga-engine", "dga-reference")
# The version string's name per preset: the default keeps the name it has always written into grasps.
_VERSION_NAME = {"dga-engine": PROTOCOL_NAME, "dga-reference": "dga-reference"}


@dataclass(frozen=True)
class FilterConfig:
    """The physics filter protocol. Lengths in metres, times in seconds, angles in radians."""

    protocol: str = "dga-engine"  # the preset these settings start from (names the protocol_version)

    # ---- decision (the paper's dataset filter) ----
    # a push direction passes when the object frame's origin stays closer than this to where the push started (as the
    # reference's actor position)
    max_displacement: float = 0.02
    directions_required: int = 6  # passing directions needed for acceptance: 6 = Suc.6 (the paper's filter), 1 = Suc.1
    # reject when hand surface points reach deeper than this into the object (paper: 10 mm)
    max_pen_hand_object_mm: float = 10.0
    # reject when object points reach deeper than this into the hand's collision geoms (paper: 1 mm)
    max_pen_object_hand_mm: float = 1.0
    # how a hand point is judged inside the object: "parts" = exactly, by the convex parts the simulator uses
    # (no false alarms at sharp edges); "normal" = the reference's nearest-sample normal sign test
    hand_object_inside: str = "parts"
    # the hand-into-object limit also tests the forearm's surface points (it collides in the simulation);
    # False = the reference's point set (its get_surface_points skips the forearm)
    forearm_points: bool = True
    # also simulate grasps already rejected by penetration (evaluation: Suc.1/Suc.6 over every grasp); off = skip them
    # (cheap)
    simulate_penetrating: bool = False

    # ---- pose validity ----
    joint_limit_tol: float = 0.05  # joints may exceed the MJCF limits by this much before the pose counts as invalid
    # |norm(quaternion) - 1| above this is an invalid pose (the quaternion is normalised otherwise)
    quat_norm_tol: float = 1e-2
    max_translation: float = 2.0  # a root farther than this from the object origin is an invalid pose (bad units)

    # ---- object ----
    density: float = 1000.0  # kg/m^3 of every convex part (reference: 1000); mass = density x volume of the parts
    # sliding friction of the object's parts (reference: 2.0); MuJoCo takes the max with the hand's 1.0
    friction: float = 2.0
    torsional_friction: float = 0.005  # used only when condim >= 4
    # contact dimensionality of the object's parts: 3 = sliding friction (pyramidal cone), 4 adds torsion
    condim: int = 3
    object_margin: float = 0.0  # MuJoCo contact margin of the object's parts
    # velocity damping of the free object, 1/s (PhysX rigid-body damping: dv/dt = -c v without contact);
    # reference: linear 10, angular 100, under which a free object pushed at 0.5 m/s^2 drifts ~3.7 cm in
    # 50 steps of 1/60 s instead of 17 cm. Applied as MuJoCo dof damping = c x the dof's inertia
    object_linear_damping: float = 0.0
    object_angular_damping: float = 0.0

    # ---- push (reference: 500 x volume N, +-x,+-y,+-z in the object frame) ----
    # N per m^3 of object volume (reference: 500 x volume = 0.5 m/s^2 at density 1000)
    push_force_per_volume: float = 500.0
    # which volume scales the force: "parts" = of the convex parts, whose mass it moves (exactly 0.5 m/s^2);
    # "mesh" = of the object mesh, as the reference (trimesh volume), falling back to the parts when the
    # mesh is not watertight; the reference's acceleration is then 0.5 x V_mesh / V_parts
    push_volume: str = "parts"
    # where the force acts: "com" = the centre of mass (a pure push); "origin" = the object frame's
    # origin, as the reference (apply_rigid_body_force_at_pos_tensors at the body position), which also
    # twists an object whose centre of mass is off its origin
    push_point: str = "com"
    # seconds each push lasts; a free object covers 0.5*a*t^2 = 4 cm > 2 cm at 0.5 m/s^2 (reference: 50 steps at 1/60 s
    # = 0.83 s)
    push_time: float = 0.4
    # True: push +x,-x,+y,-y,+z,-z one after the other without reset (reference); False: each from the same closed state
    sequential: bool = False
    # a direction's displacement: "max" = the largest distance from where its push started over the push
    # (an object that slips out and back fails); "end" = the distance at the end of the push (reference)
    displacement: str = "max"
    # stop a push as soon as the displacement reaches max_displacement (only with displacement="max" and not sequential:
    # the outcome cannot change then)
    early_stop: bool = True

    # ---- closing (squeeze) ----
    # how the squeeze targets are found (closing.py): "jacobian" = MuJoCo contact pairs and Jacobians, the
    # step scaled per finger to close_step; "adam-sign" = the reference's one Adam step (lr squeeze_lr) on
    # the finger joints from hand surface points within close_margin of the object's 2048 points
    squeeze: str = "jacobian"
    # hand geoms (or, adam-sign, hand surface points) within this distance of the object take part in the squeeze
    # (reference: 5 mm)
    close_margin: float = 0.005
    # jacobian: radians the most-involved joint of each touching finger is driven past the grasp pose
    close_step: float = 0.1
    # adam-sign: the Adam learning rate, i.e. radians every involved finger joint is driven past the grasp pose
    # (reference: 0.5)
    squeeze_lr: float = 0.5
    # adam-sign: add each link's origin (relative to the hand root) to its points' normals, as the reference's
    # get_surface_points_and_normals does (it transforms normals as points); False = the true outward normals
    squeeze_normal_offset: bool = False
    close_time: float = 0.2  # seconds the fingers squeeze before the first push (the object settles well within it)
    # fraction of close_time over which the targets move linearly to the squeeze targets (0 = at once, as the reference)
    close_ramp: float = 0.0
    # False: the wrist joints hold the grasp pose (the reference steps the finger joints only)
    squeeze_wrist: bool = False

    # ---- hand servos (one position servo per joint replaces the tendons and actuators) ----
    # N m / rad stiffness of every joint servo; squeeze torque = kp x close_step (jacobian) or kp x squeeze_lr
    # (adam-sign), capped by force_limit
    kp: float = 2.0
    dampratio: float = 1.0  # damping of every servo as a fraction of critical damping (MuJoCo dampratio)
    force_limit: float = 1.0  # N m, each servo's torque limit (0 = unlimited)
    self_collision: bool = True  # keep the MJCF's finger-finger and finger-thumb contact pairs

    # ---- simulator ----
    timestep: float = 0.01  # s per step (the reference: 1/60 s with PhysX; see docs/filter.md for the choice)
    # closing runs at timestep / close_substeps (the squeeze is the stiffest, most chaotic phase)
    close_substeps: int = 2
    # contact stiffness time constant; MuJoCo raises it to 2 x the step when smaller: 0.01 s closing, 0.02 s pushes
    solref_timeconst: float = 0.01
    # contact impedance (MuJoCo solimp dmin = dmax; default 0.9/0.95): 0.99 keeps a 0.2 N m squeeze under 1 mm deep
    solimp_d: float = 0.99
    # MuJoCo noslip solver passes: removes the creep of soft friction under a sustained squeeze
    noslip_iterations: int = 3
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
            (
                self.integrator in ("euler", "implicit", "implicitfast"),
                "integrator must be euler, implicit or implicitfast",
            ),
            (self.hand_object_inside in ("parts", "normal"), "hand_object_inside must be 'parts' or 'normal'"),
            (self.protocol in PRESETS, f"protocol must be one of {', '.join(PRESETS)}"),
            (self.object_linear_damping >= 0 and self.object_angular_damping >= 0, "object damping must be >= 0"),
            (self.push_volume in ("parts", "mesh"), "push_volume must be 'parts' or 'mesh'"),
            (self.push_point in ("com", "origin"), "push_point must be 'com' or 'origin'"),
            (self.displacement in ("max", "end"), "displacement must be 'max' or 'end'"),
            (self.squeeze in ("jacobian", "adam-sign"), "squeeze must be 'jacobian' or 'adam-sign'"),
            (self.squeeze_lr >= 0, "squeeze_lr must be >= 0"),
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

    @property
    def stops_early(self) -> bool:
        """Whether a push may stop at the limit: only when nothing after the stop can change an outcome."""
        return self.early_stop and self.displacement == "max" and not self.sequential

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FilterConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown FilterConfig fields {unknown}; known: {sorted(known)}")
        return cls(**d)

    def replace(self, **changes: Any) -> FilterConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> FilterConfig:
        """The named protocol: ``dga-engine`` (the default) or ``dga-reference`` (DGA's Isaac Gym test)."""
        try:
            return _PRESET_CONFIGS[name]
        except KeyError:
            raise ValueError(f"unknown filter protocol {name!r}; choose one of {', '.join(PRESETS)}") from None

    @property
    def protocol_version(self) -> str:
        """``<name>/1+<hash>``: the preset's name (``dga-push6`` for dga-engine, ``dga-reference``), the
        procedure's version and a hash of every setting (same string = same test).

        Fields added after version 1 enter the hash only when set away from their defaults, so the
        default protocol keeps the string it wrote into grasps before they existed.
        """
        d = self.to_dict()
        for name, default in _ADDED_DEFAULTS.items():
            if d[name] == default:
                del d[name]
        blob = json.dumps(d, sort_keys=True).encode()
        return f"{_VERSION_NAME[self.protocol]}/{PROTOCOL_MAJOR}+{hashlib.sha256(blob).hexdigest()[:10]}"


# Fields added after protocol version 1 and their defaults (see protocol_version).
_ADDED_DEFAULTS = {f.name: f.default for f in fields(FilterConfig) if f.name in (
    "protocol", "forearm_points", "object_linear_damping", "object_angular_damping", "push_volume", "push_point",
    "displacement", "squeeze", "squeeze_lr", "squeeze_normal_offset")}

# DGA's evaluator (4DVLab/DexGrasp-Anything: envs/tasks/grasp_test_force_shadowhand.py, grasp_test_force.yaml,
# scripts/grasp_gen_ur/test.py). What the engine cannot reproduce is listed in docs/filter.md.
_REFERENCE: dict[str, Any] = dict(
    protocol="dga-reference",
    simulate_penetrating=True,  # the evaluator simulates every grasp (Suc.1/Suc.6 over all of them)
    hand_object_inside="normal",  # the ERF / Pen sign test on the nearest object sample
    forearm_points=False,  # get_surface_points skips the forearm
    density=1000.0,
    friction=2.0,  # hand and object shapes both 2.0 (PhysX averages; MuJoCo takes the max: 2.0 either way)
    object_linear_damping=10.0,
    object_angular_damping=100.0,
    push_force_per_volume=500.0,
    push_volume="mesh",  # object_mesh.volume
    push_point="origin",  # the force acts at the rigid body's position
    timestep=1.0 / 60.0,
    push_time=50.0 / 60.0,  # 50 steps per direction
    sequential=True,  # +x, -x, +y, -y, +z, -z one after the other, no reset
    displacement="end",  # |end - start| of each direction's push
    early_stop=False,
    squeeze="adam-sign",
    close_margin=0.005,
    squeeze_lr=0.5,
    squeeze_normal_offset=True,
    close_time=200.0 / 60.0,  # eval_policy.init.steps = 200 at 1/60 s
    # Engine-specific (docs/filter.md): the closing runs at 1/120 s, because MuJoCo's contacts at 1/60 s
    # are too soft for a squeeze (PhysX's are rigid); and the squeeze torque stays the 0.2 N m the engine
    # is calibrated for (kp x squeeze_lr = 0.4 x 0.5), where the reference's PD (stiffness 400, effort
    # 100 N m) would press with up to 100 N m per joint - which PhysX's rigid contacts absorb and
    # MuJoCo's soft contacts do not.
    close_substeps=2,
    kp=0.4,
)

_PRESET_CONFIGS = {"dga-engine": FilterConfig(), "dga-reference": FilterConfig(**_REFERENCE)}
