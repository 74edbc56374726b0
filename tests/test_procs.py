"""Children die with a killed parent: real SIGKILLs of real commands (filter --workers 2, ingest with CoACD)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signals are Linux-only")


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def _alive(pid: int) -> bool:
    info = _ppid_and_state(pid)
    return info is not None and info[1] not in ("Z", "X")  # a zombie has exited (nobody may reap it here)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = _ppid_and_state(int(name))
            if info is not None and info[0] == pid and _alive(int(name)):
                out.append(int(name))
    return out


def _wait_for(predicate, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _cli(root: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dga_engine.cli.main", "--root", str(root), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def _kill_and_check(proc: subprocess.Popen, children: list[int]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    try:
        _wait_for(lambda: not any(_alive(c) for c in children), 15, "the children of the killed command to die")
    finally:
        for c in children:  # never leave them behind, whatever the outcome
            if _alive(c):
                os.kill(c, signal.SIGKILL)


def test_die_with_parent_arms_in_a_child():
    code = "import os; from dga_engine.procs import die_with_parent; print(die_with_parent(os.getppid()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"
    # a child whose parent is not the pid it was given exits at once (the parent died before it armed)
    code = "from dga_engine.procs import die_with_parent; die_with_parent(1); print('still here')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 1 and "still here" not in res.stdout


@pytest.mark.slow
def test_filter_workers_die_when_the_command_is_killed(layout, box_object):
    from dga_engine.dataset.store import Dataset
    from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T, grasp_table

    rows = [(box_object.object_id, np.asarray(CAGE_T) + [0.0, 0.0, 1e-4 * i], CAGE_QUAT, CAGE_Q) for i in range(256)]
    Dataset(layout).write_candidates(grasp_table(rows), "test", "k1")
    proc = _cli(Path(layout.root), "filter", "--source", "test", "--workers", "2")
    try:
        def two_workers():
            found = [c for c in _children(proc.pid) if "spawn_main" in _cmdline(c)]
            return found if len(found) >= 2 else None

        workers = _wait_for(two_workers, 120, "two filter workers")
        time.sleep(4.0)  # let them load the hand and start simulating
        assert proc.poll() is None, "the filter finished before it could be killed: give it more grasps"
        _kill_and_check(proc, _children(proc.pid) + workers)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_coacd_child_dies_and_leaves_no_files_when_ingest_is_killed(tmp_path):
    import trimesh

    mesh = trimesh.creation.torus(major_radius=0.04, minor_radius=0.012, major_sections=48, minor_sections=24)
    mesh.export(tmp_path / "torus.obj")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _cli(tmp_path / "root", "ingest", "local", str(tmp_path / "torus.obj"), "--coacd-threshold", "0.01",
                env={"TMPDIR": str(tmp)})
    try:
        coacd = _wait_for(lambda: [c for c in _children(proc.pid) if "dga_engine.objects.decompose" in _cmdline(c)],
                          120, "the CoACD child")
        time.sleep(0.5)
        assert proc.poll() is None
        _kill_and_check(proc, coacd)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [p.name for p in tmp.iterdir() if p.name.startswith("dga-coacd")] == []
