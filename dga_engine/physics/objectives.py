"""The paper's physical-constraint objectives (Sec. 3.2), batched and differentiable in torch.

- **SPF**, surface pulling force (eq. 2): palm-side points (``HandModel.inner_points``) closer to the
  object than ``spf_threshold`` are pulled onto it: ``sum_{i in S} d_i / (|S| + eta)``.
- **ERF**, external-penetration repulsion force (eq. 3-4): the deepest hand surface point
  (``HandModel.surface_points``) inside the object, per grasp, averaged over the batch.
- **SRF**, self-penetration repulsion force (eq. 5): keypoint pairs closer than ``srf_threshold`` repel:
  ``sum_{i,j} max(0, thr - d_ij) / B`` over the pairs ``HandModel.keypoint_pair_mask`` allows.

Every function returns a :class:`Term`: the value per grasp (B,) and the batch value the losses use.
The object comes in as an :class:`~dga_engine.physics.fields.ObjectField` (exact nearest point or SDF
grid), so the synthesiser and the diffusion generator pick speed or exactness without touching the
objectives. Everything follows the inputs' device and dtype.

Choices relative to the public reference code (``utils/handmodel.py`` of DexGrasp-Anything):

- SPF: the batch value pools all grasps' selected points, ``sum_b sum_{S_b} d / (sum_b |S_b| + eta)``
  with ``eta = 1e-5``, as the reference does; ``per_grasp`` normalises each grasp by its own ``|S_b|``.
  The threshold applies to the distance (0.02 m), as in the reference, not to the squared distance.
  The reference hard-codes 140 palm-side points; ours are the hand model's 170 (palm included).
- ERF: ``max_i relu(depth_i)`` per grasp, 0 when nothing penetrates (the reference's ``sign * dist``).
- SRF: the reference sums over all ordered pairs of its 19 keypoints except coincident ones; ours
  sums over the ordered pairs of our 20 keypoints that the pair mask allows (pairs on the same or on
  directly jointed links are excluded, they cannot collide except through joint limits). Each
  unordered pair therefore counts twice, as in the reference.
- Weights: training uses all three at 1, guidance SRF 1, SPF 1, ERF 0.3 (reference defaults).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from dga_engine.hand.model import HandFK, HandModel
from dga_engine.physics.fields import ObjectField

Tensor = torch.Tensor

__all__ = [
    "Term",
    "LossWeights",
    "PhysicsLossConfig",
    "PhysicsTerms",
    "PhysicsObjectives",
    "spf",
    "erf",
    "srf",
]


class Term(NamedTuple):
    """One objective: ``per_grasp`` (B,) and ``value``, the scalar the batch loss uses."""

    per_grasp: Tensor
    value: Tensor


@dataclass(frozen=True)
class LossWeights:
    """Weights alpha_i of the three objectives in a combined loss (eq. 9 / eq. 13)."""

    spf: float = 1.0  # surface pulling force
    erf: float = 1.0  # external-penetration repulsion force
    srf: float = 1.0  # self-penetration repulsion force


@dataclass(frozen=True)
class PhysicsLossConfig:
    """Thresholds and weights of the physical constraints; defaults are the reference's."""

    spf_threshold: float = 0.02  # m; inner points farther than this from the object are not pulled (eq. 2)
    spf_eta: float = 1e-5  # numerical-stability constant eta of eq. 2
    srf_threshold: float = 0.02  # m; keypoint pairs closer than this repel each other (eq. 5)
    train_weights: LossWeights = field(default_factory=LossWeights)  # physics-aware training (eq. 9): all 1
    # sampling (eq. 13)
    guidance_weights: LossWeights = field(default_factory=lambda: LossWeights(spf=1.0, erf=0.3, srf=1.0))

    def __post_init__(self) -> None:
        if self.spf_threshold <= 0 or self.srf_threshold <= 0:
            raise ValueError("spf_threshold and srf_threshold must be positive (metres)")
        if self.spf_eta <= 0:
            raise ValueError("spf_eta must be positive")

    def replace(self, **changes) -> PhysicsLossConfig:
        return dataclasses.replace(self, **changes)


