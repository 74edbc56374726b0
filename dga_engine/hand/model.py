"""The ShadowHand as a batched, differentiable torch model: forward kinematics and point sets.

Pose convention (written into every dataset's metadata, see :data:`POSE_CONVENTION`):

- the **root frame** is the MJCF body ``robot0:forearm`` (the hand's base; the wrist joints WRJ1/WRJ0
  come after it). A grasp's root translation ``t`` (metres) and rotation ``R`` place that frame in the
  object frame: ``p_object = R @ p_forearm + t``;
- the 24 joint angles are radians in :data:`~dga_engine.hand.mjcf.JOINT_NAMES` order, with the signs
  and zero positions of the gymnasium-robotics MJCF (fingers flex toward the forearm frame's ``-y``).

The kinematic parameters (body offsets, joint axes and positions, geoms) are read from the compiled
:class:`mujoco.MjModel`, so the torch model and MuJoCo agree by construction; a test checks it.

Point sets, all fixed in the link frames and chosen once, deterministically, from the collision geoms:

- **surface points** (external penetration, ERF): on every link that has collision geometry, a dense
  area-uniform sample of the geoms' surfaces (seeded), minus points buried inside another geom of the
  same link, thinned by farthest-point sampling to ``surface_points_per_link`` evenly spread points;
  :attr:`HandModel.erf_index` selects the subset the reference uses for ERF and the Pen metric (every
  link but the forearm: DGA's ``get_surface_points`` skips it), without changing the full set's order;
- **inner points** (surface pulling, SPF): the subset of a denser surface sample whose outward normal
  faces the palm side (the direction the finger or thumb closes toward), on the 15 phalanges and the
  palm, thinned by farthest-point sampling;
- **keypoints** (self-penetration, SRF): the centre of each phalanx capsule and each fingertip site (20
  points). Pairs on the same link or on links joined directly by a joint are excluded, since those cannot
  interpenetrate except through joint limits.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import mujoco
import numpy as np
import torch
import trimesh

from dga_engine.conventions import POSE_CONVENTION
from dga_engine.hand import rotations
from dga_engine.hand.mjcf import FINGERTIP_SITES, JOINT_NAMES, PREFIX, ROOT_BODY, hand_model

Tensor = torch.Tensor


# Links whose inner (palm-side) surface is pulled toward the object, and the local direction that
# faces the palm side on each. Fingers flex about +x, which swings their +z toward -y; the thumb's
# distal joint THJ0 flexes about +y over [-pi/2, 0], which swings its +z toward -x (its pad side).
_FINGER_LINKS = [f"{f}{seg}" for f in ("ff", "mf", "rf", "lf") for seg in ("proximal", "middle", "distal")]
_INNER_DIRECTIONS: dict[str, tuple[float, float, float]] = {
    **{name: (0.0, -1.0, 0.0) for name in _FINGER_LINKS},
    "thproximal": (-1.0, 0.0, 0.0),
    "thmiddle": (-1.0, 0.0, 0.0),
    "thdistal": (-1.0, 0.0, 0.0),
    "palm": (0.0, -1.0, 0.0),
}
_INNER_COS = 0.5  # a point counts as palm-side when its normal is within 60 degrees of the direction
_KEYPOINT_LINKS = [f"{f}{seg}" for f in ("ff", "mf", "rf", "lf", "th") for seg in ("proximal", "middle", "distal")]


@dataclass(frozen=True)
class HandFK:
    """Result of forward kinematics for a batch of B poses over L links (bodies from the forearm on).

    rot: (B, L, 3, 3) link orientations in the object frame.
    pos: (B, L, 3) link origins in the object frame, metres.
    """

    rot: Tensor
    pos: Tensor

    def transform(self, link_index: Tensor, local_points: Tensor) -> Tensor:
        """World positions (B, N, 3) of N points given in their links' frames (link_index: (N,)).

        General but slow for many points (it gathers a 3x3 matrix per point); the hand's own point sets
        use :meth:`place`, which groups points by link.
        """
        r = self.rot[:, link_index]  # (B, N, 3, 3)
        return (r @ local_points.unsqueeze(-1)).squeeze(-1) + self.pos[:, link_index]

    def place(self, points: LinkGroupedPoints, translate: bool = True) -> Tensor:
        """World positions (B, N, 3) of a point set grouped by link: one (B,U,3,3) x (U,P,3) product.

        With ``translate=False`` only the link rotations apply (for directions such as normals).
        """
        r = self.rot[:, points.links]  # (B, U, 3, 3)
        pts = torch.einsum("buij,upj->bupi", r, points.local.to(r.dtype))
        if translate:
            pts = pts + self.pos[:, points.links].unsqueeze(2)
        pts = pts.reshape(r.shape[0], -1, 3)
        return pts if points.identity else pts.index_select(1, points.flat)


class LinkGroupedPoints(torch.nn.Module):
    """Points fixed in link frames, stored padded per link so they are placed by one batched product.

    links: (U,) link indices; local: (U, P, 3) points per link (zero-padded); flat: (N,) position of each
    original point in the flattened (U*P) result; identity: whether no reordering or padding is needed.
    """

    def __init__(self, link: np.ndarray, local: np.ndarray, dtype: torch.dtype) -> None:
        super().__init__()
        link_t = torch.as_tensor(np.asarray(link), dtype=torch.long)
        uniq, inverse = torch.unique(link_t, return_inverse=True)
        counts = torch.bincount(inverse, minlength=len(uniq))
        per = int(counts.max())
        slot = torch.zeros_like(link_t)
        seen = torch.zeros(len(uniq), dtype=torch.long)
        for i, u in enumerate(inverse.tolist()):
            slot[i] = seen[u]
            seen[u] += 1
        padded = torch.zeros(len(uniq), per, 3, dtype=dtype)
        padded[inverse, slot] = torch.as_tensor(np.asarray(local), dtype=dtype)
        flat = inverse * per + slot
        self.register_buffer("links", uniq, persistent=False)
        self.register_buffer("local", padded, persistent=False)
        self.register_buffer("flat", flat, persistent=False)
        self.identity = bool(torch.equal(flat, torch.arange(len(link_t))))


@dataclass(frozen=True)
class _PointSet:
    link: np.ndarray  # (N,) int link index
    local: np.ndarray  # (N, 3) float64 points in the link frame
    normal: np.ndarray  # (N, 3) outward normals in the link frame


def _geom_mesh(m: mujoco.MjModel, g: int) -> trimesh.Trimesh:
    """The collision geom ``g`` as a triangle mesh in its body's frame."""
    gtype = m.geom_type[g]
    size = m.geom_size[g]
    if gtype == mujoco.mjtGeom.mjGEOM_CAPSULE:
        mesh = trimesh.creation.capsule(height=2 * size[1], radius=size[0], count=[24, 24])
    elif gtype == mujoco.mjtGeom.mjGEOM_BOX:
        mesh = trimesh.creation.box(extents=2 * size[:3])
    elif gtype == mujoco.mjtGeom.mjGEOM_MESH:
        mid = m.geom_dataid[g]
        v0, nv = m.mesh_vertadr[mid], m.mesh_vertnum[mid]
        f0, nf = m.mesh_faceadr[mid], m.mesh_facenum[mid]
        mesh = trimesh.Trimesh(m.mesh_vert[v0 : v0 + nv].copy(), m.mesh_face[f0 : f0 + nf].copy(), process=True)
        mesh = mesh.convex_hull  # MuJoCo collides with the mesh's convex hull
    else:  # pragma: no cover - the ShadowHand has only these three
        raise ValueError(f"unsupported hand geom type {gtype}")
    transform = np.eye(4)
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, m.geom_quat[g])
    transform[:3, :3] = rot.reshape(3, 3)
    transform[:3, 3] = m.geom_pos[g]
    mesh.apply_transform(transform)
    return mesh


