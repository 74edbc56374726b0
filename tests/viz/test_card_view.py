"""The dataset card read by `datasets.load_dataset`, and the viewer: its state, and its page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.viz.helpers import pixels


def test_card_configs_load_with_datasets(viz_dataset, tmp_path):
    import datasets

    from dga_engine.viz.card import write_card

    report = write_card(viz_dataset, grid_count=2, tile=96)
    text = open(report.path).read()
    assert "path: data/*.parquet" in text and "path: rejects/*.parquet" in text and "candidates/**/*.parquet" in text
    assert report.non_commercial and "license: cc-by-nc-4.0" in text and "Non-commercial use only" in text
    assert "sha256 of those files" in text and "| unstable | 2 |" in text
    assert {p.rsplit("/", 1)[-1] for p in report.figures} == {"grasps_per_object.png", "acceptance.png", "metrics.png",
                                                             "grasps_grid.png"}
    cache = str(tmp_path / "hf-cache")  # datasets' shared cache could answer from another folder named 'dga'
    grasps = datasets.load_dataset(viz_dataset.path, split="train", cache_dir=cache)
    assert grasps.num_rows == 5 and len(grasps[0]["joints"]) == 24
    assert datasets.load_dataset(viz_dataset.path, "rejects", split="train", cache_dir=cache).num_rows == 2
    assert datasets.load_dataset(viz_dataset.path, "candidates", split="train", cache_dir=cache).num_rows == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _screenshot(cmd: list[str], profile: Path, attempts: int = 3, timeout_s: float = 90.0) -> None:
    """Run headless Chromium until it writes its screenshot. It usually takes 7-30 s here, but on a loaded CI
    machine one run in many never returned (a 180 s timeout, twice): each try gets its own process group, killed
    whole on timeout (renderer and GPU processes included), and the next try starts clean (a new profile)."""
    for _ in range(attempts):
        shutil.rmtree(profile, ignore_errors=True)
        browser = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            _, stderr = browser.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, signal.SIGKILL)
            browser.communicate()
            continue
        assert browser.returncode == 0, stderr.decode(errors="replace")[-3000:]
        return
    pytest.fail(f"headless Chromium wrote no screenshot in {attempts} tries of {timeout_s:g} s")


def test_viewer_state_rejects_and_raw_vs_refined(viz_dataset, layout):
    from dga_engine.viz.viewer import serve

    viewer = serve(layout, port=_free_port())
    try:
        assert viewer.table.num_rows == 5 and "displacement" not in viewer.g_info.content
        assert "| push |" in viewer.g_info.content and "penetration" in viewer.g_info.content
        viewer.g_kind.value = "rejects"
        viewer.g_reason.value = "unstable"
        assert viewer.table.num_rows == 2 and "**unstable**" in viewer.g_info.content
        viewer.g_kind.value = "accepted"
        viewer.g_source.value = "refine-test"
        assert viewer.table.num_rows == 1
        viewer.g_raw.value = True
        assert "raw candidate (grey" in viewer.g_info.content and "/raw/hand" in viewer._hand_nodes
        viewer.g_raw.value = False
        assert "/raw/hand" not in viewer._hand_nodes
        with pytest.raises(ValueError, match="127.0.0.1"):
            serve(layout, host="0.0.0.0")
    finally:
        viewer.stop()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_viewer_page_in_headless_chromium(viz_dataset, layout, tmp_path):
    from PIL import Image

    from dga_engine.viz.viewer import serve

    port = _free_port()
    viewer = serve(layout, port=port)
    shot = tmp_path / "page.png"
    try:
        cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
               "--window-size=900,700", "--virtual-time-budget=20000", f"--screenshot={shot}", f"http://127.0.0.1:{port}/"]
        _screenshot(cmd, tmp_path / "profile")
    finally:
        viewer.stop()
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels(image, "green").sum() > 1500, "the accepted (green) hand is drawn in the page"
    assert pixels(image, "object").sum() > 200, "the object is drawn in the page"
