"""The embedded default object set: procedurally generated, everyday-sized, graspable shapes.

Every shape is built from primitives (trimesh) and exact booleans (manifold3d), so it is watertight by
construction, metric (metres, z up) and bit-for-bit deterministic: the same name always gives the same
mesh, hence the same content id. Sizes suit a ShadowHand power or precision grasp: the grasped dimension
(the middle of the three oriented-bounding-box extents) is 3-12 cm and no extent exceeds 25 cm.

Use :data:`BUILTIN_NAMES`, :func:`builtin_mesh`, :func:`builtin_label` and :func:`demo_subset`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trimesh

_SECTIONS = 48  # circle resolution: smooth enough for contacts, small enough for fast CoACD


@dataclass(frozen=True)
class BuiltinShape:
    name: str  # stable identifier (also the object's source_id)
    label: str  # human-readable name used in prompts and tables
    build: Callable[[], trimesh.Trimesh]  # returns the metric mesh (not yet centred)
    convex: bool  # convex by construction (ingestion skips CoACD for these)


def _union(*meshes: trimesh.Trimesh) -> trimesh.Trimesh:
    return trimesh.boolean.union(list(meshes), engine="manifold")


def _difference(a: trimesh.Trimesh, *b: trimesh.Trimesh) -> trimesh.Trimesh:
    return trimesh.boolean.difference([a, *b], engine="manifold")


def _box(x: float, y: float, z: float, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    m = trimesh.creation.box(extents=[x, y, z])
    m.apply_translation(at)
    return m


def _cyl(r: float, h: float, at=(0.0, 0.0, 0.0), axis: str = "z", sections: int = _SECTIONS) -> trimesh.Trimesh:
    m = trimesh.creation.cylinder(radius=r, height=h, sections=sections)
    if axis == "x":
        m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [0, 1, 0]))
    elif axis == "y":
        m.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    m.apply_translation(at)
    return m


def _revolve(profile: list[tuple[float, float]]) -> trimesh.Trimesh:
    """Solid of revolution about z from a (radius, height) profile that starts and ends on the axis."""
    return trimesh.creation.revolve(np.asarray(profile, dtype=np.float64), sections=_SECTIONS)


def _hull(points) -> trimesh.Trimesh:
    return trimesh.convex.convex_hull(np.asarray(points, dtype=np.float64))


def _sphere(r: float, at=(0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=3, radius=r)
    m.apply_translation(at)
    return m


# --- the shapes --------------------------------------------------------------------------------


def _mug() -> trimesh.Trimesh:
    body = _difference(_cyl(0.04, 0.095, at=(0, 0, 0.0475)), _cyl(0.035, 0.095, at=(0, 0, 0.0525)))
    handle = trimesh.creation.torus(0.028, 0.007, major_sections=32, minor_sections=16)
    handle.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]))
    handle.apply_translation([0.04, 0, 0.05])
    # cut the half of the ring that would sit inside the cup
    handle = _difference(handle, _cyl(0.0375, 0.2, at=(0, 0, 0.05)))
    return _union(body, handle)


def _cup() -> trimesh.Trimesh:
    outer = _revolve([(0, 0), (0.03, 0), (0.038, 0.09), (0, 0.09)])
    inner = _revolve([(0, 0.005), (0.0265, 0.005), (0.034, 0.095), (0, 0.095)])
    return _difference(outer, inner)


def _bowl() -> trimesh.Trimesh:
    # a spherical shell (outer radius 5.5 cm, 5 mm wall) cut 1.2 cm above its centre, with a flat foot;
    # revolved from a short profile so CoACD sees few faces
    rim = 0.012
    outer = [(0.055 * np.sin(a), -0.055 * np.cos(a)) for a in np.linspace(0.45, np.arccos(-rim / 0.055), 8)]
    inner = [(0.05 * np.sin(a), -0.05 * np.cos(a)) for a in np.linspace(np.arccos(-rim / 0.05), 0.0, 8)]
    foot = [(0.0, -0.057), (0.055 * np.sin(0.45), -0.057)]
    return _revolve(foot + outer + inner)


def _tape_roll() -> trimesh.Trimesh:
    return _difference(_cyl(0.05, 0.03), _cyl(0.036, 0.04))


def _l_shape() -> trimesh.Trimesh:
    return _union(_box(0.09, 0.03, 0.03, at=(0.0, 0, 0)), _box(0.03, 0.03, 0.09, at=(-0.03, 0, 0.03)))


def _t_shape() -> trimesh.Trimesh:
    return _union(_box(0.10, 0.03, 0.03, at=(0, 0, 0.045)), _box(0.03, 0.03, 0.09, at=(0, 0, 0)))


def _u_shape() -> trimesh.Trimesh:
    return _union(
        _box(0.09, 0.03, 0.025, at=(0, 0, 0)),
        _box(0.025, 0.03, 0.07, at=(-0.0325, 0, 0.0225)),
        _box(0.025, 0.03, 0.07, at=(0.0325, 0, 0.0225)),
    )


def _cross() -> trimesh.Trimesh:
    return _union(_box(0.10, 0.03, 0.03), _box(0.03, 0.10, 0.03))


def _dumbbell() -> trimesh.Trimesh:
    return _union(_sphere(0.027, at=(0, 0, -0.055)), _sphere(0.027, at=(0, 0, 0.055)), _cyl(0.012, 0.11))


def _mallet() -> trimesh.Trimesh:
    return _union(_cyl(0.013, 0.17, at=(0, 0, 0)), _cyl(0.025, 0.09, at=(0, 0, 0.095), axis="x"))


def _bottle() -> trimesh.Trimesh:
    return _revolve([(0, 0), (0.033, 0), (0.035, 0.004), (0.035, 0.13), (0.014, 0.165), (0.014, 0.2), (0, 0.2)])


def _vase() -> trimesh.Trimesh:
    return _revolve([(0, 0), (0.035, 0), (0.045, 0.04), (0.028, 0.1), (0.034, 0.14), (0, 0.14)])


def _flashlight() -> trimesh.Trimesh:
    return _revolve([(0, 0), (0.016, 0), (0.016, 0.11), (0.026, 0.135), (0.026, 0.16), (0, 0.16)])


def _spool() -> trimesh.Trimesh:
    return _revolve(
        [(0, 0), (0.035, 0), (0.035, 0.012), (0.018, 0.014), (0.018, 0.066), (0.035, 0.068), (0.035, 0.08), (0, 0.08)]
    )


def _octahedron() -> trimesh.Trimesh:
    a = 0.04
    return _hull([(a, 0, 0), (-a, 0, 0), (0, a, 0), (0, -a, 0), (0, 0, a), (0, 0, -a)])


def _ellipsoid() -> trimesh.Trimesh:
    m = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    m.apply_scale([0.026, 0.026, 0.036])
    return m


_SHAPES: tuple[BuiltinShape, ...] = (
    BuiltinShape("cube_5cm", "cube (5 cm)", lambda: _box(0.05, 0.05, 0.05), True),
    BuiltinShape("box_tall", "tall box (5 x 5 x 10 cm)", lambda: _box(0.05, 0.05, 0.10), True),
    BuiltinShape("box_flat", "flat box, book-sized (12 x 8 x 3 cm)", lambda: _box(0.12, 0.08, 0.03), True),
    BuiltinShape("box_large", "large box (9 x 9 x 12 cm)", lambda: _box(0.09, 0.09, 0.12), True),
    BuiltinShape("rod_square", "square rod (3 x 3 x 15 cm)", lambda: _box(0.03, 0.03, 0.15), True),
    BuiltinShape("can", "soda can (6.6 x 12 cm cylinder)", lambda: _cyl(0.033, 0.12), True),
    BuiltinShape("cylinder_thin", "thin cylinder, handle-like (3 x 15 cm)", lambda: _cyl(0.015, 0.15), True),
    BuiltinShape("puck", "wide short cylinder, jar lid (9 x 3 cm)", lambda: _cyl(0.045, 0.03), True),
    BuiltinShape("hex_prism", "hexagonal prism (6 cm across, 10 cm long)", lambda: _cyl(0.03, 0.10, sections=6), True),
    BuiltinShape("sphere_6cm", "ball (6 cm)", lambda: _sphere(0.03), True),
    BuiltinShape("sphere_8cm", "orange-sized ball (8 cm)", lambda: _sphere(0.04), True),
    BuiltinShape("ellipsoid", "egg-shaped ellipsoid (5 x 5 x 7 cm)", _ellipsoid, True),
    BuiltinShape(
        "capsule",
        "capsule (4 x 11 cm)",
        lambda: trimesh.creation.capsule(height=0.07, radius=0.02, count=[24, 24]),
        True,
    ),
    BuiltinShape(
        "cone",
        "cone (7 cm base, 9 cm tall)",
        lambda: trimesh.creation.cone(radius=0.035, height=0.09, sections=_SECTIONS),
        True,
    ),
    BuiltinShape(
        "frustum",
        "tapered block, frustum (6 to 8 cm, 10 cm tall)",
        lambda: _revolve([(0, 0), (0.03, 0), (0.04, 0.10), (0, 0.10)]),
        True,
    ),
    BuiltinShape(
        "pyramid",
        "square pyramid (7 cm base, 7 cm tall)",
        lambda: _hull([(-0.035, -0.035, 0), (0.035, -0.035, 0), (0.035, 0.035, 0), (-0.035, 0.035, 0), (0, 0, 0.07)]),
        True,
    ),
    BuiltinShape(
        "wedge",
        "wedge, door stop (10 x 5 x 4 cm)",
        lambda: _hull([(0, 0, 0), (0.10, 0, 0), (0, 0, 0.04), (0, 0.05, 0), (0.10, 0.05, 0), (0, 0.05, 0.04)]),
        True,
    ),
    BuiltinShape("octahedron", "octahedron (8 cm)", _octahedron, True),
    BuiltinShape("bottle", "bottle with a neck (7 x 20 cm)", _bottle, False),
    BuiltinShape("vase", "vase with a waist (9 x 14 cm)", _vase, False),
    BuiltinShape("flashlight", "flashlight, handle with a wider head (5 x 16 cm)", _flashlight, False),
    BuiltinShape("spool", "thread spool (7 x 8 cm)", _spool, False),
    BuiltinShape("mug", "mug with a handle (8 x 9.5 cm)", _mug, False),
    BuiltinShape("cup", "open cup without a handle (7.6 x 9 cm)", _cup, False),
    BuiltinShape("bowl", "small bowl (11 cm)", _bowl, False),
    BuiltinShape("torus", "ring, donut-shaped (9.4 cm)", lambda: trimesh.creation.torus(0.035, 0.012, 32, 16), False),
    BuiltinShape(
        "torus_thin", "thin ring, bangle (9.2 cm)", lambda: trimesh.creation.torus(0.04, 0.006, 32, 12), False
    ),
    BuiltinShape("tape_roll", "tape roll (10 cm across, 3 cm wide)", _tape_roll, False),
    BuiltinShape("l_shape", "L-shaped bracket (9 x 9 cm, 3 cm thick)", _l_shape, False),
    BuiltinShape("t_shape", "T-shaped handle (10 x 9 cm, 3 cm thick)", _t_shape, False),
    BuiltinShape("u_shape", "U-shaped clamp (9 x 7 cm, 3 cm thick)", _u_shape, False),
    BuiltinShape("cross", "plus-shaped block (10 x 10 x 3 cm)", _cross, False),
    BuiltinShape("dumbbell", "small dumbbell (two balls on a bar, 16 cm)", _dumbbell, False),
    BuiltinShape("mallet", "mallet, handle with a cylindrical head", _mallet, False),
)

_BY_NAME = {s.name: s for s in _SHAPES}

#: Stable names of every builtin shape, in a fixed order.
BUILTIN_NAMES: tuple[str, ...] = tuple(s.name for s in _SHAPES)

# Demo order: varied (box, cylinder, sphere, non-convex bracket, bottle, mug, ring, cone, ...) and cheap first.
_DEMO_ORDER = ("can", "box_tall", "sphere_6cm", "l_shape", "bottle", "mug", "torus", "cone", "t_shape",
               "capsule", "wedge", "bowl", "hex_prism", "dumbbell", "cup", "flashlight")


class UnknownBuiltinError(KeyError):
    """A builtin name that does not exist."""


def builtin_shape(name: str) -> BuiltinShape:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise UnknownBuiltinError(
            f"no builtin object named {name!r}; choose from: {', '.join(BUILTIN_NAMES)}"
        ) from None


def builtin_mesh(name: str) -> trimesh.Trimesh:
    """The metric, watertight mesh of builtin shape ``name`` (deterministic)."""
    mesh = builtin_shape(name).build()
    return trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float64), faces=np.asarray(mesh.faces), process=True
    )


def builtin_label(name: str) -> str:
    return builtin_shape(name).label


def demo_subset(n: int = 6) -> list[str]:
    """``n`` varied builtin names that ingest quickly, for demos and smoke tests (stable order)."""
    if n < 1:
        raise ValueError("demo_subset needs n >= 1")
    order = list(_DEMO_ORDER) + [x for x in BUILTIN_NAMES if x not in _DEMO_ORDER]
    return order[: min(n, len(order))]