def _check(points: Tensor, name: str) -> None:
    if not isinstance(points, Tensor) or points.ndim != 3 or points.shape[-1] != 3:
        shape = tuple(points.shape) if hasattr(points, "shape") else type(points).__name__
        raise ValueError(f"{name} must be a torch tensor (B, N, 3), got {shape}")


def spf(
    inner_points: Tensor,
    field: ObjectField,
    threshold: float = 0.02,
    eta: float = 1e-5,
    *,
    scale: Tensor | float | None = None,
    index: Tensor | None = None,
) -> Term:
    """Surface pulling force (eq. 2) of palm-side points (B, Ni, 3) toward the object.

    ``per_grasp[b] = sum_{i in S_b} d_i / (|S_b| + eta)``, ``value = sum_b sum_{S_b} d / (sum_b |S_b| + eta)``
    (the reference pools the batch). ``d`` is the unsigned distance to the object, ``S_b`` the points
    with ``d < threshold``. ``scale``/``index`` are passed to ``field.sdf``.
    """
    _check(inner_points, "inner_points")
    dist = field.sdf(inner_points, scale=scale, index=index).abs()
    near = (dist < threshold).to(dist.dtype)  # the selection is a step: no gradient through it
    pulled = (dist * near).sum(-1)
    count = near.sum(-1)
    return Term(per_grasp=pulled / (count + eta), value=pulled.sum() / (count.sum() + eta))


def erf(
    surface_points: Tensor,
    field: ObjectField,
    *,
    scale: Tensor | float | None = None,
    index: Tensor | None = None,
) -> Term:
    """External-penetration repulsion force (eq. 3-4): deepest hand point inside the object.

    surface_points: (B, Ns, 3). ``per_grasp[b] = max_i relu(-sdf_i)`` (metres, 0 when nothing is
    inside); ``value`` is its batch mean. The gradient acts on the deepest point of each grasp.
    """
    _check(surface_points, "surface_points")
    depth = torch.relu(-field.sdf(surface_points, scale=scale, index=index))
    per = depth.max(-1).values
    return Term(per_grasp=per, value=per.mean())


def srf(keypoints: Tensor, pair_mask: Tensor | None = None, threshold: float = 0.02) -> Term:
    """Self-penetration repulsion force (eq. 5) over keypoints (B, Nk, 3).

    ``per_grasp[b] = sum_{(i,j) in mask} relu(threshold - d_ij)`` over ordered pairs (each unordered
    pair twice, as the reference); ``value = sum_b per_grasp[b] / B``. pair_mask: (Nk, Nk) bool, which
    pairs count (``HandModel.keypoint_pair_mask``); None means every pair i != j.
    """
    _check(keypoints, "keypoints")
    nk = keypoints.shape[1]
    if pair_mask is None:
        pair_mask = ~torch.eye(nk, dtype=torch.bool, device=keypoints.device)
    if pair_mask.shape != (nk, nk):
        raise ValueError(f"pair_mask must be ({nk}, {nk}) for {nk} keypoints, got {tuple(pair_mask.shape)}")
    # Only the allowed pairs are differenced: the diagonal's zero distance would give NaN gradients.
    i, j = pair_mask.to(keypoints.device).nonzero(as_tuple=True)
    d = torch.linalg.vector_norm(keypoints[:, i] - keypoints[:, j], dim=-1)  # (B, P)
    per = torch.relu(threshold - d).sum(-1)
    return Term(per_grasp=per, value=per.sum() / keypoints.shape[0])


