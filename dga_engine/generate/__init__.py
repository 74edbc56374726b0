"""The physics-aware diffusion generator (paper Sec. 3.3-3.5): model, DDPM, training, guided sampling.

Public API:

- configuration: :class:`GeneratorConfig` (model, diffusion, train, sample), :func:`tiny_config`,
  :func:`paper_config`;
- training: :func:`dga_engine.generate.train.train` (the ``dga-engine train`` stage), :class:`Trainer`,
  :class:`TrainingSet`;
- checkpoints: :func:`load_checkpoint` (``models/round-KKK``);
- sampling: :class:`GraspSampler`; the ``dga-engine generate`` stage :func:`generate` (in-process or Ray).

Import-light: submodules load torch on first use of what they define.
"""

from dga_engine.generate.config import (
    DiffusionConfig,
    GeneratorConfig,
    ModelConfig,
    PhysicsWeights,
    SampleConfig,
    TrainConfig,
    paper_config,
    preset,
    tiny_config,
)


def __getattr__(name: str):
    lazy = {
        "Trainer": ("dga_engine.generate.train", "Trainer"),
        "TrainResult": ("dga_engine.generate.train", "TrainResult"),
        "TrainingSet": ("dga_engine.generate.data", "TrainingSet"),
        "ObjectBank": ("dga_engine.generate.data", "ObjectBank"),
        "GraspSampler": ("dga_engine.generate.sample", "GraspSampler"),
        "generate": ("dga_engine.generate.stage", "generate"),
        "generate_round": ("dga_engine.generate.stage", "generate_round"),
        "train_round": ("dga_engine.generate.train", "train_round"),
        "GenerateReport": ("dga_engine.generate.stage", "GenerateReport"),
        "load_checkpoint": ("dga_engine.generate.checkpoint", "load"),
        "GraspDiffusionNet": ("dga_engine.generate.model", "GraspDiffusionNet"),
        "PoseNormaliser": ("dga_engine.generate.normalise", "PoseNormaliser"),
    }
    if name in lazy:
        import importlib

        module, attr = lazy[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'dga_engine.generate' has no attribute {name!r}")


__all__ = [
    "DiffusionConfig",
    "GeneratorConfig",
    "ModelConfig",
    "PhysicsWeights",
    "SampleConfig",
    "TrainConfig",
    "paper_config",
    "preset",
    "tiny_config",
    "Trainer",
    "TrainResult",
    "TrainingSet",
    "ObjectBank",
    "GraspSampler",
    "generate",
    "generate_round",
    "train_round",
    "GenerateReport",
    "load_checkpoint",
    "GraspDiffusionNet",
    "PoseNormaliser",
]
