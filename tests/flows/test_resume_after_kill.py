"""A build killed with SIGKILL in the middle of a round resumes to exactly the dataset of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

BUILD = [
    "build",
    "--profile",
    "demo",
    "--n-objects",
    "2",
    "--per-object",
    "6",
    "--rounds",
    "0",
    "--workers",
    "1",
    "--json",
]


def _cli(root: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("DGA_ROOT", None)
    return subprocess.run([sys.executable, "-m", "dga_engine.cli.main", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _grasps(root: Path):
    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import Layout

    table = Dataset(Layout.at(root)).read(columns=["grasp_id", "joints", "translation", "suc6"]).sort_by("grasp_id")
    joints = np.asarray(table.column("joints").to_pylist(), dtype=np.float32)
    return table.column("grasp_id").to_pylist(), joints


def test_sigkill_mid_round_then_resume_matches_uninterrupted_run(tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    done = _cli(reference, *(a for a in BUILD if a != "--json"))  # as a newcomer runs it: what it prints, too
    assert done.returncode == 0, done.stderr[-3000:]
    # Without a terminal, each stage ends with a line (and prints one every 30 s while it runs).
    for stage in (r"ingest: 2 objects", r"seed synthesis: 12 grasps", r"refine \(\w+\) synthesis: \d+ grasps",
                  r"filter synthesis: \d+ grasps"):
        assert re.search(rf"^{stage} in \d+:\d\d$", done.stderr, re.M), (stage, done.stderr[-3000:])
    assert "Suc.1/Suc.6: share of simulated grasps" in done.stdout  # the summary's legend
    assert re.search(r"^round 0 objects: obj-[0-9a-f]+: \w.*; obj-[0-9a-f]+: \w", done.stdout, re.M), done.stdout

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("DGA_ROOT", None)
    proc = subprocess.Popen([sys.executable, "-m", "dga_engine.cli.main", "--root", str(interrupted), *BUILD],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    records = interrupted / "runs" / "stages" / "synthesize"
    try:
        deadline = time.monotonic() + 600
        # Kill as soon as the first object's seed grasps are committed: round 0 is then half done.
        while time.monotonic() < deadline and proc.poll() is None:
            if records.is_dir() and any(p.suffix == ".json" for p in records.iterdir()):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the build finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    status = json.loads(_cli(interrupted, "rounds", "status", "--json").stdout)
    assert status["complete"] is False
    resumed = _cli(interrupted, "rounds", "resume", "--json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(_cli(interrupted, "rounds", "status", "--json").stdout)["complete"] is True

    verify = _cli(interrupted, "shards", "verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stdout

    ids_ref, joints_ref = _grasps(reference)
    ids_res, joints_res = _grasps(interrupted)
    assert len(ids_res) == len(set(ids_res)), "a grasp was written twice"
    assert ids_res == ids_ref, "the resumed dataset lost or gained grasps"
    np.testing.assert_array_equal(joints_res, joints_ref)
    assert json.loads(resumed.stdout)["grasps"] == len(ids_ref) > 0
    assert f"{len(ids_ref)} grasps in the dataset" in done.stdout