@dataclass(frozen=True)
class PhysicsTerms:
    """The three objectives for one batch (each a :class:`Term`; metres-based values)."""

    spf: Term
    erf: Term
    srf: Term

    def total(self, weights: LossWeights) -> Tensor:
        """Weighted sum of the batch values: the physics part of eq. 9 (training) or eq. 13 (guidance)."""
        return weights.spf * self.spf.value + weights.erf * self.erf.value + weights.srf * self.srf.value

    def per_grasp_total(self, weights: LossWeights) -> Tensor:
        """(B,) weighted sum of the per-grasp values (for ranking or per-sample guidance)."""
        return weights.spf * self.spf.per_grasp + weights.erf * self.erf.per_grasp + weights.srf * self.srf.per_grasp

    def as_floats(self) -> dict[str, float]:
        """Batch values as plain floats, for logs."""
        return {name: float(getattr(self, name).value.detach()) for name in ("spf", "erf", "srf")}


class PhysicsObjectives:
    """SPF, ERF and SRF of hand poses against an object field, through the hand's FK.

    hand: the :class:`HandModel` (its point sets and keypoint pair mask are used). Poses on another
    device or in another dtype than the hand's are evaluated with a copy of the hand made once for that
    device/dtype, so one instance serves CPU float64 checks and CUDA float32 sampling alike.
    """

    def __init__(self, hand: HandModel, config: PhysicsLossConfig | None = None) -> None:
        self.hand = hand
        self.config = config or PhysicsLossConfig()
        self._hands: dict[tuple, HandModel] = {(hand.local_pos.device, hand.local_pos.dtype): hand}

    def hand_for(self, like: Tensor) -> HandModel:
        """The hand model on ``like``'s device and (floating) dtype."""
        dtype = like.dtype if like.is_floating_point() else self.hand.local_pos.dtype
        key = (like.device, dtype)
        if key not in self._hands:
            import copy

            self._hands[key] = copy.deepcopy(self.hand).to(device=like.device, dtype=dtype)
        return self._hands[key]

    def __call__(
        self,
        translation: Tensor,
        rotation: Tensor,
        joints: Tensor,
        field: ObjectField,
        *,
        scale: Tensor | float | None = None,
        index: Tensor | None = None,
    ) -> PhysicsTerms:
        """Objectives for poses translation (B, 3), rotation (B, 3, 3), joints (B, 24) (grasp convention:
        hand root pose in the object frame, metres, radians). ``scale``: object scale (float or (B,));
        ``index``: (B,) which object of a multi-object field each grasp sees."""
        hand = self.hand_for(translation)
        fk = hand.forward_kinematics(translation, rotation, joints)
        return self.from_fk(fk, field, hand=hand, scale=scale, index=index)

    def from_fk(
        self,
        fk: HandFK,
        field: ObjectField,
        *,
        hand: HandModel | None = None,
        scale: Tensor | float | None = None,
        index: Tensor | None = None,
    ) -> PhysicsTerms:
        """Objectives from an existing FK result (saves a second FK pass when the caller has one)."""
        hand = hand or self.hand_for(fk.pos)
        c = self.config
        return PhysicsTerms(
            spf=spf(hand.inner_points(fk), field, c.spf_threshold, c.spf_eta, scale=scale, index=index),
            erf=erf(hand.surface_points(fk), field, scale=scale, index=index),
            srf=srf(hand.keypoints(fk), hand.keypoint_pair_mask, c.srf_threshold),
        )

    def training_loss(self, translation: Tensor, rotation: Tensor, joints: Tensor, field: ObjectField, **kw) -> Tensor:
        """Weighted physics loss for physics-aware training (eq. 9, weights ``train_weights``)."""
        return self(translation, rotation, joints, field, **kw).total(self.config.train_weights)

    def guidance_loss(self, translation: Tensor, rotation: Tensor, joints: Tensor, field: ObjectField, **kw) -> Tensor:
        """Weighted physics loss for physics-guided sampling (eq. 13, weights ``guidance_weights``)."""
        return self(translation, rotation, joints, field, **kw).total(self.config.guidance_weights)
