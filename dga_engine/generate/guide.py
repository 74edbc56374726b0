"""The physics terms on generated poses: SPF, ERF and SRF of the estimated clean grasp.

Used twice: as the physics-aware training loss (eq. 9, weights ``TrainConfig.physics``; the batch
values as the reference computes them) and as the guidance objective of the sampler (eq. 13-15,
weights ``SampleConfig.weights``; per grasp, since every grasp's gradient is normalised on its own).

The objectives and object fields are :mod:`dga_engine.physics` (``PhysicsObjectives``, ``GridField``,
``ExactField``); this module only turns a normalised folded pose into a hand pose in the object frame
(denormalise, t = R t') and points each grasp at its own object. Batches may mix objects: the grid
field stacks one grid per bank entry and each grasp passes its entry's index.
"""

from __future__ import annotations

import torch

from dga_engine.generate.config import PhysicsWeights
from dga_engine.generate.normalise import PoseNormaliser, unfold
from dga_engine.hand import HandModel, default_hand
from dga_engine.physics.fields import ExactField, GridField, ObjectField
from dga_engine.physics.objectives import LossWeights, PhysicsObjectives, PhysicsTerms, erf, spf, srf

Tensor = torch.Tensor

FIELDS = ("grid", "exact")


def grid_fields(bank, resolution: int = 64) -> GridField:
    """One signed-distance grid per bank entry (object at its scale), stacked; from the dense points.

    The grid samples the reference's nearest-point + normal-sign distance (``GridField.from_points``),
    so guidance and training see the same surface as the ERF definition, at grid speed.
    """
    grids = []
    for object_id, scale in bank.keys:
        a = bank.assets[object_id]
        grids.append(GridField.from_points(a.dense_points * scale, a.dense_normals, resolution=resolution))
    return GridField.stack(grids)


class PoseObjectives:
    """SPF/ERF/SRF of normalised folded poses x0n (B,27) whose hands have orientations R (B,3,3) and
    whose objects are bank entries ``obj`` (B,).

    field: "grid" (stacked SDF grids, O(B N): guidance and training default) or "exact" (nearest object
    point per hand point, O(B N No): the reference definition, slow).
    """

    def __init__(
        self,
        bank,
        normaliser: PoseNormaliser,
        weights: PhysicsWeights,
        hand: HandModel | None = None,
        device: torch.device | str = "cpu",
        field: str = "grid",
        grid_resolution: int = 64,
    ) -> None:
        if field not in FIELDS:
            raise ValueError(f"unknown object field {field!r}: use one of {FIELDS}")
        self.bank = bank
        self.normaliser = normaliser
        self.weights = LossWeights(spf=float(weights.spf), erf=float(weights.erf), srf=float(weights.srf))
        self.objectives = PhysicsObjectives(hand if hand is not None else default_hand())
        self.device = torch.device(device)
        self.field_kind = field
        self._grid = grid_fields(bank, grid_resolution) if field == "grid" else None
        self._exact: dict[int, ExactField] = {}

    def hand_pose(self, x0n: Tensor, R: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised folded pose -> (t (B,3), R (B,3,3), q (B,24)) in the object frame, float32."""
        x = self.normaliser.denormalise(x0n.float())
        R = R.float()
        return unfold(x[:, :3], R), R, x[:, 3:]

    def terms(self, x0n: Tensor, R: Tensor, obj: Tensor) -> PhysicsTerms:
        """SPF, ERF and SRF (``dga_engine.physics.objectives``) of the grasps, per grasp and per batch.

        ERF's gradient reaches only each grasp's deepest surface point (it is a max), so the deepest
        point is found without autograd over all 1216 points and the objective is then evaluated on that
        point alone: the same values and gradients, at a fraction of the cost of differentiating the
        field at every point.
        """
        t, R, q = self.hand_pose(x0n, R)
        hand = self.objectives.hand_for(t)
        fk = hand.forward_kinematics(t, R, q)
        surface, inner, keys = hand.surface_points(fk), hand.inner_points(fk), hand.keypoints(fk)
        c = self.objectives.config
        if self._grid is not None:
            field, index = self._grid, obj
        else:
            field, index = self._exact_field(obj), None
        with torch.no_grad():
            deepest = field.sdf(surface, index=index).argmin(-1)
        surface = surface[torch.arange(len(surface), device=surface.device), deepest].unsqueeze(1)
        return PhysicsTerms(
            spf=spf(inner, field, c.spf_threshold, c.spf_eta, index=index),
            erf=erf(surface, field, index=index),
            srf=srf(keys, hand.keypoint_pair_mask, c.srf_threshold),
        )

    def _exact_field(self, obj: Tensor) -> ObjectField:
        ids = obj.tolist()
        uniq = sorted(set(ids))
        for k in uniq:
            if k not in self._exact:
                object_id, scale = self.bank.keys[k]
                a = self.bank.assets[object_id]
                self._exact[k] = (a.points * scale, a.normals)
        if len(uniq) == 1:
            return ExactField(*self._exact[uniq[0]])
        pts = torch.stack([torch.as_tensor(self._exact[k][0]) for k in ids])
        nrm = torch.stack([torch.as_tensor(self._exact[k][1]) for k in ids])
        return ExactField(pts, nrm)

    def loss(self, x0n: Tensor, R: Tensor, obj: Tensor) -> Tensor:
        """The weighted batch loss of eq. 9 (scalar), as the reference computes it."""
        return self.terms(x0n, R, obj).total(self.weights)

    def per_grasp(self, x0n: Tensor, R: Tensor, obj: Tensor) -> Tensor:
        """(B,) weighted per-grasp loss: the guidance objective of eq. 13."""
        return self.terms(x0n, R, obj).per_grasp_total(self.weights)
