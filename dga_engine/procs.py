"""Child processes that die with the command that started them.

The stages' worker pools (filter, synthesis, ingest) and CoACD's child process must not outlive their
parent: after ``kill -9`` of the parent no Python code runs to stop them, and each worker holds a hand
model, scenes and meshes (hundreds of MB). On Linux every such child therefore asks the kernel to send it
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), first thing after it starts.

The kernel ties the signal to the parent *thread* that created the child. The pools here spawn workers
from the thread that submits work (or the pool's own manager thread), both alive for as long as the pool
is used, so this holds; a pool must not be fed from a thread that ends before the pool does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int | None = None) -> bool:
    """Have the kernel SIGKILL this process when its parent exits (Linux); True when that is armed.

    ``parent_pid`` is the parent's pid as the parent saw it when it started this process. If the parent
    died before the request was made (this process has been re-parented already), exit at once: nobody
    is left to use the result. Elsewhere than Linux nothing is armed and False is returned.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc symbol (unusual libc): the pool's own shutdown still applies
        return False
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)
    return armed


def pool_worker_init(parent_pid: int) -> None:
    """``ProcessPoolExecutor(initializer=pool_worker_init, initargs=(os.getpid(),))``: die with the parent."""
    die_with_parent(parent_pid)


def single_thread_worker_init(parent_pid: int | None = None) -> None:
    """:func:`pool_worker_init` for workers that run torch and MuJoCo (filter, refine): die with the parent, then
    one thread per worker - the pool is the parallelism, and results must not depend on thread counts.

    It lives here, not beside the work it prepares, so that a new worker imports nothing heavy before the
    kernel is asked to kill it with its parent: torch is imported only once that is armed."""
    die_with_parent(parent_pid)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # numpy's BLAS, if this worker has not loaded it yet
    import torch  # seconds on a loaded machine; after arming, so a killed command leaves no worker behind
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")  # and if it has (see dga_engine/threads.py)
