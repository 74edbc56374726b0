"""Mesh preparation for ingestion: load, clean, check, normalise to a graspable size, make watertight.

Every function is deterministic for the same input. Problems with the input raise :class:`BadMeshError`
with a reason that says what went wrong and what to do; the ingestion stage quarantines the object.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import trimesh

#: File extensions ``ingest local`` accepts (trimesh loaders; a glTF scene becomes one mesh).
MESH_EXTENSIONS = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")


class BadMeshError(ValueError):
    """The input cannot become a clean, solid object; ``reason`` says what went wrong and what to do."""

    def __init__(self, reason: str, stage: str = "load") -> None:
        super().__init__(reason)
        self.reason = reason
        self.stage = stage  # load | clean | check | repair | decompose


# --- load ---------------------------------------------------------------------------------------

# The largest extent of an input, in its file's units, that some length unit can make a graspable object:
# 5 cm is 5e-5 in km, 1 m is 1e9 in nm. Outside it the file's scale is broken, and cleaning (which merges
# vertices closer than 1e-8 file units) would collapse or overflow it and report a wrong reason.
PLAUSIBLE_EXTENT = (1e-5, 1e9)


def check_units(vertices: np.ndarray) -> None:
    """Refuse a mesh whose size no length unit can explain (see :data:`PLAUSIBLE_EXTENT`)."""
    v = np.asarray(vertices, np.float64)
    v = v[np.isfinite(v).all(axis=1)]
    if not len(v):
        return  # nothing finite: clean() says so
    longest = float((v.max(axis=0) - v.min(axis=0)).max())
    lo, hi = PLAUSIBLE_EXTENT
    if longest == 0 or lo <= longest <= hi:
        return  # a single point is clean()'s and check_solid()'s to explain
    unit = "small" if longest < lo else "large"
    raise BadMeshError(
        f"the mesh is {longest:.3g} file units across, too {unit} for any length unit (a 5 cm object is 5e-05 in km, "
        f"5e+07 in nm; accepted: {lo:g} to {hi:g}): the file's scale is broken, e.g. by a unit conversion applied "
        "twice; rescale it in a mesh tool so it is in millimetres, centimetres or metres, and ingest it again",
        stage="check",
    )




def load_mesh(
    source: str | os.PathLike | trimesh.Trimesh | trimesh.Scene, max_file_bytes: int, max_faces: int
) -> trimesh.Trimesh:
    """One triangle mesh from a file or an in-memory mesh/scene (scene nodes are concatenated with their transforms)."""
    if isinstance(source, (trimesh.Trimesh, trimesh.Scene)):
        obj: Any = source
        name = "the given mesh"
        check_units(obj.vertices if isinstance(obj, trimesh.Trimesh) else
                    np.concatenate([np.asarray(g.vertices) for g in obj.dump()] or [np.zeros((0, 3))]))
    else:
        path = Path(source)
        name = path.name
        if not path.is_file():
            raise BadMeshError(f"{path} is not a file: check the path")
        ext = path.suffix.lower()
        if ext not in MESH_EXTENSIONS:
            raise BadMeshError(
                f"{name}: unsupported file type {ext!r}; convert it to one of {', '.join(MESH_EXTENSIONS)}"
            )
        size = path.stat().st_size
        if size == 0:
            raise BadMeshError(f"{name} is empty (0 bytes): re-export or re-download it")
        if size > max_file_bytes:
            raise BadMeshError(
                f"{name} is {size / 1e6:.0f} MB, over the {max_file_bytes / 1e6:.0f} MB limit: simplify the mesh "
                "first or raise IngestConfig.max_file_bytes"
            )
        try:
            obj = trimesh.load(str(path), force="mesh", skip_materials=True)
        except Exception as exc:  # trimesh raises many types for corrupt files
            raise BadMeshError(
                f"{name} could not be read as {ext[1:]} ({type(exc).__name__}: {exc}); re-export it or check that it "
                f"is not truncated"
            ) from None
        if (
            isinstance(obj, trimesh.Trimesh)
            and len(obj.vertices)
            and np.ptp(np.asarray(obj.vertices), axis=0).max() == 0
        ):
            # Loading merges vertices closer than 1e-8 units: a mesh in absurd units collapses to a point. Look
            # at the file's own coordinates to say so, instead of "no surface" later.
            check_units(trimesh.load(str(path), force="mesh", skip_materials=True, process=False).vertices)
    if isinstance(obj, trimesh.Scene):
        geoms = [g for g in obj.dump() if isinstance(g, trimesh.Trimesh)] if obj.geometry else []
        obj = trimesh.util.concatenate(geoms) if geoms else None
    if not isinstance(obj, trimesh.Trimesh) or len(obj.faces) == 0:
        raise BadMeshError(
            f"{name} has no triangles (empty, points or lines only): export the object as a triangle mesh"
        )
    if len(obj.faces) > max_faces:
        raise BadMeshError(
            f"{name} has {len(obj.faces)} faces, over the cap of {max_faces}: decimate it first or raise --max-faces",
            stage="check",
        )
    return trimesh.Trimesh(
        vertices=np.asarray(obj.vertices, np.float64), faces=np.asarray(obj.faces, np.int64), process=False
    )


# --- clean and check ----------------------------------------------------------------------------


def clean(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Drop non-finite vertices, merge duplicates, drop degenerate and duplicate faces and loose vertices."""
    v = np.asarray(mesh.vertices, np.float64)
    f = np.asarray(mesh.faces, np.int64)
    finite = np.isfinite(v).all(axis=1)
    if not finite.all():
        f = f[finite[f].all(axis=1)]
    m = trimesh.Trimesh(vertices=v, faces=f, process=False)
    m.merge_vertices()
    m.update_faces(m.nondegenerate_faces())
    m.update_faces(m.unique_faces())
    m.remove_unreferenced_vertices()
    if len(m.faces) == 0:
        raise BadMeshError(
            "no valid triangles remain after removing degenerate faces: the file holds no surface", stage="clean"
        )
    return m


