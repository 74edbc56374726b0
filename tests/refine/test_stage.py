"""The refine stage over a storage root, and ``dga-engine filter`` composing curate -> refine -> filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from dga_engine.dataset.schema import pose_table
from dga_engine.dataset.store import Dataset
from dga_engine.refine import RefineConfig, refined_source, run_refine
from dga_engine.simulate import run_filter
from tests.refine.nearmiss import near_misses

KINDS = ["valid", "palm2", "fingers2", "deep"]


def _candidates(asset, kinds=KINDS, source="nearmiss", prefix=""):
    t, quat, q = near_misses(asset, kinds)
    return pose_table(asset.object_id, t, quat, q, source=source, source_record_id=[prefix + k for k in kinds])


def _verdicts(layout, source="nearmiss") -> dict[str, str | None]:
    """source_record_id -> reason (None = accepted) over the dataset's shards and rejects."""
    ds = Dataset(layout)
    out = {r: None for r in ds.read(sources=[source]).column("source_record_id").to_pylist()}
    rej = ds.rejects()
    for r, why in zip(rej.column("source_record_id").to_pylist(), rej.column("reason").to_pylist()):
        out[r] = why
    return out


def test_refine_then_filter_keeps_the_near_misses_and_says_what_it_did(layout, box_asset):
    ds = Dataset(layout)
    ds.write_candidates(_candidates(box_asset), "nearmiss", "k0")
    summary = run_refine(layout, "nearmiss")
    assert summary.statuses == {"unchanged": 1, "refined": 2, "failed": 1} and summary.units_done == 1
    refined = ds.candidates(refined_source("nearmiss"))
    raw = ds.candidates("nearmiss")
    by_rec = {r: i for i, r in enumerate(refined.column("source_record_id").to_pylist())}
    ids, raw_ids = refined.column("grasp_id").to_pylist(), raw.column("grasp_id").to_pylist()
    assert ids[by_rec["valid"]] == raw_ids[0] and ids[by_rec["deep"]] == raw_ids[3]  # unchanged / failed keep their ids
    assert refined.column("refined_from").to_pylist() == [None, raw_ids[1], raw_ids[2], None]
    assert set(refined.column("refine_preset").to_pylist()) == {RefineConfig.preset("repair").tag}

    f = run_filter(layout, "nearmiss", refined=True)
    assert (f.accepted, f.rejected, f.reasons) == (3, 1, {"penetration_object_hand": 1})
    assert _verdicts(layout) == {"valid": None, "palm2": None, "fingers2": None, "deep": "penetration_object_hand"}
    acc = ds.read(sources=["nearmiss"])
    assert sorted(s for s in acc.column("refine_status").to_pylist()) == ["refined", "refined", "unchanged"]

    # a rerun does nothing; the raw verdicts come back with --no-refine, in place (no duplicates)
    assert run_refine(layout, "nearmiss").units_skipped == 1
    assert run_filter(layout, "nearmiss", refined=True).units_skipped == 1
    run_filter(layout, "nearmiss")
    assert _verdicts(layout) == {
        "valid": None,
        "palm2": "penetration_object_hand",
        "fingers2": "penetration_object_hand",
        "deep": "penetration_object_hand",
    }
    assert ds.read().num_rows == 1 and ds.rejects().num_rows == 3


def test_filter_refused_when_candidates_changed_since_refine(layout, box_asset):
    ds = Dataset(layout)
    ds.write_candidates(_candidates(box_asset, ["valid"]), "nearmiss", "k0")
    run_refine(layout, "nearmiss")
    ds.write_candidates(_candidates(box_asset, ["valid", "palm2"]), "nearmiss", "k0")  # re-curated since
    try:
        run_filter(layout, "nearmiss", refined=True)
    except FileNotFoundError as exc:
        assert "dga-engine refine --source nearmiss" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("filtering stale refined candidates must be refused")


def test_filter_command_curates_refines_and_filters_a_release_folder(layout, box_asset, tmp_path):
    """`dga-engine filter --source dexgraspnet --path RAW`: the user's command for a source dataset as it ships."""
    from dga_engine.cli.main import app
    from dga_engine.export.formats import DexGraspNetFormat
    from dga_engine.export.stage import _rows

    raw = tmp_path / "DexGraspNet"
    fmt = DexGraspNetFormat(raw)
    fmt.add("core-box-0123456789abcdef0123456789abcdef", box_asset, _rows(_candidates(box_asset)))
    fmt.finish({})
    run = CliRunner().invoke(
        app, ["--root", layout.root, "filter", "--source", "dexgraspnet", "--path", str(raw), "--json"]
    )
    assert run.exit_code == 0, run.output
    out = json.loads(run.stdout)
    assert out["curate"]["grasps_written"] == 4
    assert out["refine"]["statuses"] == {"unchanged": 1, "refined": 2, "failed": 1}
    assert (out["accepted"], out["reasons"]) == (3, {"penetration_object_hand": 1})

    again = CliRunner().invoke(
        app, ["--root", layout.root, "filter", "--source", "dexgraspnet", "--no-refine", "--json"]
    )
    assert again.exit_code == 0, again.output
    raw_out = json.loads(again.stdout)
    assert (raw_out["accepted"], raw_out["reasons"]) == (1, {"penetration_object_hand": 3}) and raw_out[
        "refine"
    ] is None
    acc = Dataset(layout).read(sources=["dexgraspnet"])
    assert acc.num_rows == 1 and pc.all(pc.is_null(acc.column("refined_from"))).as_py()


@pytest.mark.slow
def test_sigkill_mid_refine_then_resume_matches_an_uninterrupted_run(tmp_path):
    """A `dga-engine refine` killed between candidate files loses nothing and duplicates nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import trimesh

    from dga_engine.layout import Layout
    from dga_engine.objects.store import ObjectStore, write_simple_object

    def root_with_candidates(name):
        layout = Layout.at(tmp_path / name)
        store = ObjectStore(layout)
        asset = store.load(
            write_simple_object(store, trimesh.creation.box(extents=[0.05, 0.05, 0.10]), "box").object_id
        )
        for k in range(6):
            Dataset(layout).write_candidates(
                _candidates(asset, ["palm2", "fingers2", "valid"], prefix=f"k{k}:"), "nearmiss", f"k{k}"
            )
        return layout

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("DGA_ROOT", None)
    cmd = [sys.executable, "-m", "dga_engine.cli.main", "--root"]
    reference, interrupted = root_with_candidates("reference"), root_with_candidates("interrupted")
    done = subprocess.run(cmd + [reference.root, "refine", "--source", "nearmiss", "--json"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]

    proc = subprocess.Popen(cmd + [interrupted.root, "refine", "--source", "nearmiss"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    records = Path(interrupted.root) / "runs" / "stages" / "refine"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if records.is_dir() and any(p.suffix == ".json" for p in records.iterdir()):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "refine finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert len(list(records.glob("*.json"))) < 6
    resumed = subprocess.run(cmd + [interrupted.root, "refine", "--source", "nearmiss", "--json"], capture_output=True,
                             text=True, env=env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads(resumed.stdout)["units_skipped"] >= 1

    def refined(layout):
        t = Dataset(layout).candidates(refined_source("nearmiss")).sort_by("grasp_id")
        return t.column("grasp_id").to_pylist(), np.asarray(t.column("joints").to_pylist())

    (ids_a, q_a), (ids_b, q_b) = refined(reference), refined(interrupted)
    assert ids_a == ids_b and len(ids_a) == 18 and len(set(ids_a)) == 18
    np.testing.assert_array_equal(q_a, q_b)
