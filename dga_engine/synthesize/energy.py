"""The grasp energy minimised by seed synthesis (DexGraspNet's formulation, written from its idea).

For B grasps with root pose (t, R) and joints q, and per grasp ``n_contact`` contact candidates chosen
among the hand's palm-side points (:meth:`HandModel.inner_points`), all in the object frame, with the
object's signed distance ``d`` (``dga_engine.physics.fields.ObjectField``, negative inside):

- ``fc``  force closure: contacts x_i with unit inward surface normals n_i (the normalised gradient of
  d at the contact), ``|| G c ||_2`` where ``G = [[I, I, ...], [[x_1]_x, [x_2]_x, ...]]`` (6 x 3n,
  torques about the object centre) and ``c = [n_1; n_2; ...]``: the net wrench of equal unit pushes
  along the normals. Zero when such pushes balance, the differentiable force-closure estimate of
  DexGraspNet (Liu et al. 2021). Its gradient moves the contacts (the torque part); the normals are
  treated as constants of the step.
- ``dis`` contact distance: sum over contacts of |d| (metres).
- ``pen`` external penetration, object into hand: the hand's capsules and boxes as a union of spheres
  (:class:`~dga_engine.synthesize.hand_sdf.HandSpheres`); sum over spheres of ``max(0, r - d(c))``
  (metres): how deep the object reaches into each sphere.
- ``hpen`` external penetration, hand into object: the paper's ERF, the deepest hand surface point
  inside the object (metres; ``dga_engine.physics.objectives.erf``).
- ``spen`` self-penetration: the paper's SRF over non-adjacent keypoint pairs
  (``dga_engine.physics.objectives.srf``, threshold ``spen_margin``).
- ``joints`` joint limits: sum of radians outside [lower, upper].
- ``spf`` (optional, weight 0 by default) the paper's SPF: mean distance of the palm-side points within
  ``spf_threshold`` of the surface (``dga_engine.physics.objectives.spf``); it draws the whole palm side
  onto the object (enveloping grasps).

``total = w_fc fc + w_dis dis + w_pen pen + w_hpen hpen + w_spen spen + w_joints joints + w_spf spf``, per grasp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dga_engine.hand import HandModel
from dga_engine.hand.model import HandFK
from dga_engine.hand.rotations import rot6d_to_matrix
from dga_engine.physics.fields import ObjectField
from dga_engine.physics.objectives import erf, spf, srf
from dga_engine.synthesize.config import SynthesisConfig
from dga_engine.synthesize.hand_sdf import HandSpheres

Tensor = torch.Tensor
TERMS = ("fc", "dis", "pen", "hpen", "spen", "joints", "spf")


@dataclass
class Pose:
    """Optimisation variables of B grasps: translation (B,3) m, rotation 6D (B,6), joints (B,24) rad."""

    t: Tensor
    r6: Tensor
    q: Tensor

    def flat(self) -> Tensor:
        return torch.cat([self.t, self.r6, self.q], dim=-1)

    @staticmethod
    def unflat(x: Tensor) -> Pose:
        return Pose(x[:, :3], x[:, 3:9], x[:, 9:])

    def matrix(self) -> Tensor:
        return rot6d_to_matrix(self.r6)


def skew(v: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices: skew(a) @ b = a x b."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], -1).reshape(v.shape[:-1] + (3, 3))


def force_closure(points: Tensor, normals: Tensor, centre: Tensor) -> Tensor:
    """||G c|| for contacts (B, n, 3) with unit normals (B, n, 3); torques about ``centre`` (3,), or (B, 3) one
    per grasp -> (B,)."""
    b, n, _ = points.shape
    eye = torch.eye(3, dtype=points.dtype, device=points.device).expand(b, n, 3, 3)
    # (B, n, 6, 3): contact i's block of G
    g = torch.cat([eye, skew(points - (centre.unsqueeze(1) if centre.ndim == 2 else centre))], dim=-2)
    wrench = (g @ normals.unsqueeze(-1)).squeeze(-1).sum(1)  # (B, 6)
    return wrench.norm(dim=-1)


def field_normals(field: ObjectField, points: Tensor) -> Tensor:
    """Unit outward normals (B, N, 3): the normalised gradient of the signed distance (no graph kept)."""
    with torch.enable_grad():
        p = points.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(field.sdf(p).sum(), p)
    return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-9)


class GraspEnergy:
    """Evaluates the energy terms for one object (field already at the object's scale) and a batch of poses.

    centre: (3,) the point torques are taken about (the object's bounding-box centre), or (B, 3) one per grasp
    (a batch mixing objects, with a :class:`~dga_engine.physics.fields.PerGraspField`).
    """

    def __init__(self, hand: HandModel, spheres: HandSpheres, field: ObjectField, centre: Tensor,
                 config: SynthesisConfig) -> None:
        self.hand = hand
        self.spheres = spheres
        self.field = field
        self.config = config
        self.centre = torch.as_tensor(centre, dtype=hand.lower.dtype)
        self.n_candidates = int(hand.inner_link.numel())
        # Contact slots draw from pools of palm-side points: with thumb_contact, slot 0 is always on the
        # thumb and the others on the fingers or palm (an opposition prior); else every slot draws from all.
        thumb_links = [hand.link_names.index(n) for n in ("thproximal", "thmiddle", "thdistal")]
        on_thumb = torch.isin(hand.inner_link, torch.as_tensor(thumb_links))
        everything = torch.arange(self.n_candidates)
        if config.thumb_contact and config.n_contact > 1:
            self.pools = [everything[on_thumb]] + [everything[~on_thumb]] * (config.n_contact - 1)
        else:
            self.pools = [everything] * config.n_contact
        self.weights = {name: float(getattr(config, f"w_{name}")) for name in TERMS}

    def draw_contacts(self, b: int, gen: torch.Generator) -> Tensor:
        """(b, n_contact) random contact candidates, each slot from its pool."""
        cols = [pool[torch.randint(len(pool), (b,), generator=gen)] for pool in self.pools]
        return torch.stack(cols, dim=1)

    def nearest_contacts(self, pose: Pose) -> Tensor:
        """(B, n_contact) for poses that already hold the object: in each slot, the pool's palm-side point
        nearest the surface, distinct per grasp (a warm start's contacts instead of random ones)."""
        with torch.no_grad():
            fk = self.hand.forward_kinematics(pose.t, pose.matrix(), pose.q)
            d = self.field.sdf(self.hand.inner_points(fk)).abs()  # (B, Ni)
        cols, taken = [], torch.zeros_like(d, dtype=torch.bool)
        for pool in self.pools:
            score = torch.full_like(d, float("inf"))
            score[:, pool] = d[:, pool]
            best = score.masked_fill(taken, float("inf")).argmin(-1)
            taken[torch.arange(len(best)), best] = True
            cols.append(best)
        return torch.stack(cols, dim=1)

    def redraw_one(self, idx: Tensor, rows: Tensor, gen: torch.Generator) -> Tensor:
        """A copy of ``idx`` where each grasp in ``rows`` has one random slot re-drawn from that slot's pool."""
        out = idx.clone()
        which = torch.randint(len(self.pools), (len(rows),), generator=gen)
        fresh = self.draw_contacts(len(rows), gen)
        out[rows, which] = fresh[torch.arange(len(rows)), which]
        return out

    @staticmethod
    def _at(fk: HandFK, link: Tensor, local: Tensor) -> Tensor:
        """(B, k, 3) positions of per-grasp points given by link indices (B, k) and link-frame coordinates (B, k, 3)."""
        b = torch.arange(link.shape[0]).unsqueeze(1)
        return (fk.rot[b, link] @ local.unsqueeze(-1)).squeeze(-1) + fk.pos[b, link]

    def contact_points(self, fk: HandFK, contact_idx: Tensor) -> Tensor:
        """(B, n, 3) positions of each grasp's chosen contact candidates."""
        return self._at(fk, self.hand.inner_link[contact_idx], self.hand.inner_local[contact_idx])

    def _sphere_penetration(self, fk: HandFK) -> Tensor:
        """(B,) sum of sphere depths. Only penetrating spheres carry value and gradient, so every sphere
        is tested without autograd and only those are recomputed with it (same value and gradient)."""
        with torch.no_grad():
            depth = self.spheres.radius - self.field.sdf(self.spheres.centres(fk))
        k = max(1, int((depth > 0).sum(-1).max()))
        top = depth.topk(k, dim=-1).indices  # (B, k)
        c = self._at(fk, self.spheres.link[top], self.spheres.local[top])
        return (self.spheres.radius[top] - self.field.sdf(c)).clamp_min(0.0).sum(-1)

    def _erf(self, fk: HandFK) -> Tensor:
        """(B,) the paper's ERF (deepest hand surface point inside the object). Its value and gradient
        come from the deepest point only, so that point is found without autograd first."""
        with torch.no_grad():
            deepest = self.field.sdf(self.hand.surface_points(fk)).argmin(-1, keepdim=True)  # (B, 1)
        sel = self._at(fk, self.hand.surface_link[deepest], self.hand.surface_local[deepest])
        return erf(sel, self.field).per_grasp

    def terms(self, pose: Pose, contact_idx: Tensor) -> tuple[dict[str, Tensor], HandFK]:
        """Per-grasp values (B,) of every term, unweighted, and the forward kinematics used."""
        fk = self.hand.forward_kinematics(pose.t, pose.matrix(), pose.q)
        out: dict[str, Tensor] = {}
        cp = self.contact_points(fk, contact_idx)
        out["dis"] = self.field.sdf(cp).abs().sum(-1)
        out["fc"] = force_closure(cp, -field_normals(self.field, cp), self.centre)
        out["pen"] = self._sphere_penetration(fk)
        out["hpen"] = self._erf(fk)
        out["spen"] = srf(self.hand.keypoints(fk), self.hand.keypoint_pair_mask, self.config.spen_margin).per_grasp
        if self.weights["spf"]:
            out["spf"] = spf(self.hand.inner_points(fk), self.field, self.config.spf_threshold).per_grasp
        else:
            out["spf"] = torch.zeros_like(out["dis"])
        q = pose.q
        out["joints"] = ((q - self.hand.upper).clamp_min(0.0) + (self.hand.lower - q).clamp_min(0.0)).sum(-1)
        return out, fk

    def total(self, terms: dict[str, Tensor]) -> Tensor:
        return sum(self.weights[k] * terms[k] for k in TERMS)

    def __call__(self, pose: Pose, contact_idx: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        terms, _ = self.terms(pose, contact_idx)
        return self.total(terms), terms