def open_edge_fraction(mesh: trimesh.Trimesh) -> float:
    """Fraction of unique edges that are open (one face) or non-manifold (three or more faces)."""
    counts = np.unique(mesh.edges_unique_inverse, return_counts=True)[1]
    return float(np.mean(counts != 2)) if len(counts) else 1.0


def check_solid(mesh: trimesh.Trimesh, max_open_edge_fraction: float) -> None:
    """Refuse flat (zero-volume) meshes and triangle soups that describe no surface."""
    ext = np.sort(mesh.extents)
    if ext[2] <= 0 or ext[0] / ext[2] < 1e-4:
        raise BadMeshError(
            "zero volume: the mesh is flat or a line (smallest extent "
            f"{ext[0]:.3g} vs largest {ext[2]:.3g}); a grasped object needs thickness: model it as a solid",
            stage="check",
        )
    try:
        hull_volume = float(mesh.convex_hull.volume)
    except Exception:
        hull_volume = 0.0
    if hull_volume <= 1e-9 * ext[2] ** 3:
        raise BadMeshError("zero volume: all vertices lie in one plane; model the object as a solid", stage="check")
    frac = open_edge_fraction(mesh)
    if not mesh.is_watertight and frac > max_open_edge_fraction:
        raise BadMeshError(
            f"non-manifold junk: {frac:.0%} of the edges are open or shared by more than two faces (limit "
            f"{max_open_edge_fraction:.0%}), so the file is a triangle soup rather than a surface; re-export it "
            "with connected faces (merge vertices) or a closed surface",
            stage="check",
        )


# --- size ---------------------------------------------------------------------------------------


def obb_extents(mesh: trimesh.Trimesh) -> np.ndarray:
    """Sorted extents (ascending) of the minimum-volume oriented bounding box, rotation-invariant."""
    try:
        return np.sort(np.asarray(mesh.bounding_box_oriented.primitive.extents, np.float64))
    except Exception:  # qhull trouble on odd inputs: fall back to the axis-aligned box
        return np.sort(np.asarray(mesh.extents, np.float64))


