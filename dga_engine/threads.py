"""Temporarily set the thread counts of torch's intra-op pool and of the BLAS that numpy and scipy call.

The engine's batches are often small (a few dozen poses): extra threads then mostly wait on each other.
On a shared 2-core machine a torch step was measured ~5x slower with 2 threads than with 1, and the repair
of 246 grasps took 31 ms of CPU per grasp with OpenBLAS on 2 threads against 20 ms on 1 (its small matrix
products spin a second thread that does little but burn CPU).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def compute_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and ``n`` BLAS threads (0: both unchanged), restoring
    the caller's settings."""
    import torch
    from threadpoolctl import threadpool_limits

    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(before)
