"""A build's generation round grasps its expansion objects: new objects get candidates, the seed objects do not
get duplicates, and the ledger's counts are the shards' counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BUILD = ["build", "--profile", "demo", "--n-objects", "1", "--n-expand", "1", "--per-object", "6", "--rounds", "1",
         "--workers", "1", "--json"]


def test_round_one_generates_for_the_expansion_objects_only(tmp_path: Path):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("DGA_ROOT", None)
    run = subprocess.run([sys.executable, "-m", "dga_engine.cli.main", "--root", str(tmp_path), *BUILD],
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout)

    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import Layout
    from dga_engine.rounds import Ledger

    layout = Layout.at(tmp_path)
    ledger = {r.round: r for r in Ledger(layout).rounds()}
    seed, expansion = ledger[0].objects, ledger[1].objects
    assert len(seed) == 1 and len(expansion) == 1 and not set(seed) & set(expansion)

    ds = Dataset(layout)
    generated = ds.candidates("generator")
    assert set(generated.column("object_id").to_pylist()) == set(expansion) and generated.num_rows == 6
    ids = ds.read(columns=["grasp_id"]).column("grasp_id").to_pylist()
    assert len(ids) == len(set(ids)), "a grasp was written twice"
    for k in (0, 1):  # the ledger counts what the shards and rejects hold
        accepted = ds.read(rounds=[k]).num_rows
        rejected = sum(1 for r in ds.rejects().column("round").to_pylist() if r == k)
        assert (ledger[k].accepted, ledger[k].rejected) == (accepted, rejected)
        assert ledger[k].stages == {s: "done" for s in ledger[k].stages} and "refine" in ledger[k].stages
        assert ledger[k].cost and all(v >= 0 for v in ledger[k].cost.values())
    split = ledger[1].by_object
    assert split["seen"]["candidates"] == 0 and split["unseen"]["candidates"] == 6
    assert ledger[1].refine.get("refined", 0) + ledger[1].refine.get("failed", 0) == 6  # polish touches every grasp
    assert [r["round"] for r in summary["rounds"]] == [0, 1]
