"""Tiny synthesis settings: the real code paths with a handful of grasps and steps."""

from __future__ import annotations

import pytest

from dga_engine.synthesize import SynthesisConfig


@pytest.fixture
def tiny_config() -> SynthesisConfig:
    return SynthesisConfig(per_object=4, batch_size=4, n_iter=12, cleanup_steps=4, close_steps=2, field_resolution=32,
                           restart_at=(0.5,))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small batches on shared cores run fastest on one thread (the pipeline does the same)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