def _inside_geom(m: mujoco.MjModel, g: int, pts: np.ndarray, margin: float = 1e-4) -> np.ndarray:
    """Which points (body frame) lie strictly inside capsule/box geom ``g``."""
    rot = np.zeros(9)
    mujoco.mju_quat2Mat(rot, m.geom_quat[g])
    local = (pts - m.geom_pos[g]) @ rot.reshape(3, 3)
    size = m.geom_size[g]
    if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_CAPSULE:
        z = np.clip(local[:, 2], -size[1], size[1])
        d = np.linalg.norm(local - np.stack([np.zeros_like(z), np.zeros_like(z), z], 1), axis=1)
        return d < size[0] - margin
    if m.geom_type[g] == mujoco.mjtGeom.mjGEOM_BOX:
        return np.all(np.abs(local) < size[:3] - margin, axis=1)
    return np.zeros(len(pts), dtype=bool)


def farthest_point_sampling(points: np.ndarray, k: int, start: int = 0) -> np.ndarray:
    """Indices of ``k`` points chosen greedily to be far from each other (deterministic)."""
    n = len(points)
    if k >= n:
        return np.arange(n)
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = start
    dist = np.linalg.norm(points - points[start], axis=1)
    for i in range(1, k):
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, np.linalg.norm(points - points[chosen[i]], axis=1))
    return chosen


