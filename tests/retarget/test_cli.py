"""``dga-engine retarget --keypoints``: keypoints in, a Parquet of poses out, errors and speed as JSON."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from typer.testing import CliRunner

from dga_engine.cli.main import app

from .helpers import hand64, needs_dex_retargeting, robot_keypoints, smooth_robot_motion

pytestmark = needs_dex_retargeting


def test_retarget_command(tmp_path):
    hand = hand64()
    t, r, q = smooth_robot_motion(hand, n=48, seed=2)
    kp, _ = robot_keypoints(hand, t, r, q)
    path = tmp_path / "clip.npy"
    np.save(path, kp.astype(np.float32))
    res = CliRunner().invoke(app, ["retarget", "--keypoints", str(path), "--workers", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["frames"] == 48 and out["frames_per_second"] > 0
    assert set(out["tip_error_mm"]) == {"ff", "mf", "rf", "lf", "th", "all"}
    assert out["tip_error_mm"]["all"]["mean"] <= 1.5 and out["tip_error_mm"]["all"]["p95"] <= 3.0
    table = pq.read_table(out["output"])
    assert out["output"].endswith("clip.retarget.parquet") and table.num_rows == 48
    assert table.column_names == ["frame", "translation", "rotation", "joints", "tip_error_mm"]
    joints = np.asarray(table.column("joints").to_pylist())
    assert joints.shape == (48, 24) and np.abs(joints - q).max() < 0.6  # near the pose that made the keypoints
    meta = json.loads(table.schema.metadata[b"dga_engine.retarget"])
    assert meta["pose_convention"]["rotation_encoding"].startswith("quaternion wxyz") and meta["tip_order"][0] == "ff"


def test_retarget_command_refuses_bad_input(tmp_path):
    runner = CliRunner()
    np.save(tmp_path / "wrong.npy", np.zeros((4, 16, 3)))
    res = runner.invoke(app, ["retarget", "--keypoints", str(tmp_path / "wrong.npy")])
    assert res.exit_code == 1 and "(T, 21, 3)" in res.output
    res = runner.invoke(app, ["retarget", "--keypoints", str(tmp_path / "missing.npy")])
    assert res.exit_code == 1 and "missing.npy" in res.output
    arr = np.empty(1, dtype=object)
    arr[0] = {"x": 1}
    np.save(tmp_path / "objects.npy", arr, allow_pickle=True)
    res = runner.invoke(app, ["retarget", "--keypoints", str(tmp_path / "objects.npy")])
    assert res.exit_code == 1 and "(T, 21, 3)" in res.output