def grasp_size(mesh: trimesh.Trimesh) -> float:
    """The dimension a hand closes around: the middle oriented-bounding-box extent (a bottle's diameter)."""
    return float(obb_extents(mesh)[1])


def choose_scale(
    mesh: trimesh.Trimesh,
    size_range: tuple[float, float],
    target: float,
    max_extent: float,
    explicit: float | None = None,
) -> float:
    """The uniform factor from source units to stored metres.

    ``explicit``: scale so the grasp size equals it exactly. Otherwise keep the source units when the grasp
    size is in ``size_range`` and the longest extent is at most ``max_extent`` (the file is taken as metric
    and graspable); else scale the grasp size to ``target`` and then shrink until the longest extent fits.
    """
    ext = obb_extents(mesh)
    g, longest = float(ext[1]), float(ext[2])
    if g <= 0:
        raise BadMeshError("zero size: the mesh has no extent across its middle axis", stage="check")
    if explicit is not None:
        return explicit / g
    lo, hi = size_range
    if lo <= g <= hi and longest <= max_extent:
        return 1.0
    s = target / g
    if longest * s > max_extent:
        s = max_extent / longest
    return s


def centred_scaled(mesh: trimesh.Trimesh, scale: float) -> trimesh.Trimesh:
    """A copy centred on its axis-aligned bounding-box centre and scaled uniformly by ``scale``."""
    v = np.asarray(mesh.vertices, np.float64)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    return trimesh.Trimesh(vertices=(v - centre) * scale, faces=np.asarray(mesh.faces), process=False)


def recentre(mesh: trimesh.Trimesh) -> tuple[trimesh.Trimesh, np.ndarray]:
    v = np.asarray(mesh.vertices, np.float64)
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    return trimesh.Trimesh(vertices=v - centre, faces=np.asarray(mesh.faces), process=False), centre


# --- watertightness -----------------------------------------------------------------------------


@dataclass
class SolidResult:
    mesh: trimesh.Trimesh  # watertight, consistently wound, positive volume
    method: str  # none | fix-normals | fill-holes | union | level-set remesh
    details: dict[str, Any]


def _is_good_volume(m: trimesh.Trimesh) -> bool:
    return bool(m.is_watertight and m.is_winding_consistent and m.volume > 0)


def _to_manifold(m: trimesh.Trimesh):
    import manifold3d

    mesh = manifold3d.Mesh(vert_properties=np.asarray(m.vertices, np.float32), tri_verts=np.asarray(m.faces, np.uint32))
    return manifold3d.Manifold(mesh)


def _from_manifold(man) -> trimesh.Trimesh:
    out = man.to_mesh()
    return trimesh.Trimesh(
        vertices=np.asarray(out.vert_properties)[:, :3].astype(np.float64),
        faces=np.asarray(out.tri_verts, np.int64),
        process=False,
    )


def decimate(mesh: trimesh.Trimesh, max_faces: int) -> trimesh.Trimesh | None:
    """Quadric decimation to at most ``max_faces``, passed through manifold3d; None if it is not a closed volume.

    Needs the optional ``fast-simplification`` package (trimesh's decimator); without it returns None.
    """
    if len(mesh.faces) <= max_faces:
        return mesh
    try:
        reduced = mesh.simplify_quadric_decimation(face_count=int(max_faces))
        out = _from_manifold(_to_manifold(reduced))
    except Exception:  # decimator missing, or its output is not a manifold
        return None
    if not _is_good_volume(out) or not 0.7 <= out.volume / max(mesh.volume, 1e-30) <= 1.3:
        return None
    return out


