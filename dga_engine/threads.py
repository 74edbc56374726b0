"""Temporarily set torch's intra-op thread count (restored afterwards).

The engine's batches are often small (a few dozen poses): extra threads then mostly wait on each other,
and on a shared 2-core machine a step was measured ~5x slower with 2 threads than with 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (0: unchanged), restoring the caller's setting."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
