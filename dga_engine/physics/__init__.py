"""Hand-object physics: penetration metrics (evaluation, mm) and the paper's differentiable objectives."""

from dga_engine.physics.penetration import (
    HandCollision,
    ObjectCloud,
    hand_collision,
    hand_into_object_mm,
    object_into_hand_mm,
)

__all__ = ["HandCollision", "ObjectCloud", "hand_collision", "hand_into_object_mm", "object_into_hand_mm"]
