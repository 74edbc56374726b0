"""The values of the CLI's choice options.

Spelled out here so that ``dga-engine --help`` starts without numpy, trimesh or MuJoCo; ``tests/test_cli_newcomer.py``
checks each tuple against the constant of the module that defines it. A value outside a choice ends the command
with one line naming the valid values (``dga_engine.cli.common.StorageErrorsGroup``).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

PROFILES = ("demo", "full")  # dga_engine.build.PROFILES
BACKENDS = ("mujoco", "mujoco-warp", "isaacgym")  # dga_engine.simulate.backends.BACKENDS
PROTOCOLS = ("dga-engine", "dga-reference")  # dga_engine.simulate.config.PRESETS
# dga_engine.sources.curate.SOURCES
CURATE_SOURCES = ("dexgraspnet", "unidexgrasp", "multidex", "realdex", "dga", "grab")
EXPORT_FORMATS = ("dexgraspnet", "dga", "bodex", "mjcf-keyframes")  # dga_engine.export.formats.FORMATS
GENERATOR_PRESETS = ("tiny", "paper")  # dga_engine.generate.config.PRESETS
GRASP_KINDS = ("accepted", "rejects", "candidates")  # dga_engine.viz.select.KINDS
SYNTHESIS_PRESETS = ("fast", "default")  # dga_engine.synthesize.config.PRESETS
REFINE_PRESETS = ("repair", "polish")  # dga_engine.refine.config.PRESETS


def choice(name: str, values: Iterable[str]) -> type[StrEnum]:
    """The type of an option that takes one of ``values``: its members are the values themselves (``str``s)."""
    return StrEnum(name, {v: v for v in values})


Profile = choice("Profile", PROFILES)
Backend = choice("Backend", BACKENDS)
Protocol = choice("Protocol", PROTOCOLS)
CurateSource = choice("CurateSource", CURATE_SOURCES)
ExportFormat = choice("ExportFormat", EXPORT_FORMATS)
GeneratorPreset = choice("GeneratorPreset", GENERATOR_PRESETS)
GraspKind = choice("GraspKind", GRASP_KINDS)
SynthesisPreset = choice("SynthesisPreset", SYNTHESIS_PRESETS)
RefinePreset = choice("RefinePreset", REFINE_PRESETS)
