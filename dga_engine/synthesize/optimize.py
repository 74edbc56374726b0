"""Annealed, MALA-like optimisation of a batch of grasps, and the post-optimisation refinement.

Each step (DexGraspNet's annealing optimiser, plus Langevin noise):

1. propose ``x' = x - step * g / (sqrt(v) + eps) + noise`` where ``v`` is an RMSProp average of the
   squared gradients over the batch (one scale per variable: metres, 6D entries, radians), and
   ``noise = step * noise_scale * sqrt(T / T0) * N(0, 1)``;
2. with probability ``switch_probability`` per grasp, re-draw one of its contact candidates;
3. accept the proposal per grasp with probability ``min(1, exp((E - E') / T))`` (Metropolis), so the
   batch explores at high temperature and settles as T and the step decay geometrically;
4. at the ``restart_at`` fractions, grasps whose energy is above the batch's ``restart_quantile`` start
   again from a fresh initial pose (restarts).

The clean-up (:func:`clean_up`) then optionally pulls the contacts onto the surface (``close_steps``,
off by default: measured to lower the filter's acceptance) and removes penetration grasp by grasp:
object points inside the hand (dense samples, exact collision geometry) are pushed out, mostly by the
fingers, until the deepest is under ``pen_target_mm``, with joint limits enforced by clamping.

The anneal takes optional :class:`PoseBounds` (every proposal is projected back into them): the refine
stage's ``polish`` preset (:mod:`dga_engine.refine`) runs it from a generated pose within bounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from scipy.spatial import cKDTree

from dga_engine.hand.model import HandFK
from dga_engine.hand.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rot6d, rot6d_to_matrix
from dga_engine.physics.objectives import srf
from dga_engine.synthesize.config import SynthesisConfig
from dga_engine.synthesize.energy import TERMS, GraspEnergy, Pose
from dga_engine.synthesize.hand_sdf import HandSDF, HandSpheres

Tensor = torch.Tensor
_REFRESH = 15  # refinement steps between re-selections of the object points near the hand
_PER_SPHERE = 32  # object points looked up per hand sphere (the nearest; deeper ones come first)
_SPHERE_SLACK = 0.004  # metres: the swept spheres round the boxes' edges by at most ~3.3 mm (palm: 11 mm half-thickness)


@dataclass
class AnnealResult:
    """Final state of a batch of B grasps."""

    pose: Pose  # (B, ...) detached
    contact_idx: Tensor  # (B, n_contact) indices into the hand's palm-side points
    energy: Tensor  # (B,) total energy
    terms: dict[str, Tensor]  # (B,) each unweighted term
    history: list[float] = field(default_factory=list)  # batch-mean energy every 10 steps
    accept_rate: float = 0.0  # mean fraction of proposals accepted
    restarted: int = 0  # grasps re-initialised


@dataclass
class PoseBounds:
    """How far each of B poses may move from where it started; :meth:`project` enforces it.

    t0 (B, 3) and R0 (B, 3, 3): the starting root pose. q_lo, q_hi (B, 24): each joint's interval (its
    limits intersected with its allowed change). max_translation (metres) and max_rotation (radians,
    the angle of ``R R0^T``) bound the root.
    """

    t0: Tensor
    R0: Tensor
    q_lo: Tensor
    q_hi: Tensor
    max_translation: float
    max_rotation: float

    @classmethod
    def around(cls, pose: Pose, lower: Tensor, upper: Tensor, max_joint_change: float, max_translation: float,
               max_rotation: float) -> "PoseBounds":
        """Bounds around ``pose``: joints within ``max_joint_change`` of it and inside [lower, upper]."""
        q = pose.q.detach()
        return cls(t0=pose.t.detach().clone(), R0=pose.matrix().detach(), q_lo=torch.maximum(q - max_joint_change, lower),
                   q_hi=torch.minimum(q + max_joint_change, upper), max_translation=float(max_translation),
                   max_rotation=float(max_rotation))  # fmt: skip

    def feasible(self) -> Tensor:
        """(B,) whether every joint interval is non-empty (a joint farther outside its limits than the
        allowed change cannot be brought inside)."""
        return (self.q_lo <= self.q_hi).all(-1)

    @staticmethod
    def cat(items: list["PoseBounds"]) -> "PoseBounds":
        """The bounds of several batches in one (they must share the root's limits)."""
        first = items[0]
        return PoseBounds(*(torch.cat([getattr(b, f) for b in items]) for f in ("t0", "R0", "q_lo", "q_hi")),
                          first.max_translation, first.max_rotation)

    def take(self, rows: Tensor) -> "PoseBounds":
        """The bounds of a subset of the poses."""
        return PoseBounds(self.t0[rows], self.R0[rows], self.q_lo[rows], self.q_hi[rows], self.max_translation,
                          self.max_rotation)

    def project(self, x: Tensor) -> Tensor:
        """Flat poses (B, 33) moved to the nearest point within the bounds (the root's rotation along the
        geodesic back toward R0); the 6D part comes back orthonormal."""
        t, r6, q = x[:, :3], x[:, 3:9], x[:, 9:]
        dt = t - self.t0
        n = dt.norm(dim=-1, keepdim=True)
        t = self.t0 + dt * (self.max_translation / n.clamp_min(1e-12)).clamp(max=1.0)
        rel = rot6d_to_matrix(r6) @ self.R0.transpose(-1, -2)
        aa = matrix_to_axis_angle(rel)
        angle = aa.norm(dim=-1, keepdim=True)
        aa = aa * (self.max_rotation / angle.clamp_min(1e-12)).clamp(max=1.0)
        r6 = matrix_to_rot6d(axis_angle_to_matrix(aa) @ self.R0)
        q = torch.minimum(torch.maximum(q, self.q_lo), self.q_hi)
        return torch.cat([t, r6, q], dim=-1)


def _evaluate(energy: GraspEnergy, x: Tensor, idx: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    x = x.detach().requires_grad_(True)
    terms, _ = energy.terms(Pose.unflat(x), idx)
    total = energy.total(terms)
    (grad,) = torch.autograd.grad(total.sum(), x)
    return total.detach(), grad, {k: v.detach() for k, v in terms.items()}


def _orthonormal(x: Tensor) -> Tensor:
    """Re-orthonormalise the 6D rotation part (same rotation, steady step scale)."""
    x = x.clone()
    x[:, 3:9] = matrix_to_rot6d(rot6d_to_matrix(x[:, 3:9]))
    return x


def _schedule(start: float, end: float, k: int, n: int) -> float:
    if n <= 1 or start <= 0:
        return start
    return start * (end / start) ** (k / (n - 1))


def anneal(energy: GraspEnergy, pose: Pose, config: SynthesisConfig, gen: torch.Generator,
           reinit: Callable[[int], Pose] | None = None, *, bounds: PoseBounds | None = None,
           contact_idx: Tensor | None = None) -> AnnealResult:
    """Minimise the energy of a batch of grasps starting at ``pose``; random draws from ``gen``.

    bounds: every proposal is projected into them (no restarts then: a fresh pose would leave them).
    contact_idx: (B, n_contact) starting contact candidates (default: drawn at random), e.g.
    ``GraspEnergy.nearest_contacts`` for a warm start.
    """
    b = pose.t.shape[0]
    x = _orthonormal(pose.flat().detach())
    if bounds is not None:
        x = bounds.project(x)
        reinit = None
    idx = contact_idx.clone() if contact_idx is not None else energy.draw_contacts(b, gen)
    e, g, terms = _evaluate(energy, x, idx)
    v = torch.zeros(x.shape[1], dtype=x.dtype)
    scale = torch.full((x.shape[1],), config.step_size, dtype=x.dtype)  # per variable: metres, 6D, radians
    scale[3:9] *= config.step_rotation
    scale[9:] *= config.step_joints
    restart_steps = {int(f * config.n_iter) for f in config.restart_at if 0 < f < 1} if reinit else set()
    history, accepted, restarted = [float(e.mean())], 0.0, 0
    for k in range(config.n_iter):
        if k in restart_steps and b > 1:
            worst = e > torch.quantile(e, config.restart_quantile)
            m = int(worst.sum())
            if m:
                fresh = reinit(m)
                x[worst] = _orthonormal(fresh.flat().to(x.dtype))
                idx[worst] = energy.draw_contacts(m, gen)
                e, g, terms = _evaluate(energy, x, idx)
                restarted += m
        step = scale * _schedule(1.0, config.step_decay, k, config.n_iter)
        temp = _schedule(config.temperature, config.temperature_final, k, config.n_iter)
        v = config.rmsprop_mu * v + (1 - config.rmsprop_mu) * (g * g).mean(0)
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * (step * config.noise_scale * (temp / config.temperature) ** 0.5)
        x_new = x - step * g / (v.sqrt() + 1e-6) + noise
        if bounds is not None:
            x_new = bounds.project(x_new)
        switch = torch.rand(b, generator=gen) < config.switch_probability
        idx_new = energy.redraw_one(idx, torch.nonzero(switch).squeeze(1), gen)
        e_new, g_new, terms_new = _evaluate(energy, x_new, idx_new)
        u = torch.rand(b, generator=gen, dtype=x.dtype)
        accept = u < torch.exp(((e - e_new) / temp).clamp(max=0.0))
        accept &= torch.isfinite(e_new)
        a = accept.unsqueeze(1)
        x = torch.where(a, x_new, x)
        idx = torch.where(a, idx_new, idx)
        g = torch.where(a, g_new, g)
        e = torch.where(accept, e_new, e)
        terms = {kk: torch.where(accept, terms_new[kk], terms[kk]) for kk in TERMS}
        accepted += float(accept.float().mean())
        if (k + 1) % 10 == 0:
            if bounds is None:  # projected poses are orthonormal already
                x = _orthonormal(x)
            history.append(float(e.mean()))
    return AnnealResult(
        pose=Pose.unflat(x.detach()),
        contact_idx=idx,
        energy=e,
        terms=terms,
        history=history,
        accept_rate=accepted / max(config.n_iter, 1),
        restarted=restarted,
    )


def near_object_points(fk: HandFK, points: Tensor, hand_sdf: HandSDF, spheres: HandSpheres, reach: float,
                       cap: int, tree=None, with_geom: bool = False) -> tuple[Tensor, ...]:
    """Per grasp, the object points closer than ``reach`` to the hand's collision geometry.

    Candidates are the object points nearest each of the hand's swept spheres (a k-d tree of ``points``
    (N, 3), all grasps in one query) within its radius plus ``reach`` plus the few millimetres by which the
    spheres round the boxes' edges (half a millimetre for the capsules' spheres); the ``2 cap`` closest to
    the spheres get their exact signed distance to the hand (without autograd). Returns indices (B, K) into
    ``points`` and a mask (B, K) of valid entries, K <= cap (the closest are kept when more qualify);
    with ``with_geom`` also the nearest hand geom of each (B, K) (a column of :meth:`HandSDF.per_geom`).
    """
    tree = tree if tree is not None else cKDTree(points.detach().double().numpy())
    with torch.no_grad():
        centres = spheres.centres(fk).double().numpy()
    b, s = centres.shape[:2]
    radius = spheres.radius.double().numpy()
    # capsule spheres leave at most ~0.2 mm between centres; box spheres round the box's edges
    query = radius + reach + np.where(spheres.from_box.numpy(), _SPHERE_SLACK, 0.0005)
    # the object points nearest each sphere centre (the deepest into that sphere), all grasps at once
    dist, near = tree.query(centres.reshape(-1, 3), k=_PER_SPHERE, distance_upper_bound=float(query.max()))
    dist, near = dist.reshape(b, s, -1), near.reshape(b, s, -1)
    est = np.where(dist < query[None, :, None], dist - radius[None, :, None], np.inf).reshape(b, -1)
    near = near.reshape(b, -1)
    width = max(1, min(2 * cap, est.shape[1]))
    est_t, pos = torch.from_numpy(est).topk(width, dim=-1, largest=False)  # closest to the spheres first
    index = torch.gather(torch.from_numpy(near), 1, pos)
    # a point near several spheres appears more than once: keep its first (closest) entry
    order = torch.sort(index, dim=-1, stable=True)
    dup = torch.zeros_like(index, dtype=torch.bool)
    dup.scatter_(1, order.indices[:, 1:], order.values[:, 1:] == order.values[:, :-1])
    valid = torch.isfinite(est_t) & ~dup
    index = torch.where(valid, index, torch.zeros_like(index))
    sd = torch.full((b, width), float("inf"), dtype=points.dtype)
    geom = torch.zeros((b, width), dtype=torch.long)
    step = max(1, (1 << 22) // (width * 64))  # bounds (grasps x candidates x geoms) in memory
    with torch.no_grad():
        for g0 in range(0, b, step):
            sl = slice(g0, g0 + step)
            part = HandFK(rot=fk.rot[sl], pos=fk.pos[sl])
            sd[sl], geom[sl] = hand_sdf.per_geom(part, points[index[sl]]).min(dim=-1)
    sd = torch.where(valid & (sd < reach), sd, torch.full_like(sd, float("inf")))
    k = max(1, min(cap, int(torch.isfinite(sd).sum(-1).max())))
    order = sd.topk(k, dim=-1, largest=False).indices  # the closest first
    out = (torch.gather(index, 1, order), torch.isfinite(torch.gather(sd, 1, order)))
    return out + (torch.gather(geom, 1, order),) if with_geom else out


def clean_up(energy: GraspEnergy, pose: Pose, config: SynthesisConfig, dense_points: Tensor,
             hand_sdf: HandSDF, contact_idx: Tensor | None = None) -> tuple[Pose, dict[str, Tensor]]:
    """Close the hand onto the surface, then clean up penetration (Adam; joints clamped to their limits).

    Closing (``close_steps``): palm-side points within ``close_radius`` outside the surface are pulled
    onto it (the paper's SPF form: mean distance of the selected points) while the penetration terms
    below hold the hand out. Clean-up (``cleanup_steps``): only the penetration terms, and only for
    grasps whose deepest object point is still more than ``pen_target_mm`` inside the hand: dense
    object points near the hand are pushed ``pen_target_mm / 2`` outside its exact collision geometry
    (:class:`HandSDF`), with ERF and SRF keeping hand points out of the object and fingers apart.

    Returns the refined pose and per grasp ``pen_mm`` (max depth of dense object points inside the
    hand, exact geometry) and ``close_mm`` (mean gap of the palm-side points within ``close_radius``).
    """
    hand = energy.hand
    t = pose.t.detach().clone().requires_grad_(True)
    r6 = pose.r6.detach().clone().requires_grad_(True)
    q = hand.clamp_joints(pose.q.detach()).clone().requires_grad_(True)
    lr = config.refine_lr
    margin = config.pen_target_mm / 2000.0
    target = config.pen_target_mm / 1000.0
    near: dict[str, Tensor] = {}
    tree = cKDTree(dense_points.double().numpy())

    def refresh() -> None:
        """Re-select the object points near the hand (the hand moves during refinement)."""
        with torch.no_grad():
            fk = hand.forward_kinematics(t, rot6d_to_matrix(r6), q)
        index, mask = near_object_points(fk, dense_points, hand_sdf, energy.spheres, reach=0.01, cap=1024, tree=tree)
        near.update(points=dense_points[index], mask=mask, maskf=mask.to(dense_points.dtype))

    def penetration(fk: HandFK) -> tuple[Tensor, Tensor]:
        sd = hand_sdf(fk, near["points"])
        loss = ((margin - sd).clamp_min(0.0) * near["maskf"]).sum(-1)
        deepest = (-sd.detach()).masked_fill(~near["mask"], 0.0).max(-1).values
        return loss, deepest

    for phase, steps in (("close", config.close_steps), ("cleanup", config.cleanup_steps)):
        root = config.refine_root_lr
        opt = torch.optim.Adam([{"params": [t], "lr": lr * root * 0.1}, {"params": [r6], "lr": lr * root * 0.5},
                                {"params": [q], "lr": lr}])  # fmt: skip
        for k in range(steps):
            if k % _REFRESH == 0:
                refresh()
            fk = hand.forward_kinematics(t, rot6d_to_matrix(r6), q)
            pen, deepest = penetration(fk)
            # exact depths of object points in the hand, plus the swept spheres' depths in the object
            # (their gradient leads deep overlaps out along the object's surface normal) and ERF/SRF
            spheres = energy._sphere_penetration(fk)
            hpen = energy._erf(fk)
            spen = srf(hand.keypoints(fk), hand.keypoint_pair_mask, config.spen_margin).per_grasp
            loss = config.w_pen * (pen + spheres) + config.w_hpen * hpen + config.w_spen * spen
            active = torch.ones_like(deepest, dtype=torch.bool)
            if phase == "close":
                if contact_idx is not None:  # the annealed contacts onto the surface
                    d_c = energy.field.sdf(energy.contact_points(fk, contact_idx))
                    loss = loss + config.w_close * d_c.clamp_min(0.0).sum(-1)
                else:  # every palm-side point near the surface onto it (the paper's SPF form)
                    d_in = energy.field.sdf(hand.inner_points(fk))
                    pulled = ((d_in.detach() < config.close_radius) & (d_in.detach() > 0)).to(d_in.dtype)
                    loss = loss + config.w_close * (d_in * pulled).sum(-1) / (pulled.sum(-1) + 1e-5)
            else:
                # only grasps still too deep move; the others keep their pose exactly (no momentum drift)
                active = deepest > target
                if not bool(active.any()):
                    break
            opt.zero_grad()
            (loss * active.to(loss.dtype)).sum().backward()
            keep = [p.detach().clone() for p in (t, r6, q)]
            opt.step()
            with torch.no_grad():
                for p, old in zip((t, r6, q), keep):
                    p[~active] = old[~active]
                q.copy_(hand.clamp_joints(q))
    refresh()
    with torch.no_grad():
        x = _orthonormal(torch.cat([t, r6, hand.clamp_joints(q)], -1).detach())
        p = Pose.unflat(x)
        fk = hand.forward_kinematics(p.t, p.matrix(), p.q)
        _, deepest = penetration(fk)
        d_in = energy.field.sdf(hand.inner_points(fk))
        near = (d_in < config.close_radius).to(d_in.dtype)
        diag = {
            "pen_mm": deepest.clamp_min(0.0) * 1000.0,
            "close_mm": (d_in.abs() * near).sum(-1) / near.sum(-1).clamp_min(1) * 1000.0,
        }
    return p, diag
