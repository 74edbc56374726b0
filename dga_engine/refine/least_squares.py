"""The smallest pose change that removes penetration and keeps the contacts: damped Gauss-Newton.

For B grasps at poses x (root translation, root rotation, 24 joints), each iteration

1. picks (every few iterations), without autograd, the points that can violate a limit: the object's dense points nearest the
   hand's collision geometry, the hand surface points deepest in the object, and the grasp's contacts
   (hand surface points that started within ``contact_radius`` of the surface);
2. stacks their hinge residuals, all in metres: object points deeper inside the hand than its target
   (``relu(-hand_sdf(p) - target)``, exact capsules/boxes/hull, :class:`HandSDF`), hand points deeper
   in the object than its target (``relu(depth - target)``, depth along the nearest sample's normal) and
   contacts that drifted off (``relu(d - allowed)``): a repair goes no further than the targets;
3. takes their exact Jacobian with respect to a local change (translation, rotation vector about the
   root, joints: 30 variables) from the joints' world axes (:meth:`HandModel.joint_axes`), as MuJoCo's
   point Jacobians are made;
4. solves ``(J^T J + lam^2 W^2) dx = -J^T r`` per grasp - a minimal-norm step in a metric W that
   counts every variable in metres of hand motion (a joint radian moves a finger tip ~4 cm, a root
   radian the hand ~10 cm) - and projects the new pose into the bounds (:class:`PoseBounds`);
5. keeps the step when the grasp's merit (residuals^2 + lam^2 |W (x - x_start)|^2) went down, else
   raises that grasp's damping (Levenberg-Marquardt).

Unlike a first-order optimiser (Adam moves every variable by about its learning rate, whatever its
gradient), the step moves what the violated constraints need and little else, which is the point of
a repair: a palm 2 mm into an object is fixed by moving the root 2 mm back, not by nudging all 24 joints.
"""

from __future__ import annotations

import numpy as np
import torch

from dga_engine.hand.model import HandFK, HandModel
from dga_engine.hand.rotations import axis_angle_to_matrix, matrix_to_rot6d, rot6d_to_matrix
from dga_engine.synthesize.hand_sdf import HandSDF, HandSpheres
from dga_engine.synthesize.optimize import PoseBounds, near_object_points

Tensor = torch.Tensor
_CANDIDATE_REACH = 0.006  # object points within this of the hand at the start may enter the residuals ...
_N_CANDIDATES = 2048  # ... at most this many per grasp (the nearest to the hand's geometry) ...
_PER_GEOM = 3  # ... of which the deepest few per hand geom enter the residuals
_N_HAND = 32  # hand surface points per grasp for hand-into-object (the deepest)
_N_CONTACT = 32  # contact points per grasp at most
_RESELECT = 3  # iterations between re-selections of the residual points
_REACH = 0.02  # metres around the object's bounding box within which hand points are looked up
_WRIST = 0.10  # metres of hand motion per radian of the root rotation and the wrist joints
_FINGER = 0.04  # ... per radian of a finger joint


