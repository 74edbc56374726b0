"""Hand-object physics: penetration metrics (evaluation, mm) and the paper's differentiable objectives."""

from dga_engine.physics.fields import ExactField, GridField, ObjectField
from dga_engine.physics.objectives import (
    LossWeights,
    PhysicsLossConfig,
    PhysicsObjectives,
    PhysicsTerms,
    Term,
    erf,
    spf,
    srf,
)
from dga_engine.physics.penetration import (
    HandCollision,
    ObjectCloud,
    hand_collision,
    hand_into_object_mm,
    object_into_hand_mm,
)

__all__ = [
    "ExactField",
    "GridField",
    "ObjectField",
    "LossWeights",
    "PhysicsLossConfig",
    "PhysicsObjectives",
    "PhysicsTerms",
    "Term",
    "erf",
    "spf",
    "srf",
    "HandCollision",
    "ObjectCloud",
    "hand_collision",
    "hand_into_object_mm",
    "object_into_hand_mm",
]
