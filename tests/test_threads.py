"""compute_threads: one torch and one BLAS thread inside, the caller's settings restored after."""

from __future__ import annotations

import numpy as np  # noqa: F401 - loads numpy's BLAS, whose pool the context limits
import torch
from threadpoolctl import threadpool_info

from dga_engine.threads import compute_threads


def _blas_threads() -> set[int]:
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_compute_threads_limits_torch_and_blas_and_restores_them():
    original = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before = _blas_threads()
        with compute_threads(1):
            assert torch.get_num_threads() == 1
            assert _blas_threads() == {1}
        assert torch.get_num_threads() == 2 and _blas_threads() == before
        with compute_threads(0):  # 0: leave both as they are
            assert torch.get_num_threads() == 2 and _blas_threads() == before
    finally:
        torch.set_num_threads(original)
