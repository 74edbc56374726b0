"""A full disk under the storage root: a one-line error, nothing quarantined, nothing lost, and a rerun resumes.

The root lives on a real, tiny tmpfs mounted in a private mount namespace (``unshare -Urm``: no root
needed where user namespaces are allowed), filled up with a filler file before the command runs.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trimesh

SCRIPT = r"""
set -u
mount -t tmpfs -o size=4m tmpfs "$ROOT"
cp -a "$SEED"/. "$ROOT"/
free=$(df -k --output=avail "$ROOT" | tail -1)
leave=$LEAVE_KB
if [ "$free" -gt "$leave" ]; then dd if=/dev/zero of="$ROOT/filler" bs=1k count=$((free - leave)) 2>/dev/null; fi
python -m dga_engine.cli.main --root "$ROOT" $CMD > "$OUT/first.out" 2> "$OUT/first.err"; echo $? > "$OUT/first.rc"
find "$ROOT/objects/_quarantine" -name '*.json' 2>/dev/null | wc -l > "$OUT/quarantined"
rm -f "$ROOT/filler"
python -m dga_engine.cli.main --root "$ROOT" $CMD --json > "$OUT/second.out" 2> "$OUT/second.err"
echo $? > "$OUT/second.rc"
"""


def _namespaces_work() -> bool:
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-Urm", "true"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _namespaces_work(), reason="needs Linux mount namespaces (unshare -Urm) for a small tmpfs"),
]


def _run_full(tmp_path, seed, cmd: str, leave_kb: int) -> dict:
    root, out = tmp_path / "mnt", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    env = {"ROOT": str(root), "SEED": str(seed), "OUT": str(out), "CMD": cmd, "LEAVE_KB": str(leave_kb),
           "PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path), "HOME": str(tmp_path)}
    subprocess.run(
        ["unshare", "-Urm", "bash", "-c", f'export PATH="{sys.executable.rsplit("/", 1)[0]}:$PATH"; {SCRIPT}'],
        env=env,
        check=True,
        timeout=300,
    )
    return {p.name: p.read_text() for p in out.iterdir()}


def test_filter_on_a_full_disk_says_so_in_one_line_and_resumes(tmp_path):
    from dga_engine.dataset.store import Dataset
    from dga_engine.layout import Layout
    from dga_engine.objects.store import ObjectStore, write_simple_object
    from tests.helpers import CAGE_Q, CAGE_QUAT, CAGE_T, FAR_T, IDENTITY, grasp_table

    seed = tmp_path / "seed"
    lay = Layout.at(seed)
    box = write_simple_object(ObjectStore(lay), trimesh.creation.box(extents=[0.05, 0.05, 0.10]), "box")
    Dataset(lay).write_candidates(grasp_table([(box.object_id, CAGE_T, CAGE_QUAT, CAGE_Q),
                                               (box.object_id, FAR_T, IDENTITY, [0.0] * 24)]), "test", "k1")
    res = _run_full(tmp_path, seed, "filter --source test", leave_kb=0)
    assert res["first.rc"].strip() == "1"
    err = res["first.err"]
    assert "Traceback" not in err and "no space left on the device" in err and "rerun" in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
    assert res["second.rc"].strip() == "0", res["second.err"]
    second = json.loads(res["second.out"])
    assert second["total"] == 2 and second["accepted"] + second["rejected"] == 2


def test_ingest_on_a_full_disk_quarantines_nothing_and_fails(tmp_path):
    from dga_engine.layout import Layout

    seed = tmp_path / "seed"
    Layout.at(seed)
    (seed / "objects").mkdir(parents=True)
    mesh = tmp_path / "box.obj"
    trimesh.creation.box(extents=[0.05, 0.06, 0.07]).export(mesh)
    # 64 kB left: the object's point clouds (~300 kB) do not fit, a small quarantine record would
    res = _run_full(tmp_path, seed, f"ingest local {mesh}", leave_kb=64)
    assert res["first.rc"].strip() == "1", (res["first.out"], res["first.err"])
    assert "no space left on the device" in res["first.err"] and "Traceback" not in res["first.err"]
    assert "engine bug" not in res["first.out"] + res["first.err"]
    assert res["quarantined"].strip() == "0"
    assert res["second.rc"].strip() == "0", res["second.err"]
    second = json.loads(res["second.out"])
    assert second["ingested"] == 1 and second["quarantined"] == 0
    assert np.isfinite(second["timings"]["wall"])
