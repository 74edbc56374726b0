"""Pixel masks for checking rendered grasp pictures."""

from __future__ import annotations

import numpy as np


def pixels(image: np.ndarray, kind: str) -> np.ndarray:
    """Mask of pixels of the object's warm neutral colour ('object') or of a green-tinted hand ('green')."""
    im = image.astype(np.int32)
    r, g, b = im[..., 0], im[..., 1], im[..., 2]
    if kind == "object":
        return (r - b > 25) & (g - b > 10) & (r > 80)
    if kind == "green":
        return (g - r > 40) & (g > 90)
    raise ValueError(kind)
