"""Convex decomposition with CoACD, isolated in a child process with a time limit.

CoACD is native code: after hundreds of meshes in one process it has been seen to crash, and a hard
mesh can run for minutes. Each call therefore runs ``python -m dga_engine.objects.decompose``, sends it
the mesh as an ``.npz`` (vertices, faces) on its stdin and reads the parts back as another ``.npz`` from
its stdout (no pickles, no temporary files); a crash or a timeout is reported as
:class:`DecompositionError` and never takes the caller down. The child dies with its parent
(:mod:`dga_engine.procs`), so a killed ingest leaves neither a running CoACD nor files behind.

The input must already be watertight (see :mod:`dga_engine.objects.mesh`), so CoACD runs with its own
preprocessing off: open meshes are repaired once by us instead of by CoACD's slow 'auto' remeshing.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np


class DecompositionError(RuntimeError):
    """CoACD crashed, timed out or returned nothing usable; ``reason`` says what to do."""

    def __init__(self, reason: str, kind: str = "crash") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # crash | timeout | empty


@dataclass(frozen=True)
class CoacdParams:
    threshold: float = 0.05  # concavity threshold (CoACD's default and the peers' choice); lower = more parts
    max_parts: int = 16  # cap on convex hulls (CoACD merges down to it); -1 = no cap
    preprocess: str = "off"  # "off" for watertight input (ours); "on"/"auto" make CoACD remesh (slow)
    resolution: int = 2000  # CoACD's sampling resolution for the concavity metric
    mcts_iterations: int = 150  # CoACD's search iterations per cut
    seed: int = 0  # CoACD's random seed, fixed for reproducible parts


def run_coacd(
    vertices: np.ndarray, faces: np.ndarray, params: CoacdParams, timeout_s: float
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Decompose one watertight mesh; returns ``([(vertices (n,3) float64, faces (m,3) int64), ...], seconds)``.

    Raises :class:`DecompositionError` on a crash, a timeout (``timeout_s``) or an empty result.
    """
    t0 = time.perf_counter()
    payload = io.BytesIO()
    np.savez(payload, vertices=np.asarray(vertices, np.float64), faces=np.asarray(faces, np.int64))
    cmd = [sys.executable, "-m", "dga_engine.objects.decompose", str(os.getpid()), json.dumps(params.__dict__)]
    # own session so a timeout kills CoACD and anything it started, and nothing else
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(payload.getvalue(), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise DecompositionError(
            f"CoACD did not finish within {timeout_s:g} s (threshold {params.threshold}, max {params.max_parts} "
            f"parts): "
            "the mesh is too complex for this limit; raise the CoACD time limit (--coacd-timeout), a higher "
            "--coacd-threshold, or simplify the mesh",
            kind="timeout",
        ) from None
    if proc.returncode != 0 or not out:
        tail = (err or b"").decode("utf-8", "replace").strip().splitlines()[-3:]
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
        raise DecompositionError(
            f"CoACD crashed ({how}{': ' + ' | '.join(tail) if tail else ''}): the mesh likely has defects CoACD "
            "cannot handle; check it in a mesh viewer, re-export it as a closed mesh, or retry with another "
            "--coacd-threshold",
            kind="crash",
        )
    with np.load(io.BytesIO(out), allow_pickle=False) as z:
        n = int(z["n"])
        parts = [(z[f"v{i}"].astype(np.float64), z[f"f{i}"].astype(np.int64)) for i in range(n)]
    parts = [(v, f) for v, f in parts if len(v) >= 4 and len(f) >= 4]
    if not parts:
        raise DecompositionError(
            "CoACD returned no convex part with volume: the mesh is degenerate (flat or tiny); check its scale and "
            "thickness",
            kind="empty",
        )
    return parts, time.perf_counter() - t0


def _child(parent_pid: int, params_json: str) -> None:
    from dga_engine.procs import die_with_parent

    die_with_parent(parent_pid)
    result_out = os.fdopen(os.dup(1), "wb")  # the parts go here; CoACD's own prints must not land in them
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    import coacd

    params = json.loads(params_json)
    coacd.set_log_level("error")
    with np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False) as z:
        mesh = coacd.Mesh(z["vertices"].astype(np.float64), z["faces"].astype(np.int32))
    result = coacd.run_coacd(
        mesh,
        threshold=float(params["threshold"]),
        max_convex_hull=int(params["max_parts"]),
        preprocess_mode=str(params["preprocess"]),
        resolution=int(params["resolution"]),
        mcts_iterations=int(params["mcts_iterations"]),
        seed=int(params["seed"]),
    )
    arrays: dict[str, np.ndarray] = {"n": np.asarray(len(result))}
    for i, (v, f) in enumerate(result):
        arrays[f"v{i}"] = np.asarray(v, np.float64)
        arrays[f"f{i}"] = np.asarray(f, np.int64)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    result_out.write(buf.getvalue())
    result_out.flush()


# the child process: python -m dga_engine.objects.decompose PARENT_PID PARAMS_JSON < mesh.npz > parts.npz
if __name__ == "__main__":
    _child(int(sys.argv[1]), sys.argv[2])