class LeastSquaresRepair:
    """Repairs batches of grasps of one object (see the module docstring).

    points, normals: (No, 3) the object's dense samples and outward normals (metres, object frame, scaled).
    inside: ``inside(points (M,3) numpy) -> (M,) bool``, the exact inside test (the object's convex parts).
    """

    def __init__(self, hand: HandModel, hand_sdf: HandSDF, spheres: HandSpheres, points: np.ndarray, normals: np.ndarray,
                 inside, *, object_target: float = 5e-4, hand_target: float = 0.005, contact_radius: float = 0.003,
                 contact_slack: float = 0.001, contact_weight: float = 0.1, damping: float = 0.1,
                 iterations: int = 10) -> None:
        from scipy.spatial import cKDTree

        self.hand, self.hand_sdf, self.spheres = hand, hand_sdf, spheres
        dtype = hand.lower.dtype
        self.points = torch.as_tensor(points, dtype=dtype)
        self.normals = torch.as_tensor(normals, dtype=dtype)
        self.tree = cKDTree(np.asarray(points, dtype=np.float64))
        self.box = (np.asarray(points).min(0) - _REACH, np.asarray(points).max(0) + _REACH)
        self.inside = inside
        self.object_target, self.hand_target = float(object_target), float(hand_target)
        self.contact_radius, self.contact_slack = float(contact_radius), float(contact_slack)
        self.contact_weight = float(contact_weight)
        self.damping, self.iterations = float(damping), int(iterations)
        w = torch.ones(30, dtype=dtype)
        w[3:6] = _WRIST
        w[6:] = _FINGER
        w[6:8] = _WRIST  # WRJ1, WRJ0 swing the whole hand
        self.metric = w * w

    # ---- the object side, without autograd --------------------------------------------------------

    def _signed(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact signed distance (M,) (nearest sample, parts' inside test) and the nearest sample index (M,).

        Points farther than ``_REACH`` from the object's bounding box are not looked up (distance inf,
        index 0): no residual can involve them.
        """
        sd = np.full(len(p), np.inf)
        idx = np.zeros(len(p), dtype=np.int64)
        near = np.flatnonzero(np.all((p >= self.box[0]) & (p <= self.box[1]), axis=1))
        if len(near):
            dist, idx[near] = self.tree.query(p[near], k=1)
            sd[near] = np.where(self.inside(p[near]), -dist, dist)
        return sd, idx

    def _deepest(self, fk: HandFK, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """The k hand surface points deepest inside the object (B, k), their nearest samples (B, k) and
        which of them are inside at all (B, k) bool.

        Only points inside the parts are looked up in the k-d tree (the others cannot be too deep)."""
        with torch.no_grad():
            pts = self.hand.surface_points(fk).reshape(-1, 3).double().numpy()
        b = fk.pos.shape[0]
        sd, near = np.full(len(pts), np.inf), np.zeros(len(pts), dtype=np.int64)
        box = np.flatnonzero(np.all((pts >= self.box[0]) & (pts <= self.box[1]), axis=1))
        inside = box[self.inside(pts[box])]
        if len(inside):
            dist, near[inside] = self.tree.query(pts[inside], k=1)
            sd[inside] = -dist
        sd_t, near_t = torch.from_numpy(sd.reshape(b, -1)), torch.from_numpy(near.reshape(b, -1))
        idx = sd_t.topk(min(k, sd_t.shape[1]), dim=-1, largest=False).indices
        return idx, torch.gather(near_t, 1, idx), torch.isfinite(torch.gather(sd_t, 1, idx))

    def _at(self, fk: HandFK, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Exact signed distances (B, k) of the surface points ``idx`` (B, k) and their nearest samples (B, k)."""
        with torch.no_grad():
            pts = self.hand.surface_points(fk)
        rows = torch.arange(pts.shape[0]).unsqueeze(1)
        p = pts[rows, idx]
        sd, near = self._signed(p.reshape(-1, 3).double().numpy())
        return torch.from_numpy(sd.reshape(idx.shape)).to(pts.dtype), torch.from_numpy(near.reshape(idx.shape))

    # ---- residuals ---------------------------------------------------------------------------------

    def _residuals(self, x: Tensor, sel: dict[str, Tensor], jacobian: bool = False) -> tuple[Tensor, Tensor | None]:
        """Residuals (N, K) of N poses x (N, 3 + 9 + 24) = t, R (flattened), q and, with ``jacobian``, their
        derivatives (N, K, 30) in the local variables (dt, rotation vector about the root, dq).

        Every residual is ``relu(n . p + c)`` for a point p carried by one hand link and a fixed direction n
        (the object point's outward hand-SDF gradient; a surface sample's normal), so its Jacobian row is
        the point's: ``n`` for the translation, ``(p - t) x n`` for the rotation, ``a_k . ((p - o_k) x n)``
        for each joint k that moves the link (axis a_k through o_k) - exact, from one kinematics pass.
        """
        hand = self.hand
        n = x.shape[0]
        fk = hand.forward_kinematics(x[:, :3], x[:, 3:12].reshape(n, 3, 3), x[:, 12:])
        rows = torch.arange(n).unsqueeze(1)
        values, points, dirs, links = [], [], [], []

        obj = sel["obj_points"]
        with torch.enable_grad():
            pts = obj.clone().requires_grad_(jacobian)
            sd = self.hand_sdf.pairs(fk, pts, sel["obj_geom"])
            grad = torch.autograd.grad(sd.sum(), pts)[0] if jacobian else None
        values.append((-sd.detach() - self.object_target).clamp_min(0.0) * sel["obj_mask"])
        if jacobian:  # the object point stays; the hand moves past it: d(-sd) = grad . v(p)
            points.append(obj)
            dirs.append(grad)
            links.append(self.hand_sdf.geom_link[sel["obj_geom"]])

        def on_surface(idx: Tensor, near: Tensor, sign: float, offset: Tensor, mask: Tensor, weight: float) -> None:
            link, local = hand.surface_link[idx], hand.surface_local[idx]
            p = (fk.rot[rows, link] @ local.unsqueeze(-1)).squeeze(-1) + fk.pos[rows, link]
            nrm = self.normals[near] * sign
            values.append(((p - self.points[near]) * nrm).sum(-1).sub(offset).clamp_min(0.0) * mask * weight)
            if jacobian:
                points.append(p)
                dirs.append(nrm * weight)
                links.append(link)

        if "hand_idx" in sel:  # depth along the normal beyond the target
            on_surface(sel["hand_idx"], sel["hand_near"], -1.0, torch.tensor(self.hand_target), sel["hand_mask"], 1.0)
        if "contact_idx" in sel:  # gap beyond what is allowed
            on_surface(sel["contact_idx"], sel["contact_near"], 1.0, sel["contact_allowed"], sel["contact_mask"],
                       self.contact_weight)
        r = torch.cat(values, dim=-1)
        if not jacobian:
            return r, None
        p, d, link = torch.cat(points, 1), torch.cat(dirs, 1), torch.cat(links, 1)
        axes, origins = hand.joint_axes(fk)  # (N, 24, 3)
        cols = [d, torch.cross(p - x[:, :3].unsqueeze(1), d, dim=-1)]
        moment = torch.cross(p.unsqueeze(2) - origins.unsqueeze(1), d.unsqueeze(2).expand(-1, -1, 24, -1), dim=-1)
        cols.append((moment * axes.unsqueeze(1)).sum(-1) * hand.joint_moves_link[link])
        J = torch.cat(cols, dim=-1) * (r > 0).unsqueeze(-1)  # hinges: no slope where satisfied
        return r, J

    def _candidates(self, t: Tensor, R: Tensor, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Object points (B, C) within ``_CANDIDATE_REACH`` of the hand at the start, a mask, and the hand
        geom nearest to each: the only points a repair moving the hand by millimetres can push into it,
        each watched against its geom. Found once per batch."""
        with torch.no_grad():
            fk = self.hand.forward_kinematics(t, R, q)
        return near_object_points(fk, self.points, self.hand_sdf, self.spheres, reach=_CANDIDATE_REACH,
                                  cap=_N_CANDIDATES, tree=self.tree, with_geom=True)  # fmt: skip

    def _select(self, t: Tensor, R: Tensor, q: Tensor, candidates: tuple[Tensor, Tensor, Tensor],
                contacts: dict[str, Tensor] | None, deep: Tensor) -> dict[str, Tensor]:
        """The residual points at the current poses (B grasps): see the module docstring."""
        index, mask, geom = candidates
        n_geoms = self.hand_sdf.n_geoms
        with torch.no_grad():
            fk = self.hand.forward_kinematics(t, R, q)
            sd = self.hand_sdf.pairs(fk, self.points[index], geom).masked_fill(~mask, float("inf"))
            # the deepest few points of *each* hand geom: fixing one place must not hide another
            per = torch.full((sd.shape[0], n_geoms, sd.shape[1]), float("inf"), dtype=sd.dtype)
            per.scatter_(1, geom.unsqueeze(1), sd.unsqueeze(1))
            top = per.topk(min(_PER_GEOM, sd.shape[1]), dim=2, largest=False)  # (B, G, m)
            b = sd.shape[0]
            flat = top.indices.reshape(b, -1)
            pick = torch.gather(index, 1, flat)
            valid = top.values.reshape(b, -1) < 0.001
        sel = {"obj_points": self.points[pick], "obj_geom": torch.gather(geom, 1, flat),
               "obj_mask": valid.to(self.points.dtype)}
        if bool(deep.any()):  # hand points deep in the object: only grasps that had some are looked at
            sel["hand_idx"], sel["hand_near"], inside = self._deepest(fk, _N_HAND)
            sel["hand_mask"] = (inside & deep.unsqueeze(1)).to(self.points.dtype)
        if contacts is not None:
            sel["contact_idx"] = contacts["idx"]
            _, sel["contact_near"] = self._at(fk, contacts["idx"])
            sel["contact_allowed"], sel["contact_mask"] = contacts["allowed"], contacts["mask"]
        return sel

    # ---- the solve ---------------------------------------------------------------------------------

    def __call__(self, x0: Tensor, bounds: PoseBounds, keep_contacts: bool = True, deep: Tensor | None = None) -> Tensor:
        """Repaired flat poses (B, 33) = t, 6D rotation, q from starting poses ``x0`` (B, 33), within ``bounds``.

        deep: (B,) bool, the grasps whose hand reaches deep into the object (more than half the hand
        target): only theirs are looked up each iteration (default: all).
        """
        dtype = self.hand.lower.dtype
        x = bounds.project(x0.detach().to(dtype))
        b = x.shape[0]
        t, R, q = x[:, :3].clone(), rot6d_to_matrix(x[:, 3:9]), x[:, 9:].clone()
        deep = deep if deep is not None else torch.ones(b, dtype=torch.bool)
        contacts = self._contacts(x0.detach().to(dtype)) if keep_contacts else None
        lam = torch.full((b,), self.damping, dtype=dtype)
        start = torch.cat([t, R.reshape(b, 9), q], -1)
        active = torch.ones(b, dtype=torch.bool)
        with torch.no_grad():
            candidates = self._candidates(t, R, q)
            for it in range(self.iterations):
                if it % _RESELECT == 0:  # the points that can violate a limit change slowly: re-pick them now and then
                    sel = self._select(t, R, q, candidates, contacts, deep)
                rows = active.nonzero().squeeze(1)
                if not len(rows):
                    break
                cur = torch.cat([t[rows], R[rows].reshape(-1, 9), q[rows]], -1)
                s = {k: v[rows] for k, v in sel.items()}
                r0, t1, R1, q1 = self._step(cur, s, lam[rows], bounds.take(rows))
                on_target = r0.max(-1).values <= 0  # done: no longer moved or evaluated
                new = torch.cat([t1, R1.reshape(-1, 9), q1], -1)
                merit0 = (r0**2).sum(-1) + lam[rows] ** 2 * self._change(cur, start[rows])
                merit1 = (self._residuals(new, s)[0] ** 2).sum(-1) + lam[rows] ** 2 * self._change(new, start[rows])
                better = (merit1 < merit0) & ~on_target
                t[rows] = torch.where(better[:, None], t1, t[rows])
                R[rows] = torch.where(better[:, None, None], R1, R[rows])
                q[rows] = torch.where(better[:, None], q1, q[rows])
                lam[rows] = torch.where(better, lam[rows] * 0.5, lam[rows] * 4.0).clamp(1e-3, 1e3)
                active[rows[on_target]] = False
        return torch.cat([t, matrix_to_rot6d(R), q], -1)

    def _contacts(self, x0: Tensor) -> dict[str, Tensor]:
        """The contacts of the poses as given (before joints were pulled into their limits): hand surface
        points within ``contact_radius`` of the surface, at most ``_N_CONTACT`` per grasp."""
        b = x0.shape[0]
        with torch.no_grad():
            fk0 = self.hand.forward_kinematics(x0[:, :3], rot6d_to_matrix(x0[:, 3:9]), x0[:, 9:])
        sd0, _ = self._at(fk0, torch.arange(self.hand.surface_link.numel()).expand(b, -1))
        k = max(1, min(_N_CONTACT, int((sd0.abs() < self.contact_radius).sum(-1).max())))
        idx = sd0.abs().topk(k, dim=-1, largest=False).indices
        sd = torch.gather(sd0, 1, idx)
        return {"idx": idx, "allowed": sd.clamp_min(0.0) + self.contact_slack,
                "mask": (sd.abs() < self.contact_radius).to(x0.dtype)}

    def _step(self, cur: Tensor, sel: dict[str, Tensor], lam: Tensor,
              bounds: PoseBounds) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One damped Gauss-Newton step of N poses ``cur`` (N, 36): the residuals there (N, K) and the new
        (t, R, q), projected into the bounds."""
        n = cur.shape[0]
        R = cur[:, 3:12].reshape(n, 3, 3)
        r, J = self._residuals(cur, sel, jacobian=True)
        H = J.transpose(1, 2) @ J + (lam**2)[:, None, None] * torch.diag(self.metric)
        dx = -torch.linalg.solve(H, J.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1)
        t1, R1, q1 = cur[:, :3] + dx[:, :3], axis_angle_to_matrix(dx[:, 3:6]) @ R, cur[:, 12:] + dx[:, 6:]
        x1 = bounds.project(torch.cat([t1, matrix_to_rot6d(R1), q1], -1))
        return r, x1[:, :3], rot6d_to_matrix(x1[:, 3:9]), x1[:, 9:]

    def _change(self, x: Tensor, start: Tensor) -> Tensor:
        """(B,) |W (x - start)|^2 with the rotation change as the angle of R R_start^T."""
        b = x.shape[0]
        dt = ((x[:, :3] - start[:, :3]) ** 2).sum(-1)
        rel = x[:, 3:12].reshape(b, 3, 3) @ start[:, 3:12].reshape(b, 3, 3).transpose(1, 2)
        cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
        dr = torch.arccos(cos) ** 2 * self.metric[3]
        dq = (((x[:, 12:] - start[:, 12:]) ** 2) * self.metric[6:]).sum(-1)
        return dt + dr + dq
