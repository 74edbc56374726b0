"""Signed distance to the hand's collision geometry, batched and differentiable in torch.

The ShadowHand collides through capsules, boxes and one convex mesh (the forearm). Their signed
distance is analytic, so the depth of object points inside the hand is exact: that is what the
physics filter's strict object-into-hand limit (1 mm) measures, and what the synthesiser's
penetration energy pushes down (DexGraspNet's E_pen does the same with the hand's SDF).

Outside the geometry, capsules and boxes give the true distance and the convex mesh a lower bound
(max over face planes); only the inside (negative) part is used for penetration.
"""

from __future__ import annotations

import functools

import mujoco
import numpy as np
import torch
import trimesh

from dga_engine.hand.mjcf import PREFIX, ROOT_BODY, hand_model
from dga_engine.hand.model import HandFK, farthest_point_sampling

Tensor = torch.Tensor
_KDOP_DIRECTIONS = 64


@functools.lru_cache(maxsize=1)
def _geoms() -> dict[str, np.ndarray]:
    """Collision geoms grouped by kind, in their link frames (link index as in HandModel)."""
    m = hand_model()
    root = m.body(ROOT_BODY).id
    caps, boxes, planes = [], [], []
    for g in range(m.ngeom):
        if not m.geom(g).name.startswith(PREFIX + "C_") or int(m.geom_bodyid[g]) < root:
            continue
        link = int(m.geom_bodyid[g]) - root
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, m.geom_quat[g])
        rot = rot.reshape(3, 3)
        pos = m.geom_pos[g].copy()
        size = m.geom_size[g]
        kind = m.geom_type[g]
        if kind == mujoco.mjtGeom.mjGEOM_CAPSULE:
            axis = rot[:, 2] * size[1]
            caps.append(np.concatenate([[link], pos - axis, pos + axis, [size[0]]]))
        elif kind == mujoco.mjtGeom.mjGEOM_BOX:
            boxes.append(np.concatenate([[link], pos, rot.reshape(-1), size[:3]]))
        elif kind == mujoco.mjtGeom.mjGEOM_MESH:
            mid = m.geom_dataid[g]
            v0, nv = m.mesh_vertadr[mid], m.mesh_vertnum[mid]
            hull = trimesh.Trimesh(m.mesh_vert[v0 : v0 + nv].astype(np.float64)).convex_hull
            verts = hull.vertices @ rot.T + pos
            # A 64-direction k-DOP around the hull (directions spread over its face normals, each
            # plane at the hull's support distance): a slightly conservative, much cheaper stand-in
            # for its ~700 faces. The forearm rarely touches an object; when it does, this counts.
            normals = trimesh.Trimesh(verts, hull.faces).convex_hull.face_normals
            pick = farthest_point_sampling(normals, _KDOP_DIRECTIONS)
            for n in normals[pick]:
                planes.append(np.concatenate([[link], n, [float((verts @ n).max())]]))
        else:  # pragma: no cover - the ShadowHand has only these three
            raise ValueError(f"unsupported hand geom type {kind}")
    return {"capsules": np.array(caps), "boxes": np.array(boxes), "planes": np.array(planes)}