def make_watertight(mesh: trimesh.Trimesh, resolution: int = 40, max_faces: int = 20000) -> SolidResult:
    """A watertight version of ``mesh`` (at most ``max_faces`` faces) for decomposition, sampling and physics.

    Cheap fixes first (winding, small holes, union of overlapping closed bodies); otherwise a level-set
    remesh at ``resolution`` cells along the longest side (see :func:`level_set_remesh`). Dense results
    are decimated. A closed mesh within the face budget is left exactly as it is.
    """
    m = mesh.copy()
    result: SolidResult | None = None
    if m.is_watertight:
        trimesh.repair.fix_normals(m)
        if _is_good_volume(m):
            bodies = m.split(only_watertight=False) if m.body_count > 1 else [m]
            if len(bodies) == 1:
                result = SolidResult(m, "none" if np.array_equal(m.faces, mesh.faces) else "fix-normals", {})
            else:
                try:  # overlapping closed parts (common in modelled assets): resolve them into one solid
                    import manifold3d

                    u = _from_manifold(
                        manifold3d.Manifold.batch_boolean([_to_manifold(b) for b in bodies], manifold3d.OpType.Add)
                    )
                    if _is_good_volume(u):
                        result = SolidResult(u, "union", {"bodies": len(bodies)})
                except Exception:
                    pass
    else:
        filled = m.copy()
        trimesh.repair.fill_holes(filled)
        if filled.is_watertight:
            trimesh.repair.fix_normals(filled)
            if _is_good_volume(filled) and filled.body_count == 1:
                result = SolidResult(filled, "fill-holes", {})
    if result is None:
        details = {"resolution": resolution, "input_open_edges": round(open_edge_fraction(mesh), 4)}
        result = SolidResult(level_set_remesh(mesh, resolution), "level-set remesh", details)
    if len(result.mesh.faces) > max_faces:
        reduced = decimate(result.mesh, max_faces)
        if reduced is None and result.method != "level-set remesh":
            result = SolidResult(level_set_remesh(mesh, resolution), "level-set remesh", {"resolution": resolution})
            reduced = decimate(result.mesh, max_faces)
        if reduced is not None:
            result = SolidResult(
                reduced, result.method + " + decimate", {**result.details, "faces_before": len(result.mesh.faces)}
            )
    return result


