"""``dga-engine retarget``: human hand keypoints -> ShadowHand poses (AnyTeleop position retargeting)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from dga_engine.cli.common import JSON_OPTION, emit_json, fail, progress, table


def retarget(
    keypoints: Path = typer.Option(
        ...,
        "--keypoints",
        exists=False,
        dir_okay=False,
        help="A .npy of shape (T, 21, 3): metres, MediaPipe/MANO keypoint order (see below).",
    ),
    out: Path | None = typer.Option(
        None, "--out", dir_okay=False, help="Output Parquet (default: <keypoints>.retarget.parquet)."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Processes; chunks of frames run in parallel."),
    temporal_weight: float = typer.Option(
        4e-3, "--temporal-weight", min=0.0, help="Weight of the squared change from the previous frame (smoothness)."
    ),
    ftol: float = typer.Option(
        1e-7, "--ftol", min=0.0, help="Optimiser stop: smaller follows the keypoints closer, slower."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Retarget a sequence of human hand keypoints to the engine's ShadowHand, frame by frame, and write the poses.

    Keypoints (T, 21, 3), metres: 0 wrist; 1-4 thumb (CMC, MCP, IP, tip); 5-8 index (MCP, PIP, DIP, tip);
    9-12 middle; 13-16 ring; 17-20 little; that is MANO's 16 joints reordered plus its fingertip vertices
    744, 320, 443, 554, 671 (what DexYCB, HOI4D, MediaPipe and most hand trackers give). Their frame is
    kept: the poses place the hand in it.

    Method: AnyTeleop's position retargeting as the dex-retargeting library implements it (SLSQP over a
    free 6-DoF root and the 24 joints within their limits; smooth-L1 between the five fingertips and five
    middle phalanges and keypoints 4, 8, 12, 16, 20, 2, 6, 10, 14, 18, plus a temporal term), on a URDF
    generated from the engine's MJCF; the root is warm-started from the wrist and knuckle keypoints.

    Output Parquet, one row per frame: frame, translation (3, metres) and rotation (4, quaternion wxyz) of
    the forearm (the engine's grasp root: p = R @ p_forearm + t), joints (24 radians, the engine's order:
    `dga-engine hand info`), tip_error_mm (5: ff, mf, rf, lf, th distance to the human fingertip). --json
    prints the fingertip error per finger (mean and 95th percentile, mm) and frames per second.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dga_engine.conventions import JOINT_NAMES, POSE_CONVENTION
    from dga_engine.retarget.engine import RetargetConfig, Retargeter, RetargetError, check_keypoints
    from dga_engine.retarget.keypoints import TIP_NAMES
    from dga_engine.sources.safeload import SourceFileError, load_npy

    try:
        kp = check_keypoints(load_npy(keypoints), str(keypoints))
        config = RetargetConfig(workers=workers, temporal_weight=temporal_weight, ftol_abs=ftol)
    except (SourceFileError, RetargetError, ValueError) as exc:
        raise fail(str(exc))
    out = out or keypoints.with_name(keypoints.name.removesuffix(".npy") + ".retarget.parquet")
    with Retargeter(config) as r, progress("retarget", total=len(kp), enabled=not as_json) as advance:
        res = r.run(kp, advance=advance)
    f32 = pa.float32()

    def fixed(a: np.ndarray, n: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(a, dtype=np.float32).reshape(-1), f32), n)

    tbl = pa.table({"frame": pa.array(np.arange(len(res)), pa.int32()), "translation": fixed(res.translation, 3),
                    "rotation": fixed(res.quaternion_wxyz, 4), "joints": fixed(res.joints, len(JOINT_NAMES)),
                    "tip_error_mm": fixed(res.tip_error_mm, 5)})
    meta = {"pose_convention": {**POSE_CONVENTION, "object_frame": "the frame of the input keypoints"},
            "tip_order": list(TIP_NAMES), "keypoints_file": keypoints.name, "retarget_config": config.__dict__}
    tbl = tbl.replace_schema_metadata({b"dga_engine.retarget": json.dumps(meta).encode()})
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    pq.write_table(tbl, tmp)
    os.replace(tmp, out)
    fps = len(res) / res.wall_seconds if res.wall_seconds > 0 else float("nan")
    summary = {"frames": len(res), "output": str(out), "frames_per_second": round(fps, 1),
               "cpu_ms_per_frame": round(1000 * res.cpu_seconds / max(1, len(res)), 3), "workers": workers,
               "tip_error_mm": res.tip_error_summary()}
    if as_json:
        emit_json(summary)
        return
    errs = summary["tip_error_mm"]
    table(
        "fingertip error after retargeting (mm)",
        ["finger", "mean", "p95"],
        [(k, v["mean"], v["p95"]) for k, v in errs.items()],
    )
    typer.echo(f"{len(res)} frames, {fps:.1f} frames/s ({workers} workers) -> {out}")