class HandSDF(torch.nn.Module):
    """Signed distance from points to the posed hand (negative inside), per grasp.

    ``forward(fk, points)``: fk for B grasps, points (B, N, 3) or (N, 3) in the object frame ->
    (B, N) signed distance in metres to the union of all collision geoms.
    """

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        g = _geoms()
        c, b, p = g["capsules"], g["boxes"], g["planes"]

        def buf(name: str, value: np.ndarray, dt: torch.dtype = dtype) -> None:
            self.register_buffer(name, torch.as_tensor(value, dtype=dt), persistent=False)

        buf("cap_link", c[:, 0], torch.long)
        buf("cap_a", c[:, 1:4])
        buf("cap_b", c[:, 4:7])
        buf("cap_r", c[:, 7])
        buf("box_link", b[:, 0], torch.long)
        buf("box_pos", b[:, 1:4])
        buf("box_rot", b[:, 4:13].reshape(-1, 3, 3))
        buf("box_half", b[:, 13:16])
        buf("plane_link", p[:, 0], torch.long)
        buf("plane_n", p[:, 1:4])
        buf("plane_d", p[:, 4])
        self.plane_links = sorted(set(int(x) for x in p[:, 0]))
        # the link of each per_geom column (capsules, boxes, then one per convex-mesh link)
        buf("geom_link", np.concatenate([c[:, 0], b[:, 0], np.asarray(self.plane_links, dtype=float)]), torch.long)

    def per_geom(self, fk: HandFK, points: Tensor) -> Tensor:
        """(B, N, G) signed distances to each collision geom (capsules, boxes, then convex meshes).

        The geoms are posed in the object frame (a few per grasp) rather than the points moved into
        every geom's frame: capsules need no rotation at all, boxes and planes one small product.
        """
        if points.dim() == 2:
            points = points.unsqueeze(0).expand(fk.pos.shape[0], -1, -1)
        x = points.unsqueeze(2)  # (B, N, 1, 3)
        out = []
        # capsules: distance to the axis segment minus the radius
        rot, pos = fk.rot[:, self.cap_link], fk.pos[:, self.cap_link]  # (B, C, 3, 3), (B, C, 3)
        a = (rot @ self.cap_a.unsqueeze(-1)).squeeze(-1) + pos
        ab = (rot @ (self.cap_b - self.cap_a).unsqueeze(-1)).squeeze(-1)
        ax = x - a.unsqueeze(1)  # (B, N, C, 3)
        s = ((ax * ab.unsqueeze(1)).sum(-1) / (ab * ab).sum(-1).unsqueeze(1)).clamp(0.0, 1.0)
        out.append((ax - s.unsqueeze(-1) * ab.unsqueeze(1)).norm(dim=-1) - self.cap_r)
        # boxes: the standard box SDF in the box frame
        rot = fk.rot[:, self.box_link] @ self.box_rot  # (B, K, 3, 3) box axes in the object frame
        centre = (fk.rot[:, self.box_link] @ self.box_pos.unsqueeze(-1)).squeeze(-1) + fk.pos[:, self.box_link]
        local = ((x - centre.unsqueeze(1)).unsqueeze(-2) @ rot.unsqueeze(1)).squeeze(-2)  # R^T (x - c)
        q = local.abs() - self.box_half
        out.append(q.clamp_min(0.0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0.0))
        # convex meshes: max over face planes (exact inside, a lower bound outside)
        for link in self.plane_links:
            sel = self.plane_link == link
            n = fk.rot[:, link] @ self.plane_n[sel].T  # (B, 3, F) plane normals in the object frame
            d = self.plane_d[sel] + (fk.pos[:, link].unsqueeze(1) @ n).squeeze(1)  # (B, F)
            out.append(((points @ n) - d.unsqueeze(1)).max(dim=-1, keepdim=True).values)
        return torch.cat(out, dim=-1)

    def forward(self, fk: HandFK, points: Tensor) -> Tensor:
        return self.per_geom(fk, points).min(dim=-1).values

    @property
    def n_geoms(self) -> int:
        """Columns of :meth:`per_geom`: capsules, boxes, then one per convex-mesh link."""
        return len(self.cap_r) + len(self.box_half) + len(self.plane_links)

    def pairs(self, fk: HandFK, points: Tensor, geom: Tensor) -> Tensor:
        """(B, K) signed distance of each point (B, K, 3) to one geom, ``geom`` (B, K) indexing the columns
        of :meth:`per_geom`: the same values at 1/G of the cost, for points already matched to a geom."""
        nc, nb = len(self.cap_r), len(self.box_half)
        out = torch.zeros(points.shape[:2], dtype=points.dtype, device=points.device)
        rows, cols = (geom < nc).nonzero(as_tuple=True)
        if len(rows):  # capsules: distance to the axis segment minus the radius
            g = geom[rows, cols]
            rot, pos = fk.rot[rows, self.cap_link[g]], fk.pos[rows, self.cap_link[g]]
            a = (rot @ self.cap_a[g].unsqueeze(-1)).squeeze(-1) + pos
            ab = (rot @ (self.cap_b[g] - self.cap_a[g]).unsqueeze(-1)).squeeze(-1)
            ax = points[rows, cols] - a
            t = ((ax * ab).sum(-1) / (ab * ab).sum(-1)).clamp(0.0, 1.0)
            out = out.index_put((rows, cols), (ax - t.unsqueeze(-1) * ab).norm(dim=-1) - self.cap_r[g])
        rows, cols = ((geom >= nc) & (geom < nc + nb)).nonzero(as_tuple=True)
        if len(rows):  # boxes
            g = geom[rows, cols] - nc
            link = self.box_link[g]
            rot = fk.rot[rows, link] @ self.box_rot[g]
            centre = (fk.rot[rows, link] @ self.box_pos[g].unsqueeze(-1)).squeeze(-1) + fk.pos[rows, link]
            local = ((points[rows, cols] - centre).unsqueeze(-2) @ rot).squeeze(-2)
            q = local.abs() - self.box_half[g]
            out = out.index_put((rows, cols), q.clamp_min(0.0).norm(dim=-1) + q.max(dim=-1).values.clamp_max(0.0))
        for j, link in enumerate(self.plane_links):  # convex meshes: max over face planes
            rows, cols = (geom == nc + nb + j).nonzero(as_tuple=True)
            if len(rows):
                sel = self.plane_link == link
                n = fk.rot[rows, link] @ self.plane_n[sel].T  # (M, 3, F)
                d = self.plane_d[sel] + (fk.pos[rows, link].unsqueeze(1) @ n).squeeze(1)
                out = out.index_put((rows, cols), ((points[rows, cols].unsqueeze(1) @ n).squeeze(1) - d).max(-1).values)
        return out


