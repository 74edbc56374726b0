"""The refine stage: bounded repairs of candidate grasps before the physics filter (see :mod:`.stage`).

``run_refine(layout, source, RefineConfig.preset("repair" | "polish"))`` writes every candidate of the
source, refined or as it was, to ``candidates/<source>+refined/``; ``run_filter(..., refined=True)``
then judges those. :class:`ObjectRefiner` refines the grasps of one object in memory.
"""

from dga_engine.refine.config import POLISH, PRESET_NAMES, REFINE_VERSION, REPAIR, RefineConfig
from dga_engine.refine.optimize import ObjectRefiner, RefineOutcome
from dga_engine.refine.stage import RefineSummary, refine_table, refined_source, run_refine

__all__ = [
    "RefineConfig", "REPAIR", "POLISH", "PRESET_NAMES", "REFINE_VERSION", "ObjectRefiner", "RefineOutcome",
    "RefineSummary", "refine_table", "refined_source", "run_refine",
]
