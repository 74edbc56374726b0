"""One build per storage root: a second one says who runs it and since when; ``rounds status`` says running."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dga_engine.cli.main import app
from dga_engine.rounds import BuildRunning, build_lock, running_build


def test_a_second_build_on_a_root_with_a_live_build_refuses_and_status_says_running(layout):
    # A live build elsewhere on this host: a process holding the root's build lock.
    code = (
        "import sys, time; from dga_engine.layout import Layout; from dga_engine.rounds import build_lock; "
        "lock = build_lock(Layout.at(sys.argv[1])); assert lock.try_acquire(); print('held', flush=True); "
        "time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, layout.root], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        res = CliRunner().invoke(app, ["--root", layout.root, "build", "--profile", "demo"])
        assert res.exit_code == 1 and f"a build is already running under {layout.root}: pid {holder.pid}" in res.stderr
        assert "since 20" in res.stderr
        status = json.loads(CliRunner().invoke(app, ["--root", layout.root, "rounds", "status", "--json"]).stdout)
        assert status["state"] == "running" and status["running"]["pid"] == holder.pid
        assert (
            f"running: pid {holder.pid}" in CliRunner().invoke(app, ["--root", layout.root, "rounds", "status"]).stdout
        )
        from flows.build_dga import build_dga

        with pytest.raises(BuildRunning, match=f"pid {holder.pid}"):
            build_dga.fn(root=layout.root)  # the flow itself (deployments do not pass through the CLI)
    finally:
        holder.kill()
        holder.wait()
    # Killed (like kill -9): the root is free at once, and status no longer says running.
    assert running_build(layout) is None
    status = json.loads(CliRunner().invoke(app, ["--root", layout.root, "rounds", "status", "--json"]).stdout)
    assert status["state"] == "none" and status["running"] is None
    lock = build_lock(layout)
    assert lock.try_acquire()
    lock.release()
    assert not os.path.exists(os.path.join(layout.root, "runs", "ledger", "build.lock"))