@functools.lru_cache(maxsize=4)
def default_hand_sdf(device: str = "cpu") -> HandSDF:
    return HandSDF().to(device)


@functools.lru_cache(maxsize=4)
def _sphere_set(spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spheres whose union approximates the capsules and boxes: (link (S,), centre (S, 3), radius (S,),
    from_box (S,) bool)."""
    g = _geoms()
    links, centres, radii, boxes = [], [], [], []
    for row in g["capsules"]:
        a, b, r = row[1:4], row[4:7], row[7]
        k = int(np.ceil(np.linalg.norm(b - a) / spacing)) + 1
        s = np.linspace(0.0, 1.0, k)[:, None]
        centres.append(a + s * (b - a))
        links.append(np.full(k, int(row[0])))
        radii.append(np.full(k, r))
        boxes.append(np.zeros(k, dtype=bool))
    for row in g["boxes"]:
        pos, rot, half = row[1:4], row[4:13].reshape(3, 3), row[13:16]
        thin = int(np.argmin(half))
        r = half[thin]
        axes = []
        for i in range(3):
            reach = max(half[i] - r, 0.0) if i != thin else 0.0
            k = int(np.ceil(2 * reach / spacing)) + 1 if reach > 0 else 1
            axes.append(np.linspace(-reach, reach, k))
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        centres.append(grid @ rot.T + pos)
        links.append(np.full(len(grid), int(row[0])))
        radii.append(np.full(len(grid), r))
        boxes.append(np.ones(len(grid), dtype=bool))
    return np.concatenate(links), np.concatenate(centres), np.concatenate(radii), np.concatenate(boxes)


class HandSpheres(torch.nn.Module):
    """The capsules and boxes of the hand as a union of spheres, for cheap penetration energies.

    A sphere of radius r centred at c reaches ``r - d(c)`` deep into an object whose signed distance
    at c is ``d(c)``; capsules are swept spheres (centres along the axis every ``spacing``) and each
    box is swept by spheres of its half-thickness over its mid-plane. The union is inside the true
    geometry by at most ~0.4 mm between centres (and rounds the boxes' edges), so it measures
    object-into-hand penetration with one signed-distance query per sphere instead of one hand-SDF
    evaluation per object point. The forearm (convex mesh) is left to the hand-surface-point terms.
    """

    def __init__(self, spacing: float = 0.004, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        link, centre, radius, from_box = _sphere_set(spacing)
        self.register_buffer("from_box", torch.as_tensor(from_box), persistent=False)  # box spheres round its edges
        self.register_buffer("link", torch.as_tensor(link, dtype=torch.long), persistent=False)
        self.register_buffer("local", torch.as_tensor(centre, dtype=dtype), persistent=False)
        self.register_buffer("radius", torch.as_tensor(radius, dtype=dtype), persistent=False)

    def centres(self, fk: HandFK) -> Tensor:
        """(B, S, 3) sphere centres in the object frame."""
        return fk.transform(self.link, self.local)


@functools.lru_cache(maxsize=4)
def default_hand_spheres(device: str = "cpu") -> HandSpheres:
    return HandSpheres().to(device)