class HandModel(torch.nn.Module):
    """Batched ShadowHand kinematics in torch.

    Args:
        surface_points_per_link: surface points per collision link for penetration (reference: 64).
        inner_points_per_link: palm-side points per phalanx (the palm gets twice as many).
        seed: seed of the surface sampling; the same seed gives the same point sets everywhere.
        device, dtype: where the buffers live; float32 is the default for speed, float64 for checks.
    """

    def __init__(
        self,
        surface_points_per_link: int = 64,
        inner_points_per_link: int = 10,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        m = hand_model()
        self.mj_model = m
        root = m.body(ROOT_BODY).id
        bodies = [root] + [b for b in range(root + 1, m.nbody)]
        index = {b: i for i, b in enumerate(bodies)}
        self.link_names: list[str] = [m.body(b).name.removeprefix(PREFIX) for b in bodies]
        self.joint_names: list[str] = list(JOINT_NAMES)
        joint_ids = [m.joint(PREFIX + j).id for j in JOINT_NAMES]
        joint_of_body = {int(m.jnt_bodyid[j]): k for k, j in enumerate(joint_ids)}

        parents, joint_index = [], []
        local_pos, local_rot, jpos = [], [], []
        for b in bodies:
            parents.append(index.get(int(m.body_parentid[b]), -1) if b != root else -1)
            local_pos.append(m.body_pos[b] if b != root else np.zeros(3))
            r = np.zeros(9)
            mujoco.mju_quat2Mat(r, m.body_quat[b] if b != root else np.array([1.0, 0, 0, 0]))
            local_rot.append(r.reshape(3, 3))
            k = joint_of_body.get(b, -1)
            if m.body_jntnum[b] > 1:  # pragma: no cover - not the case for this hand
                raise ValueError(f"body {m.body(b).name} has several joints")
            joint_index.append(k)
            jpos.append(m.jnt_pos[joint_ids[k]] if k >= 0 else np.zeros(3))
        self._parents = parents
        self._joint_index = joint_index
        moves = np.zeros((len(bodies), len(JOINT_NAMES)), dtype=bool)  # joint k moves link i
        for i in range(len(bodies)):
            a = i
            while a >= 0:
                if joint_index[a] >= 0:
                    moves[i, joint_index[a]] = True
                a = parents[a]
        self.joint_link = [joint_index.index(k) for k in range(len(JOINT_NAMES))]  # the link each joint turns

        def buf(name: str, value: np.ndarray, dt: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(np.asarray(value), dtype=dt), persistent=False)

        buf("local_pos", np.stack(local_pos))
        buf("local_rot", np.stack(local_rot))
        buf("joint_pos", np.stack(jpos))
        buf("axis_by_joint", np.stack([m.jnt_axis[j] for j in joint_ids]))
        buf("lower", m.jnt_range[joint_ids, 0])
        buf("upper", m.jnt_range[joint_ids, 1])

        surface = _surface_set(surface_points_per_link, seed)
        inner = _inner_set(inner_points_per_link, seed)
        keypoints, pair_mask = _keypoint_set()
        for name, ps in (("surface", surface), ("inner", inner), ("keypoint", keypoints)):
            buf(f"{name}_link", ps.link, torch.long)
            buf(f"{name}_local", ps.local)
            buf(f"{name}_normal", ps.normal)
        buf("keypoint_pair_mask", pair_mask, torch.bool)
        buf("joint_moves_link", moves, torch.bool)  # (L, 24): which joints move each link (point Jacobians)
        buf("erf_index", np.flatnonzero(surface.link != index[root]), torch.long)
        self.surface_group = LinkGroupedPoints(surface.link, surface.local, dtype)
        self.surface_normal_group = LinkGroupedPoints(surface.link, surface.normal, dtype)
        self.inner_group = LinkGroupedPoints(inner.link, inner.local, dtype)
        site_ids = [m.site(PREFIX + s).id for s in FINGERTIP_SITES]
        buf("fingertip_link", [index[int(m.site_bodyid[s])] for s in site_ids], torch.long)
        buf("fingertip_local", np.stack([m.site_pos[s] for s in site_ids]))
        self.surface_points_per_link = surface_points_per_link
        self.seed = seed
        if device is not None:
            self.to(device)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def n_joints(self) -> int:
        return len(self.joint_names)

    @property
    def n_links(self) -> int:
        return len(self.link_names)

    @property
    def surface_links(self) -> list[str]:
        return [self.link_names[i] for i in sorted(set(self.surface_link.tolist()))]

    # ---- kinematics --------------------------------------------------------------------------
    def forward_kinematics(self, translation: Tensor, rotation: Tensor, joints: Tensor) -> HandFK:
        """Link poses in the object frame.

        translation: (B, 3) root (forearm) position, metres. rotation: (B, 3, 3) root orientation.
        joints: (B, 24) radians in JOINT_NAMES order. Differentiable in all three.
        """
        if joints.shape[-1] != self.n_joints or translation.shape[-1] != 3 or rotation.shape[-2:] != (3, 3):
            raise ValueError(
                f"expected translation (B,3), rotation (B,3,3), joints (B,{self.n_joints}); got "
                f"{tuple(translation.shape)}, {tuple(rotation.shape)}, {tuple(joints.shape)}"
            )
        dtype = self.local_pos.dtype
        translation, rotation, joints = translation.to(dtype), rotation.to(dtype), joints.to(dtype)
        # Joint rotations for all 24 joints at once (Rodrigues about unit axes).
        jrot = rotations.axis_angle_to_matrix(joints.unsqueeze(-1) * self.axis_by_joint)  # (B, 24, 3, 3)

        rots: list[Tensor] = []
        poss: list[Tensor] = []
        for i, parent in enumerate(self._parents):
            if parent < 0:
                r, p = rotation, translation
            else:
                r = rots[parent] @ self.local_rot[i]
                p = poss[parent] + (rots[parent] @ self.local_pos[i].unsqueeze(-1)).squeeze(-1)
            k = self._joint_index[i]
            if k >= 0:
                jr = jrot[:, k]
                jp = self.joint_pos[i]
                # rotation about the joint axis through the joint position (body frame)
                p = p + (r @ (jp - (jr @ jp.unsqueeze(-1)).squeeze(-1)).unsqueeze(-1)).squeeze(-1)
                r = r @ jr
            rots.append(r)
            poss.append(p)
        return HandFK(rot=torch.stack(rots, 1), pos=torch.stack(poss, 1))

    def joint_axes(self, fk: HandFK) -> tuple[Tensor, Tensor]:
        """World axes (B, 24, 3) and a world point on each (B, 24, 3) of the 24 joints at these poses.

        A point p on link i then moves with joint k as ``axis_k x (p - origin_k)`` when
        ``joint_moves_link[i, k]`` (the columns of its Jacobian; the root adds I and ``-[p - t]_x``).
        """
        links = self.joint_link
        rot, pos = fk.rot[:, links], fk.pos[:, links]  # (B, 24, 3, 3), (B, 24, 3)
        jp = self.joint_pos[links]  # (24, 3) in each link's frame
        axes = (rot @ self.axis_by_joint.unsqueeze(-1)).squeeze(-1)
        origins = pos + (rot @ jp.unsqueeze(-1)).squeeze(-1)
        return axes, origins

    def surface_points(self, fk: HandFK) -> Tensor:
        """(B, Ns, 3) surface points in the object frame (Ns = links with geometry x points per link)."""
        return fk.place(self.surface_group)

    def erf_points(self, fk: HandFK) -> Tensor:
        """(B, Ne, 3) the reference's ERF / Pen points: the surface points of every link but the forearm."""
        return self.surface_points(fk).index_select(1, self.erf_index)

    def surface_normals(self, fk: HandFK) -> Tensor:
        """(B, Ns, 3) outward unit normals at the surface points."""
        return fk.place(self.surface_normal_group, translate=False)

    def inner_points(self, fk: HandFK) -> Tensor:
        """(B, Ni, 3) palm-side points on the phalanges and palm (SPF)."""
        return fk.place(self.inner_group)

    def keypoints(self, fk: HandFK) -> Tensor:
        """(B, Nk, 3) keypoints for self-penetration (SRF); pair with :attr:`keypoint_pair_mask`."""
        return fk.transform(self.keypoint_link, self.keypoint_local)

    def fingertips(self, fk: HandFK) -> Tensor:
        """(B, 5, 3) fingertip sites ff, mf, rf, lf, th."""
        return fk.transform(self.fingertip_link, self.fingertip_local)

    def clamp_joints(self, joints: Tensor) -> Tensor:
        return torch.maximum(torch.minimum(joints, self.upper), self.lower)

    def info(self) -> dict:
        """A JSON-ready description: joints with limits, links, point-set sizes."""
        return {
            "joints": self.joint_names,
            "lower": [float(x) for x in self.lower.tolist()],
            "upper": [float(x) for x in self.upper.tolist()],
            "links": self.link_names,
            "surface_links": self.surface_links,
            "point_sets": {
                "surface": int(self.surface_link.numel()),
                "surface_per_link": self.surface_points_per_link,
                "erf": int(self.erf_index.numel()),
                "inner": int(self.inner_link.numel()),
                "keypoints": int(self.keypoint_link.numel()),
                "keypoint_pairs": int(self.keypoint_pair_mask.triu(1).sum()),
                "fingertips": len(FINGERTIP_SITES),
            },
            "root_frame": POSE_CONVENTION["root_frame"],
        }


# ---- point-set construction (cached: identical for every model built with the same arguments) ----


def _collision_geoms_by_link() -> dict[str, list[int]]:
    m = hand_model()
    root = m.body(ROOT_BODY).id
    out: dict[str, list[int]] = {}
    for g in range(m.ngeom):
        if not m.geom(g).name.startswith(PREFIX + "C_"):
            continue  # visual meshes and the 1 mm placeholder boxes of the thumb base and hub
        b = int(m.geom_bodyid[g])
        if b < root:
            continue
        out.setdefault(m.body(b).name.removeprefix(PREFIX), []).append(g)
    return out


def _link_index() -> dict[str, int]:
    m = hand_model()
    root = m.body(ROOT_BODY).id
    return {m.body(b).name.removeprefix(PREFIX): b - root for b in range(root, m.nbody)}


def _dense_link_sample(link: str, geoms: list[int], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform surface samples of a link's geoms, without points buried in its other geoms."""
    m = hand_model()
    meshes = [_geom_mesh(m, g) for g in geoms]
    pts, nrm = [], []
    rng_seed = seed * 1000 + sum(ord(c) for c in link)
    areas = np.array([mesh.area for mesh in meshes])
    counts = np.maximum(1, np.round(n * areas / areas.sum()).astype(int))
    for i, (g, mesh, c) in enumerate(zip(geoms, meshes, counts)):
        p, face = trimesh.sample.sample_surface(mesh, int(c), seed=rng_seed + i)
        keep = np.ones(len(p), dtype=bool)
        for other in geoms:
            if other != g:
                keep &= ~_inside_geom(m, other, p)
        pts.append(p[keep])
        nrm.append(mesh.face_normals[face][keep])
    return np.concatenate(pts), np.concatenate(nrm)


@functools.lru_cache(maxsize=8)
def _surface_set(per_link: int, seed: int) -> _PointSet:
    idx = _link_index()
    links, local, normal = [], [], []
    for link, geoms in sorted(_collision_geoms_by_link().items(), key=lambda kv: idx[kv[0]]):
        p, n = _dense_link_sample(link, geoms, per_link * 40, seed)
        keep = farthest_point_sampling(p, per_link)
        links.append(np.full(len(keep), idx[link]))
        local.append(p[keep])
        normal.append(n[keep])
    return _PointSet(np.concatenate(links), np.concatenate(local), np.concatenate(normal))


@functools.lru_cache(maxsize=8)
def _inner_set(per_link: int, seed: int) -> _PointSet:
    idx = _link_index()
    geoms_by_link = _collision_geoms_by_link()
    links, local, normal = [], [], []
    for link, direction in sorted(_INNER_DIRECTIONS.items(), key=lambda kv: idx[kv[0]]):
        count = per_link * (2 if link == "palm" else 1)
        p, n = _dense_link_sample(link, geoms_by_link[link], count * 80, seed + 1)
        facing = n @ np.asarray(direction) > _INNER_COS
        p, n = p[facing], n[facing]
        keep = farthest_point_sampling(p, count)
        links.append(np.full(len(keep), idx[link]))
        local.append(p[keep])
        normal.append(n[keep])
    return _PointSet(np.concatenate(links), np.concatenate(local), np.concatenate(normal))


@functools.lru_cache(maxsize=1)
def _keypoint_set() -> tuple[_PointSet, np.ndarray]:
    m = hand_model()
    idx = _link_index()
    geoms_by_link = _collision_geoms_by_link()
    links, local = [], []
    for link in _KEYPOINT_LINKS:
        (g,) = geoms_by_link[link]
        links.append(idx[link])
        local.append(m.geom_pos[g].copy())
    for site in FINGERTIP_SITES:
        s = m.site(PREFIX + site).id
        links.append(idx[m.body(int(m.site_bodyid[s])).name.removeprefix(PREFIX)])
        local.append(m.site_pos[s].copy())
    links_arr = np.asarray(links)
    # Adjacent collision links: walk up from each link to the nearest ancestor that has geometry.
    root = m.body(ROOT_BODY).id
    has_geom = {idx[name] for name in geoms_by_link}

    def geom_parent(link: int) -> int:
        b = int(m.body_parentid[link + root]) - root
        while b >= 0 and b not in has_geom:
            b = int(m.body_parentid[b + root]) - root
        return b

    n = len(links_arr)
    mask = np.ones((n, n), dtype=bool)
    for i in range(n):
        for j in range(n):
            a, b = links_arr[i], links_arr[j]
            if a == b or geom_parent(a) == b or geom_parent(b) == a:
                mask[i, j] = False
    return _PointSet(links_arr, np.stack(local), np.zeros((n, 3))), mask


@functools.lru_cache(maxsize=4)
def default_hand(device: str = "cpu") -> HandModel:
    """A shared float32 HandModel with default point sets (built once per device)."""
    return HandModel(device=device)
