"""A writer killed at any step of a commit leaves a dataset that verifies and reads consistently.

Each case rewrites a shard in a forked child process and kills it (``os._exit``: no cleanup, no
``finally``, no atexit, like a SIGKILL) at one step of the commit protocol, then inspects the dataset
from this process. Forking keeps the already imported modules, so each case costs milliseconds.
"""

from __future__ import annotations

import os
import traceback

import pytest

from dga_engine.dataset.store import Dataset, StoreConfig

KILLED = 17


def _run_killed(layout, table, step: str, max_rows: int) -> int:
    """Rewrite shard "k" with ``table`` in a child that dies at ``step``; return the child's exit code."""
    pid = os.fork()
    if pid:
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    try:  # the child: never returns
        real_replace, real_fsync, real_remove = os.replace, os.fsync, os.remove

        def replace(src, dst):
            dst = str(dst)
            if step == "before_manifest" and "/manifests/" in dst:
                os._exit(KILLED)
            real_replace(src, dst)
            if step == "after_part_rename" and "/data/" in dst:
                os._exit(KILLED)

        def fsync(fd):
            if step == "during_temp_write":
                os._exit(KILLED)  # the temporary file is written but not yet renamed
            real_fsync(fd)

        def remove(path):
            if step == "before_cleanup" and "/data/" in str(path) and not os.path.basename(str(path)).startswith("."):
                os._exit(KILLED)
            real_remove(path)

        os.replace, os.fsync, os.remove = replace, fsync, remove
        Dataset(layout, config=StoreConfig(max_rows_per_shard=max_rows)).write_shard(table, "k")
        os._exit(0)
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
        os._exit(18)


def _ids(table):
    return sorted(table["grasp_id"].to_pylist())


@pytest.mark.parametrize("step", ["during_temp_write", "after_part_rename", "before_manifest", "before_cleanup"])
@pytest.mark.parametrize("max_rows", [1000, 10], ids=["one-part", "split"])
def test_crash_at_each_step_leaves_a_consistent_dataset(layout, grasps, step, max_rows):
    old = grasps({"a": 6, "b": 6}, seed=1)
    new = grasps({"c": 8, "d": 7}, seed=2, round_=1)
    ds = Dataset(layout, config=StoreConfig(max_rows_per_shard=max_rows))
    ds.write_shard(old, "k")
    ds.write_shard(grasps({"z": 3}, seed=3), "other")
    before = _ids(Dataset(layout).read())
    assert _run_killed(layout, new, step, max_rows) == KILLED  # it really died at that step

    fresh = Dataset(layout)
    report = fresh.verify()
    assert report.ok, report.bad
    committed = step == "before_cleanup"  # the manifest rename is the commit point
    if committed:
        assert _ids(fresh.read()) == sorted(_ids(new) + _ids(grasps({"z": 3}, seed=3)))
        assert fresh.read_object("a").num_rows == 0 and fresh.read_object("c").num_rows == 8
    else:
        assert _ids(fresh.read()) == before  # the previous content, exactly
        assert fresh.read_object("c").num_rows == 0 and fresh.read_object("a").num_rows == 6
    assert fresh.info().rows == fresh.read().num_rows  # the summary never disagrees with the manifests

    # Every leftover is a warning naming what it is; nothing half-written is visible.
    problems = {b["shard"]: b["problem"] for b in report.bad}
    if step == "during_temp_write":
        assert any("temporary file" in p for p in problems.values())
    if step in ("after_part_rename", "before_manifest", "before_cleanup"):
        assert any("not named by any manifest" in p for p in problems.values())

    # repair removes the leftovers and rebuilds the summary; the content does not change.
    content = _ids(fresh.read())
    fresh.repair(min_age_s=0)
    again = Dataset(layout).verify()
    assert again.ok and again.bad == []
    assert _ids(Dataset(layout).read()) == content
    # And the next write goes through normally.
    Dataset(layout).write_shard(new, "k")
    assert _ids(Dataset(layout).read_object("d")) == sorted(
        new.filter(new["object_id"].to_pandas().eq("d").to_list())["grasp_id"].to_pylist()
    )


def test_repair_keeps_young_unreferenced_files(layout, grasps):
    """A file no manifest names may belong to a write in progress: repair leaves it until it is old."""
    ds = Dataset(layout)
    ds.write_shard(grasps(["a"]), "k")
    stray = ds.p("data/k.inflight000.parquet")
    with open(stray, "wb") as fh:
        fh.write(b"PAR1 partial")
    done = ds.repair()  # default grace: an hour
    assert done["removed"] == [] and done["kept_young"] == ["data/k.inflight000.parquet"] and os.path.exists(stray)
    assert ds.verify().ok  # a warning only
    old = os.path.getmtime(stray) - 7200
    os.utime(stray, (old, old))
    assert ds.repair()["removed"] == ["data/k.inflight000.parquet"] and not os.path.exists(stray)
