"""Seed grasp synthesis: DexGraspNet-style optimisation of ShadowHand grasps for any stored object.

``synthesize_object`` makes candidates for one object; ``run_synthesis`` is the stage behind
``dga-engine synthesize`` (candidates into the dataset, completion records); ``read_verdicts`` reads what the
physics filter (a stage of its own, run after it) decided about them.
"""

from dga_engine.synthesize.config import DEFAULT, FAST, GENERATOR_VERSION, PRESETS, SOURCE, SynthesisConfig
from dga_engine.synthesize.stage import (
    ObjectReport,
    SynthesisReport,
    read_verdicts,
    run_synthesis,
    synthesize_object,
    unit_key,
)

__all__ = [
    "DEFAULT",
    "FAST",
    "GENERATOR_VERSION",
    "PRESETS",
    "SOURCE",
    "SynthesisConfig",
    "ObjectReport",
    "SynthesisReport",
    "read_verdicts",
    "run_synthesis",
    "synthesize_object",
    "unit_key",
]
