"""Hand-object penetration metrics for evaluation and filtering, in millimetres, per grasp (CPU, numpy).

Two complementary measures, as in the paper's Appendix C (the dataset filter combines both):

**Hand into object** (:func:`hand_into_object_mm`) - every hand surface point takes its nearest object
point and its depth is the distance to that point when it is *inside*; the grasp's value is the maximum
depth (0 when nothing is inside). Inside is decided in one of two ways:

- the **normal sign test** (``parts=None``): inside when ``(p_obj - p_hand) . n_obj > 0``, the test of the
  reference's ERF term and Pen metric;
- the **convex parts** (``parts=ObjectParts``): inside when the point lies in one of the object's convex
  parts, the geometry the simulator uses. The filter uses this by default (``FilterConfig.hand_object_inside``),
  because the sign test raises false alarms next to sharp edges (below).

A :class:`scipy.spatial.cKDTree` over the object's points is built once per object and reused for every
grasp (the prototype measured ~2 ms per grasp against ~5.5 ms for torch ``cdist``).

**The reference's Pen metric** (:func:`dga_pen_mm`) is this measure with the sign test, on the hand's
:meth:`~dga_engine.hand.model.HandModel.erf_points` (every link but the forearm) against the first
:data:`DGA_PEN_POINTS` (4096) of the object's dense points, as DGA's ``scripts/grasp_gen_ur/test.py``
computes it (``compute_collision`` on ``object_pcds_nors[:4096]``); its mean over grasps is Pen.

Limits of the nearest-point measure:

- the depth is the distance to the nearest *sample*, not to the surface: outside-to-inside it can be
  off by up to about half the sample spacing (~0.5 mm for 10240 points on a 10 cm object);
- with the sign test, the sign comes from one normal: near sharp concave edges, thin walls and at points
  deeper than the object's local thickness, the nearest sample can belong to the "wrong" face, so a deep
  point can be called outside (underestimate) or a point just outside an edge inside (overestimate: a
  caging grasp of a box read 13 mm there); the parts test has neither error for the simulated geometry;
- only the hand's *sampled* surface points are tested, so an object edge slipping between samples is
  missed (the second measure covers that).

**Object into hand** (:func:`object_into_hand_mm`) - how deep object points reach inside the hand's
collision geometry, the geometry MuJoCo simulates (geoms ``robot0:C_*``): capsules (phalanges, wrist),
boxes (palm, little-finger metacarpal) and the forearm's convex mesh. Object points are moved into each
geom's frame and the signed distance is evaluated exactly - analytically for capsules and boxes and by
the face planes of the convex hull for the forearm (exact for points inside a convex body). Far geoms are
skipped with bounding-sphere tests and a k-d tree ball query. This replaces the reference's palm SDF
and cylinder approximation of the phalanges with the simulated geometry itself. The grasp's value is
the deepest point; the filter's "object into hand below 1 mm" limits it over the 10240 dense points. That
is not DexGraspNet's E_pen (the "[41]" criterion), which *sums* the depths of ~2000 object samples and
keeps grasps whose sum is below 1 mm - a stricter test, since a sum is never below its largest term:
:func:`object_into_hand_sum_mm` computes that sum (the filter records it over the 2048 standard points
as ``pen_object_hand_sum_mm``). Limits: a point inside
two overlapping geoms of the hand counts the larger of its two depths, which can be less than its
depth in their union; only the sampled object points are tested, so a thin object feature between
samples can be missed (use the dense points).

Both functions accept numpy arrays or torch tensors (any device; they are detached and moved to the
CPU) and return ``float64`` numpy arrays of shape (B,).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from dga_engine.hand.mjcf import PREFIX, ROOT_BODY, hand_model

__all__ = [
    "ObjectCloud",
    "ObjectParts",
    "HandCollision",
    "hand_collision",
    "hand_into_object_mm",
    "hand_into_object_depths",
    "DGA_PEN_POINTS",
    "dga_pen_cloud",
    "dga_pen_mm",
    "object_into_hand_mm",
    "object_into_hand_depths_mm",
    "object_into_hand_sum_mm",
]


def _np(x, name: str) -> np.ndarray:
    """A float64 numpy copy of an array or (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values; check the grasp poses / object points")
    return arr


class ObjectCloud:
    """An object's points and outward normals with a k-d tree built once (reuse it for many grasps).

    points: (No, 3) metres in the object frame; normals: (No, 3) outward unit normals (optional; only
    :func:`hand_into_object_mm` needs them).
    """

    def __init__(self, points, normals=None) -> None:
        self.points = _np(points, "object_points")
        if self.points.ndim != 2 or self.points.shape[1] != 3 or len(self.points) == 0:
            raise ValueError(f"object points must be (No, 3) with No > 0, got {self.points.shape}")
        self.normals = None
        if normals is not None:
            self.normals = _np(normals, "object_normals")
            if self.normals.shape != self.points.shape:
                raise ValueError(f"object normals {self.normals.shape} do not match points {self.points.shape}")
        self.tree = cKDTree(self.points)
        lo, hi = self.points.min(axis=0), self.points.max(axis=0)
        self.centre = (lo + hi) / 2  # bounding sphere, for culling far hand geoms
        self.radius = float(np.linalg.norm(self.points - self.centre, axis=1).max())

    @classmethod
    def from_asset(cls, asset, scale: float = 1.0, dense: bool = True) -> ObjectCloud:
        """From an ``ObjectAsset`` (object store): its dense (10240) or regular (2048) points, scaled."""
        pts = asset.dense_points if dense else asset.points
        nrm = asset.dense_normals if dense else asset.normals
        return cls(np.asarray(pts, dtype=np.float64) * float(scale), nrm)

    def __len__(self) -> int:
        return len(self.points)


def _clouds(object_points, object_normals, batch: int, need_normals: bool) -> list[ObjectCloud]:
    """One ObjectCloud shared by the batch, or one per grasp for (B, No, 3) inputs."""
    if isinstance(object_points, ObjectCloud):
        clouds = [object_points]
    else:
        pts = _np(object_points, "object_points")
        nrm = None if object_normals is None else _np(object_normals, "object_normals")
        if pts.ndim == 2:
            clouds = [ObjectCloud(pts, nrm)]
        elif pts.ndim == 3:
            if len(pts) != batch:
                raise ValueError(f"per-grasp object points have batch {len(pts)}, the hand has {batch}")
            clouds = [ObjectCloud(pts[b], None if nrm is None else nrm[b]) for b in range(batch)]
        else:
            raise ValueError(f"object points must be (No, 3) or (B, No, 3), got {pts.shape}")
    if need_normals and any(c.normals is None for c in clouds):
        raise ValueError("hand_into_object_mm needs the object's outward normals (object_normals)")
    return clouds


# ---- hand into object ------------------------------------------------------------------------------


class ObjectParts:
    """An object's convex parts as half-space sets, for an exact inside test of the simulated geometry.

    parts: the convex part meshes (object frame, metres, already scaled). A point is inside the object
    when it is inside at least one part (all of that part's face planes have it on their inner side).
    """

    def __init__(self, parts, scale: float = 1.0) -> None:
        planes, lo, hi = [], [], []
        for part in parts:
            hull = ConvexHull(np.asarray(part.vertices, dtype=np.float64) * float(scale))
            planes.append(hull.equations)  # rows (nx, ny, nz, offset): n.p + offset <= 0 inside
            lo.append(hull.points[hull.vertices].min(axis=0))
            hi.append(hull.points[hull.vertices].max(axis=0))
        if not planes:
            raise ValueError("an object needs at least one convex part for the exact inside test")
        self.planes = planes
        self.lo = np.asarray(lo)
        self.hi = np.asarray(hi)

    @classmethod
    def from_asset(cls, asset, scale: float = 1.0) -> ObjectParts:
        return cls(asset.parts, scale)

    def contains(self, points: np.ndarray, tolerance: float = 1e-6, max_elements: int = 1 << 22) -> np.ndarray:
        """(M,) bool: which points (M, 3) lie inside the union of the parts (boundary counts as outside).

        Points are tested against one part in chunks of at most ``max_elements`` point-plane products
        (32 MB of float64), so memory stays bounded whatever M and the parts' face counts are.
        """
        points = np.asarray(points, dtype=np.float64)
        inside = np.zeros(len(points), dtype=bool)
        # Box tests on contiguous coordinate columns: 3x faster than np.all(..., axis=1) over (M, 3) (measured on
        # hand points around a 16-part object). Most hand points are nowhere near the object: only the others go on.
        x, y, z = (np.ascontiguousarray(points[:, k]) for k in range(3))
        near = np.flatnonzero(_in_box(x, y, z, self.lo.min(axis=0), self.hi.max(axis=0)))
        if not len(near):
            return inside
        p, x, y, z = points[near], x[near], y[near], z[near]
        hit = np.zeros(len(near), dtype=bool)
        for planes, lo, hi in zip(self.planes, self.lo, self.hi):
            cand = np.flatnonzero(_in_box(x, y, z, lo, hi) & ~hit)
            chunk = max(1, max_elements // len(planes))
            for c in (cand[i : i + chunk] for i in range(0, len(cand), chunk)):
                side = p[c] @ planes[:, :3].T
                side += planes[:, 3]
                hit[c[side.max(axis=1) < -tolerance]] = True  # inside every face plane of this part
        inside[near] = hit
        return inside


def _in_box(x: np.ndarray, y: np.ndarray, z: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= lo[2]) & (z <= hi[2])


def hand_into_object_depths(
    hand_points, object_points, object_normals=None, *, parts: ObjectParts | None = None, workers: int = 1
) -> np.ndarray:
    """Per-point penetration depth (B, Nh) in metres (0 outside) of hand points in the object.

    hand_points: (B, Nh, 3) or (Nh, 3), object frame, metres. object_points: an :class:`ObjectCloud`
    (preferred: its tree is reused), (No, 3) shared by the batch, or (B, No, 3) one cloud per grasp.
    object_normals: matching outward normals when plain points are given.
    parts: when given, whether a point is inside is decided exactly by the object's convex parts (the
    geometry the simulator uses) instead of the nearest sample's normal; the depth is still the distance
    to the nearest surface sample. This removes the sign test's false alarms next to sharp edges, where
    the nearest sample can lie on the adjacent face (a caging grasp of a box read 13 mm there).
    """
    hp = _np(hand_points, "hand_points")
    if hp.ndim == 2:
        hp = hp[None]
    if hp.ndim != 3 or hp.shape[-1] != 3:
        raise ValueError(f"hand points must be (B, Nh, 3), got {hp.shape}")
    batch, nh, _ = hp.shape
    clouds = _clouds(object_points, object_normals, batch, need_normals=parts is None)
    out = np.zeros((batch, nh))
    groups = [(clouds[0], slice(None))] if len(clouds) == 1 else [(c, slice(b, b + 1)) for b, c in enumerate(clouds)]
    for cloud, sel in groups:
        q = hp[sel].reshape(-1, 3)
        if parts is None:
            dist, idx = cloud.tree.query(q, k=1, workers=workers)
            inside = np.einsum("ij,ij->i", cloud.points[idx] - q, cloud.normals[idx]) > 0
            out[sel] = np.where(inside, dist, 0.0).reshape(-1, nh)
        else:  # only points inside a part have a depth: look up just those
            depth = np.zeros(len(q))
            inside = np.flatnonzero(parts.contains(q))
            if len(inside):
                depth[inside] = cloud.tree.query(q[inside], k=1, workers=workers)[0]
            out[sel] = depth.reshape(-1, nh)
    return out


def hand_into_object_mm(
    hand_points, object_points, object_normals=None, *, parts: ObjectParts | None = None, workers: int = 1
) -> np.ndarray:
    """Maximum depth (B,) in millimetres (>= 0) of hand surface points inside the object.

    Without ``parts``: the normal sign test of the reference's ERF and Pen; see the module docstring for
    its limits. With ``parts``: the inside test is exact for the convex parts.
    Arguments as :func:`hand_into_object_depths`.
    """
    depths = hand_into_object_depths(hand_points, object_points, object_normals, parts=parts, workers=workers)
    return depths.max(axis=1) * 1000.0


DGA_PEN_POINTS = 4096  # object points of the reference's Pen: the first 4096 of its 10240 (random) samples


def dga_pen_cloud(dense_points, dense_normals, scale: float = 1.0) -> ObjectCloud:
    """The reference Pen's object cloud: the first 4096 dense points (a uniform random subset) and normals."""
    pts = np.asarray(dense_points, dtype=np.float64)[:DGA_PEN_POINTS] * float(scale)
    return ObjectCloud(pts, np.asarray(dense_normals)[:DGA_PEN_POINTS])


def dga_pen_mm(hand, fk, cloud: ObjectCloud) -> np.ndarray:
    """The reference's per-grasp Pen (B,) in mm: maximum sign-test depth of ``hand.erf_points(fk)`` in
    ``cloud`` (:func:`dga_pen_cloud`). The metric Pen is its mean over grasps."""
    return hand_into_object_mm(hand.erf_points(fk), cloud)


# ---- object into hand -------------------------------------------------------------------------------

_CAPSULE, _BOX, _HULL = 0, 1, 2


@dataclass(frozen=True)
class HandCollision:
    """The hand's collision geoms in their links' frames (read from the MJCF, see :func:`hand_collision`).

    names: (G,) geom names without the ``robot0:`` prefix. link: (G,) link index (``HandModel.link_names``).
    kind: (G,) 0 capsule, 1 box, 2 convex hull. rot: (G, 3, 3) geom orientation in the link frame.
    pos: (G, 3) geom origin in the link frame. size: (G, 3) capsule (radius, half-length, 0) or box
    half-extents. radius: (G,) bounding-sphere radius about the geom origin. planes: geom index ->
    (F, 4) hull face planes ``n . x + b <= 0`` inside, in the geom frame.
    """

    names: tuple[str, ...]
    link: np.ndarray
    kind: np.ndarray
    rot: np.ndarray
    pos: np.ndarray
    size: np.ndarray
    radius: np.ndarray
    planes: dict[int, np.ndarray]
    hull_box: dict[int, tuple[np.ndarray, np.ndarray]]

    def geom_poses(self, link_rot: np.ndarray, link_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Geom orientations (B, G, 3, 3) and origins (B, G, 3) from link poses (B, L, 3, 3), (B, L, 3)."""
        lr = link_rot[:, self.link]
        return lr @ self.rot, link_pos[:, self.link] + np.einsum("bgij,gj->bgi", lr, self.pos)

    def signed_distance(self, g: int, local: np.ndarray) -> np.ndarray:
        """Exact signed distance (negative inside) of points (N, 3) given in geom ``g``'s frame."""
        kind, size = self.kind[g], self.size[g]
        if kind == _CAPSULE:
            z = np.clip(local[:, 2], -size[1], size[1])
            return np.sqrt(local[:, 0] ** 2 + local[:, 1] ** 2 + (local[:, 2] - z) ** 2) - size[0]
        if kind == _BOX:
            q = np.abs(local) - size
            outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
            return outside + np.minimum(q.max(axis=1), 0.0)
        # Convex hull: the largest plane value is minus the distance to the boundary for inside points
        # (exact); outside it is a lower bound of the distance, which is all a depth needs. Points
        # outside the hull's box get their distance to the box (also a lower bound) and skip the
        # plane test, which is the expensive part (hundreds of faces).
        planes = self.planes[g]
        lo, hi = self.hull_box[g]
        box = np.linalg.norm(np.maximum(np.maximum(lo - local, local - hi), 0.0), axis=1)
        out = box.copy()
        inside_box = box == 0.0
        if inside_box.any():
            out[inside_box] = (local[inside_box] @ planes[:, :3].T + planes[:, 3]).max(axis=1)
        return out


@functools.lru_cache(maxsize=1)
def hand_collision() -> HandCollision:
    """The collision geoms ``robot0:C_*`` of the hand MJCF, indexed like ``HandModel.link_names``."""
    m = hand_model()
    root = m.body(ROOT_BODY).id
    names, link, kind, rot, pos, size, radius, planes, boxes = [], [], [], [], [], [], [], {}, {}
    for g in range(m.ngeom):
        name = m.geom(g).name
        body = int(m.geom_bodyid[g])
        if not name.startswith(PREFIX + "C_") or body < root:
            continue
        r = np.zeros(9)
        mujoco.mju_quat2Mat(r, m.geom_quat[g])
        gtype = m.geom_type[g]
        s = np.zeros(3)
        i = len(names)
        if gtype == mujoco.mjtGeom.mjGEOM_CAPSULE:
            k, s[:2] = _CAPSULE, m.geom_size[g][:2]
            rad = s[0] + s[1]
        elif gtype == mujoco.mjtGeom.mjGEOM_BOX:
            k, s = _BOX, m.geom_size[g][:3].copy()
            rad = float(np.linalg.norm(s))
        elif gtype == mujoco.mjtGeom.mjGEOM_MESH:
            # MuJoCo collides with the mesh's convex hull; mesh vertices are stored in the geom frame.
            mid = m.geom_dataid[g]
            verts = m.mesh_vert[m.mesh_vertadr[mid] : m.mesh_vertadr[mid] + m.mesh_vertnum[mid]].astype(np.float64)
            hull = ConvexHull(verts)
            k, planes[i] = _HULL, hull.equations.copy()
            boxes[i] = (verts.min(axis=0), verts.max(axis=0))
            rad = float(np.linalg.norm(verts[hull.vertices], axis=1).max())
        else:  # pragma: no cover - the ShadowHand has only these three
            raise ValueError(f"unsupported collision geom type {gtype} for {name}")
        names.append(name.removeprefix(PREFIX))
        link.append(body - root)  # HandModel links are the bodies from the forearm on, in body order
        kind.append(k)
        rot.append(r.reshape(3, 3))
        pos.append(m.geom_pos[g].copy())
        size.append(s)
        radius.append(rad)
    return HandCollision(
        names=tuple(names),
        link=np.asarray(link),
        kind=np.asarray(kind),
        rot=np.stack(rot),
        pos=np.stack(pos),
        size=np.stack(size),
        radius=np.asarray(radius),
        planes=planes,
        hull_box=boxes,
    )


def _link_poses(fk) -> tuple[np.ndarray, np.ndarray]:
    """Link rotations (B, L, 3, 3) and positions (B, L, 3) from a HandFK or a (rot, pos) pair."""
    rot, pos = (fk.rot, fk.pos) if hasattr(fk, "rot") else fk
    rot, pos = _np(rot, "link rotations"), _np(pos, "link positions")
    if rot.ndim == 3:
        rot, pos = rot[None], pos[None]
    if rot.shape[-2:] != (3, 3) or pos.shape[:-1] != rot.shape[:-2] or pos.shape[-1] != 3:
        raise ValueError(f"link poses must be rot (B, L, 3, 3) and pos (B, L, 3), got {rot.shape}, {pos.shape}")
    return rot, pos


def _geom_hits(object_points, fk, hand):
    """Per grasp and hand geom near the object: (b, g, object point indices (M,), their signed
    distances (M,) in metres to geom g, negative inside), for the object's points in g's bounding sphere."""
    geoms = hand_collision()
    link_rot, link_pos = _link_poses(fk)
    batch, n_links = link_pos.shape[:2]
    if hand is not None and len(hand.link_names) != n_links:
        raise ValueError(f"fk has {n_links} links but the hand model has {len(hand.link_names)}")
    if n_links <= geoms.link.max():
        raise ValueError(f"fk has {n_links} links; the ShadowHand's collision geoms need {geoms.link.max() + 1}")
    clouds = _clouds(object_points, None, batch, need_normals=False)
    grot, gpos = geoms.geom_poses(link_rot, link_pos)
    for b in range(batch):
        cloud = clouds[0] if len(clouds) == 1 else clouds[b]
        # Culling: geoms whose bounding sphere misses the object's are skipped; for the others a k-d
        # tree ball query finds the object points inside the geom's bounding sphere, and only those are
        # moved into the geom's frame and tested.
        hit = np.flatnonzero(np.linalg.norm(gpos[b] - cloud.centre, axis=1) < geoms.radius + cloud.radius)
        if len(hit) == 0:
            continue
        for g, idx in zip(hit, cloud.tree.query_ball_point(gpos[b, hit], geoms.radius[hit], return_sorted=False)):
            if not idx:
                continue
            idx = np.asarray(idx)
            local = (cloud.points[idx] - gpos[b, g]) @ grot[b, g]  # R^T (p - c), row-vector form
            yield b, g, idx, geoms.signed_distance(g, local)


def _batch_size(fk) -> int:
    return _link_poses(fk)[1].shape[0]


def object_into_hand_depths_mm(object_points, fk, hand=None) -> np.ndarray:
    """Per-geom maximum depth (B, G) in millimetres of object points inside each hand collision geom.

    object_points: an :class:`ObjectCloud`, (No, 3) shared by the batch, or (B, No, 3) per grasp;
    object frame, metres (apply the grasp's object scale first).
    fk: ``HandFK`` from ``HandModel.forward_kinematics`` (or a ``(rot, pos)`` pair of link poses).
    hand: the HandModel that produced ``fk`` (checked against the MJCF's links); optional.
    Column g is the geom ``hand_collision().names[g]``.
    """
    out = np.zeros((_batch_size(fk), len(hand_collision().names)))
    for b, g, _, sd in _geom_hits(object_points, fk, hand):
        out[b, g] = max(0.0, -float(sd.min()))
    return out * 1000.0


def object_into_hand_mm(object_points, fk, hand=None) -> np.ndarray:
    """Maximum depth (B,) in millimetres (>= 0) of object points inside the hand's collision geometry.

    Arguments as :func:`object_into_hand_depths_mm`; see the module docstring for the method.
    """
    return object_into_hand_depths_mm(object_points, fk, hand).max(axis=1)


def object_into_hand_sum_mm(object_points, fk, hand=None) -> np.ndarray:
    """Sum (B,) over object points of their depth (mm) inside the hand: DexGraspNet's E_pen style ([41]).

    A point's depth is its largest depth over the hand's collision geoms (0 outside). DexGraspNet sums
    the depths of ~2000 object surface samples inside its hand meshes and keeps grasps whose sum is
    below 1 mm; pass the object's 2048 standard points for the same count. Arguments as
    :func:`object_into_hand_depths_mm`.
    """
    batch = _batch_size(fk)
    deepest: list[dict[int, float]] = [{} for _ in range(batch)]
    for b, _, idx, sd in _geom_hits(object_points, fk, hand):
        inside = sd < 0
        for i, d in zip(idx[inside].tolist(), (-sd[inside]).tolist()):
            if d > deepest[b].get(i, 0.0):
                deepest[b][i] = d
    return np.array([sum(d.values()) for d in deepest]) * 1000.0