def level_set_remesh(
    mesh: trimesh.Trimesh, resolution: int = 40, wall: float = 0.5, close_holes: int = 2
) -> trimesh.Trimesh:
    """A closed 2-manifold around ``mesh`` (open, self-intersecting or too dense) via a signed field.

    Unsigned distance to the surface on a grid (dense surface samples + k-d tree); cells reachable from
    the grid's border without crossing the surface are outside, enclosed cells inside (holes narrower than
    about one cell are closed); cells next to the surface take their side from the nearest sample's
    normal, so a cracked closed mesh keeps its size and an open sheet becomes a plate about half a cell
    thick behind itself. manifold3d's marching tetrahedra extracts the zero level, which is manifold by
    construction, then simplifies it.
    """
    import manifold3d
    from scipy import ndimage
    from scipy.spatial import cKDTree

    v = np.asarray(mesh.vertices, np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    longest = float((hi - lo).max())
    pitch = longest / resolution
    pad = 3 + close_holes  # free border cells, so erosion never seals the grid's border
    lo = lo - pad * pitch
    shape = np.ceil((hi + pad * pitch - lo) / pitch).astype(int) + 1
    spacing = pitch / 3.0
    n_samples = int(np.clip(mesh.area / spacing**2, 20000, 400000))
    samples, face_idx = trimesh.sample.sample_surface(mesh, n_samples, seed=0)
    normals = np.vstack([mesh.face_normals[face_idx], mesh.vertex_normals])
    samples = np.vstack([samples, v])  # vertices too: exact at corners and thin features
    grid = np.stack(
        np.meshgrid(*[lo[i] + pitch * np.arange(shape[i]) for i in range(3)], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    dist, nearest = cKDTree(samples).query(grid, k=1, distance_upper_bound=4 * pitch, workers=1)
    near = np.isfinite(dist)
    dist = np.minimum(dist, 4 * pitch)
    # which side of the surface a near cell is on, from the nearest sample's normal (outward for a
    # consistently wound mesh): keeps closed-but-cracked meshes at their true size
    front = np.zeros(len(grid), bool)
    idx = nearest[near]
    front[near] = np.einsum("ij,ij->i", grid[near] - samples[idx], normals[idx]) > 0
    shape_t = tuple(int(x) for x in shape)
    dist, front = dist.reshape(shape_t), front.reshape(shape_t)
    free = dist > 0.75 * pitch  # cells clear of the surface
    # flood from the border through free cells eroded by ``close_holes`` cells, then grow back: openings
    # narrower than about 2 * close_holes + 1.5 cells are capped, wide ones (a cup's mouth) stay open
    struct = ndimage.generate_binary_structure(3, 1)
    seeds = ndimage.binary_erosion(free, struct, iterations=close_holes, border_value=1) if close_holes else free
    labels, _ = ndimage.label(seeds)
    border = np.unique(
        np.concatenate(
            [
                labels[0].ravel(),
                labels[-1].ravel(),
                labels[:, 0].ravel(),
                labels[:, -1].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    outside = np.isin(labels, border[border > 0])
    if close_holes:
        outside = ndimage.binary_dilation(outside, struct, iterations=close_holes, mask=free)
    # manifold3d wants positive inside. Outside: -d. Near the surface and in front of it: -d. Enclosed or
    # behind the surface: +d, at least ``wall`` cells, so an open sheet becomes a plate behind itself.
    field = np.where(outside | (~free & front), -dist, np.maximum(dist, wall * pitch))
    flat = field.ravel().tolist()
    nx, ny, nz = (int(x) for x in shape)
    sy, sx = nz, ny * nz
    x0, y0, z0 = (float(x) for x in lo)
    inv = 1.0 / pitch
    outside_value = -4.0 * pitch

    def sdf(x: float, y: float, z: float) -> float:  # trilinear interpolation, plain Python for speed
        fx, fy, fz = (x - x0) * inv, (y - y0) * inv, (z - z0) * inv
        i, j, k = int(fx), int(fy), int(fz)
        if i < 0 or j < 0 or k < 0 or i >= nx - 1 or j >= ny - 1 or k >= nz - 1:
            return outside_value
        tx, ty, tz = fx - i, fy - j, fz - k
        b = i * sx + j * sy + k
        c000, c001, c010, c011 = flat[b], flat[b + 1], flat[b + sy], flat[b + sy + 1]
        c100, c101, c110, c111 = flat[b + sx], flat[b + sx + 1], flat[b + sx + sy], flat[b + sx + sy + 1]
        c00 = c000 + (c001 - c000) * tz
        c01 = c010 + (c011 - c010) * tz
        c10 = c100 + (c101 - c100) * tz
        c11 = c110 + (c111 - c110) * tz
        c0 = c00 + (c01 - c00) * ty
        c1 = c10 + (c11 - c10) * ty
        return c0 + (c1 - c0) * tx

    upper = lo + pitch * (shape - 1)
    bounds = [float(lo[0]), float(lo[1]), float(lo[2]), float(upper[0]), float(upper[1]), float(upper[2])]
    man = manifold3d.Manifold.level_set(sdf, bounds, pitch)
    if man.is_empty() or man.volume() <= 0:
        raise BadMeshError(
            "repair failed: the level-set remesh of this open mesh is empty (the surface is too small or too thin "
            "for the grid); re-export it as a closed mesh",
            stage="repair",
        )
    man = man.simplify(0.1 * pitch)
    out = _from_manifold(man)
    if not _is_good_volume(out):
        trimesh.repair.fix_normals(out)
    if not _is_good_volume(out):
        raise BadMeshError(
            "repair failed: the remeshed surface is not a closed volume; re-export the mesh as a closed surface",
            stage="repair",
        )
    return out


def convexity(mesh: trimesh.Trimesh) -> float:
    """Volume over convex-hull volume (1.0 = convex) of a watertight mesh."""
    hv = float(mesh.convex_hull.volume)
    return float(mesh.volume) / hv if hv > 0 else 0.0
