"""The smallest pose change that removes penetration and keeps the contacts: damped Gauss-Newton.

For B grasps at poses x (root translation, root rotation, 24 joints), each iteration

1. picks, without autograd, the points that can violate a limit: the object's dense points nearest the
   hand's collision geometry, the hand surface points deepest in the object, and the grasp's contacts
   (hand surface points that started within ``contact_radius`` of the surface);
2. stacks their hinge residuals, all in metres: object points deeper inside the hand than its target
   (``relu(-hand_sdf(p) - target)``, exact capsules/boxes/hull, :class:`HandSDF`), hand points deeper
   in the object than its target (``relu(depth - target)``, depth along the nearest sample's normal) and
   contacts that drifted off (``relu(d - allowed)``): a repair goes no further than the targets;
3. takes their Jacobian with respect to a local change (translation, rotation vector about the current
   orientation, joints: 30 variables) by forward differences, batched into one forward-kinematics call;
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
_N_OBJECT = 48  # object points per grasp in the residuals (the nearest to the hand's geometry)
_N_HAND = 32  # hand surface points per grasp for hand-into-object (the deepest)
_N_CONTACT = 32  # contact points per grasp at most
_EPS = 1e-4  # forward-difference step (m, rad)
_WRIST = 0.10  # metres of hand motion per radian of the root rotation and the wrist joints
_FINGER = 0.04  # ... per radian of a finger joint


class LeastSquaresRepair:
    """Repairs batches of grasps of one object (see the module docstring).

    points, normals: (No, 3) the object's dense samples and outward normals (metres, object frame, scaled).
    inside: ``inside(points (M,3) numpy) -> (M,) bool``, the exact inside test (the object's convex parts).
    """

    def __init__(self, hand: HandModel, hand_sdf: HandSDF, spheres: HandSpheres, points: np.ndarray, normals: np.ndarray,
                 inside, *, object_target: float = 5e-4, hand_target: float = 0.005, contact_radius: float = 0.003,
                 contact_slack: float = 0.001, damping: float = 0.1, iterations: int = 10) -> None:
        from scipy.spatial import cKDTree

        self.hand, self.hand_sdf, self.spheres = hand, hand_sdf, spheres
        dtype = hand.lower.dtype
        self.points = torch.as_tensor(points, dtype=dtype)
        self.normals = torch.as_tensor(normals, dtype=dtype)
        self.tree = cKDTree(np.asarray(points, dtype=np.float64))
        self.inside = inside
        self.object_target, self.hand_target = float(object_target), float(hand_target)
        self.contact_radius, self.contact_slack = float(contact_radius), float(contact_slack)
        self.damping, self.iterations = float(damping), int(iterations)
        w = torch.ones(30, dtype=dtype)
        w[3:6] = _WRIST
        w[6:] = _FINGER
        w[6:8] = _WRIST  # WRJ1, WRJ0 swing the whole hand
        self.metric = w * w

    # ---- the object side, without autograd --------------------------------------------------------

    def _signed(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact signed distance (M,) (nearest sample, parts' inside test) and the nearest sample index (M,)."""
        dist, idx = self.tree.query(p, k=1)
        return np.where(self.inside(p), -dist, dist), idx

    def _hand_rows(self, fk: HandFK, k: int, contacts: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Surface point indices (B, k) (the k deepest, or the given contacts), their nearest samples (B, k)
        and their current signed distances (B, k)."""
        with torch.no_grad():
            pts = self.hand.surface_points(fk)
        b, n, _ = pts.shape
        sd, near = self._signed(pts.reshape(-1, 3).double().numpy())
        sd, near = torch.from_numpy(sd.reshape(b, n)), torch.from_numpy(near.reshape(b, n))
        idx = contacts if contacts is not None else sd.topk(min(k, n), dim=-1, largest=False).indices
        rows = torch.arange(b).unsqueeze(1)
        return idx, near[rows, idx], sd[rows, idx].to(pts.dtype)

    # ---- residuals ---------------------------------------------------------------------------------

    def _residuals(self, x: Tensor, sel: dict[str, Tensor], reps: int) -> Tensor:
        """(N, K) residuals of N = B x reps poses; x (N, 3 + 9 + 24) = t, R (flattened), q."""
        hand = self.hand
        n = x.shape[0]
        fk = hand.forward_kinematics(x[:, :3], x[:, 3:12].reshape(n, 3, 3), x[:, 12:])

        def rep(a: Tensor) -> Tensor:
            return a.repeat_interleave(reps, dim=0)

        r_obj = (-self.hand_sdf(fk, rep(sel["obj_points"])) - self.object_target).clamp_min(0.0) * rep(sel["obj_mask"])

        def along_normal(idx: Tensor, near: Tensor) -> Tensor:
            rows = torch.arange(n).unsqueeze(1)
            link, local = hand.surface_link[rep(idx)], hand.surface_local[rep(idx)]
            p = (fk.rot[rows, link] @ local.unsqueeze(-1)).squeeze(-1) + fk.pos[rows, link]
            return ((p - self.points[rep(near)]) * self.normals[rep(near)]).sum(-1)  # > 0 outside

        r_hand = (-along_normal(sel["hand_idx"], sel["hand_near"]) - self.hand_target).clamp_min(0.0)
        out = [r_obj, r_hand]
        if "contact_idx" in sel:
            d = along_normal(sel["contact_idx"], sel["contact_near"])
            out.append((d - rep(sel["contact_allowed"])).clamp_min(0.0) * rep(sel["contact_mask"]))
        return torch.cat(out, dim=-1)

    def _select(self, t: Tensor, R: Tensor, q: Tensor, contacts: dict[str, Tensor] | None) -> dict[str, Tensor]:
        with torch.no_grad():
            fk = self.hand.forward_kinematics(t, R, q)
            index, mask = near_object_points(fk, self.points, self.hand_sdf, self.spheres, reach=0.004, cap=_N_OBJECT)
        sel = {"obj_points": self.points[index], "obj_mask": mask.to(self.points.dtype)}
        sel["hand_idx"], sel["hand_near"], _ = self._hand_rows(fk, _N_HAND)
        if contacts is not None:
            sel["contact_idx"], sel["contact_near"], _ = self._hand_rows(fk, 0, contacts["idx"])
            sel["contact_allowed"], sel["contact_mask"] = contacts["allowed"], contacts["mask"]
        return sel

    # ---- the solve ---------------------------------------------------------------------------------

    def __call__(self, x0: Tensor, bounds: PoseBounds, keep_contacts: bool = True) -> Tensor:
        """Repaired flat poses (B, 33) = t, 6D rotation, q from starting poses ``x0`` (B, 33), within ``bounds``."""
        dtype = self.hand.lower.dtype
        x = bounds.project(x0.detach().to(dtype))
        b = x.shape[0]
        t, R, q = x[:, :3].clone(), rot6d_to_matrix(x[:, 3:9]), x[:, 9:].clone()
        contacts = None
        if keep_contacts:  # the contacts of the pose as given (before joints were pulled into their limits)
            with torch.no_grad():
                fk0 = self.hand.forward_kinematics(x0[:, :3].to(dtype), rot6d_to_matrix(x0[:, 3:9].to(dtype)), x0[:, 9:].to(dtype))
            _, _, sd0 = self._hand_rows(fk0, 0, torch.arange(self.hand.surface_link.numel()).expand(b, -1))
            k = max(1, min(_N_CONTACT, int((sd0.abs() < self.contact_radius).sum(-1).max())))
            idx = sd0.abs().topk(k, dim=-1, largest=False).indices
            sd = torch.gather(sd0, 1, idx)
            contacts = {"idx": idx, "allowed": sd.clamp_min(0.0) + self.contact_slack,
                        "mask": (sd.abs() < self.contact_radius).to(dtype)}
        lam = torch.full((b,), self.damping, dtype=dtype)
        eye = torch.eye(30, dtype=dtype)
        start = torch.cat([t, R.reshape(b, 9), q], -1)
        active = torch.ones(b, dtype=torch.bool)
        with torch.no_grad():
            for _ in range(self.iterations):
                sel = self._select(t, R, q, contacts)
                cur = torch.cat([t, R.reshape(b, 9), q], -1)
                r0 = self._residuals(cur, sel, 1)
                active &= r0.max(-1).values > 0
                if not bool(active.any()):
                    break
                # forward differences in the local variables: dt (3), rotation vector (3), dq (24)
                pert = cur.unsqueeze(1).repeat(1, 31, 1)  # slot 0: the current pose
                for k in range(3):
                    pert[:, 1 + k, k] += _EPS
                for k in range(3):
                    aa = torch.zeros(3, dtype=dtype)
                    aa[k] = _EPS
                    pert[:, 4 + k, 3:12] = (axis_angle_to_matrix(aa) @ R).reshape(b, 9)
                for k in range(24):
                    pert[:, 7 + k, 12 + k] += _EPS
                res = self._residuals(pert.reshape(b * 31, -1), sel, 31).reshape(b, 31, -1)
                J = ((res[:, 1:] - res[:, :1]) / _EPS).transpose(1, 2)  # (B, K, 30)
                r = res[:, 0]
                H = J.transpose(1, 2) @ J + (lam**2)[:, None, None] * self.metric * eye
                dx = -torch.linalg.solve(H, (J.transpose(1, 2) @ r.unsqueeze(-1))).squeeze(-1)
                dx = dx * active.unsqueeze(1).to(dtype)
                t1, R1, q1 = t + dx[:, :3], axis_angle_to_matrix(dx[:, 3:6]) @ R, q + dx[:, 6:]
                x1 = bounds.project(torch.cat([t1, matrix_to_rot6d(R1), q1], -1))
                t1, R1, q1 = x1[:, :3], rot6d_to_matrix(x1[:, 3:9]), x1[:, 9:]
                new = torch.cat([t1, R1.reshape(b, 9), q1], -1)
                merit0 = (r**2).sum(-1) + lam**2 * self._change(cur, start)
                merit1 = (self._residuals(new, sel, 1) ** 2).sum(-1) + lam**2 * self._change(new, start)
                better = (merit1 < merit0) & active
                t, R, q = torch.where(better[:, None], t1, t), torch.where(better[:, None, None], R1, R), torch.where(better[:, None], q1, q)
                lam = torch.where(better, lam * 0.5, lam * 4.0).clamp(1e-3, 1e3)
        return torch.cat([t, matrix_to_rot6d(R), q], -1)

    def _change(self, x: Tensor, start: Tensor) -> Tensor:
        """(B,) |W (x - start)|^2 with the rotation change as the angle of R R_start^T."""
        b = x.shape[0]
        dt = ((x[:, :3] - start[:, :3]) ** 2).sum(-1)
        rel = x[:, 3:12].reshape(b, 3, 3) @ start[:, 3:12].reshape(b, 3, 3).transpose(1, 2)
        cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
        dr = torch.arccos(cos) ** 2 * self.metric[3]
        dq = (((x[:, 12:] - start[:, 12:]) ** 2) * self.metric[6:]).sum(-1)
        return dt + dr + dq
