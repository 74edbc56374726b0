"""Pictures of grasps: MuJoCo's offscreen renderer, headless, checked by pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.viz.helpers import pixels


def test_one_grasp_shows_object_and_hand_in_frame(viz_dataset, layout):
    from dga_engine.viz.render import View, object_loader, render_grid
    from dga_engine.viz.select import load_grasps

    table = load_grasps(viz_dataset, "accepted", source="synthesis", limit=1)
    image = render_grid(table, object_loader(layout), View(width=200, height=200))
    assert image.shape == (200, 200, 3)
    obj = pixels(image, "object")
    assert obj.sum() > 800, "the object should fill a good part of the tile"
    ys, xs = np.nonzero(obj)
    assert 40 < xs.mean() < 160 and 40 < ys.mean() < 160, "the object should be near the centre"
    background = (image.astype(int).sum(-1) > 600)  # the light sky
    hand = ~obj & ~background
    assert hand.sum() > 2000, "the grey hand should be in view"


def test_grid_coloured_by_verdict(viz_dataset, layout):
    import pyarrow as pa

    from dga_engine.viz.render import View, object_loader, render_grid
    from dga_engine.viz.select import load_grasps

    acc = load_grasps(viz_dataset, "accepted", source="synthesis", limit=2)
    rej = load_grasps(viz_dataset, "rejects", reason="unstable")
    assert set(rej.column("verdict").to_pylist()) == {"unstable"}
    table = pa.concat_tables([acc, rej.select(acc.column_names)])
    image = render_grid(table, object_loader(layout), View(width=128, height=128), columns=4, colour_by_verdict=True)
    assert image.shape[1] == 4 * 128 and image.shape[0] > 128  # one row of tiles plus the legend
    tiles = [image[:128, i * 128:(i + 1) * 128] for i in range(4)]
    green = [pixels(t, "green").sum() for t in tiles]
    assert green[0] > 300 and green[1] > 300, "accepted hands are tinted green"
    assert green[2] < 50 and green[3] < 50, "unstable hands are orange, not green"


def test_render_cli_json(viz_dataset, layout, tmp_path):
    from typer.testing import CliRunner

    from dga_engine.cli.main import app

    out = tmp_path / "g.png"
    res = CliRunner().invoke(app, ["--root", layout.root, "render", "--out", str(out), "-n", "2", "--size", "96",
                                   "--colour-by-verdict", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert out.stat().st_size > 1000 and len(info["grasps"]) == 2
    res = CliRunner().invoke(
        app, ["--root", layout.root, "render", "--out", str(out), "--kind", "rejects", "--reason", "nope"]
    )
    assert res.exit_code == 1 and "unknown reject reason" in res.output


def test_backend_errors_name_the_fix(monkeypatch):
    from dga_engine.viz import gl

    monkeypatch.setenv("MUJOCO_GL", "wgl")
    with pytest.raises(gl.RenderBackendError, match="osmesa"):
        gl.backend()
