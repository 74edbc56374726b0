"""The generator's default torch device: the one place that chooses between CUDA and the CPU."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when a GPU is visible, else the CPU (training, sampling and the Ray workers all use this)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
